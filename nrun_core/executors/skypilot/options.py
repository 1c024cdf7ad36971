"""`hydra/launcher=nrun_skypilot` options (a dataclass only: loaded by Hydra when selected)."""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from nrun_core.conf import NrunConf


@dataclass
class SkypilotConf(NrunConf):
    """Each point runs as one SkyPilot job: `sky exec` on one cluster shared by the sweep (the
    default), or a cluster of its own per point, or a managed job. The code goes as the task's
    workdir; results, `.hydra/` files and logs come back through SkyPilot's job logs.

    Resources: ``nodes`` is SkyPilot's num_nodes, ``gpus_per_node`` the count of ``gpus``.
    """

    # Where: "aws", "aws/us-east-1", "gcp/us-central1/us-central1-a", "k8s", "slurm/CLUSTER"...;
    # null = $NRUN_SKYPILOT_INFRA (`nrun sandbox skypilot env` sets it), else SkyPilot's optimizer.
    infra: Optional[str] = None
    # Older spelling of infra, combined into it when infra is null.
    cloud: Optional[str] = None
    region: Optional[str] = None
    zone: Optional[str] = None
    # GPU type ("A100", "H100-80GB") or "TYPE:COUNT"; the count defaults to gpus_per_node.
    gpus: Optional[str] = None
    # SkyPilot's own spelling ("A100:8", or {A100: 8}); wins over gpus.
    accelerators: Any = None
    cpus: Optional[str] = None            # "8", "8+"
    memory: Optional[str] = None          # GB: "32", "32+"
    instance_type: Optional[str] = None
    use_spot: bool = False
    disk_size: Optional[int] = None       # GB
    image_id: Optional[str] = None
    # Run every point in this container image (SkyPilot's image_id "docker:IMAGE").
    container_image: Optional[str] = None
    # Cloud labels / tags on the instances.
    labels: Dict[str, str] = field(default_factory=dict)
    # A cluster to use (created if absent, kept after the sweep unless teardown=down); null = a
    # cluster named after the sweep, created for it and taken down after it (teardown=auto).
    cluster_name: Optional[str] = None
    # shared: every point is a `sky exec` job on one cluster (SkyPilot queues them by resources);
    # per_point: every point launches a cluster of its own, taken down (or stopped, teardown=stop)
    # as soon as that point ends, unless teardown=keep.
    clusters: str = "shared"
    # After the sweep: auto (down the clusters nrun created, keep a named existing one), down,
    # stop, keep.
    teardown: str = "auto"
    # SkyPilot's autostop on nrun's clusters: stop (or down, with autodown) after this many idle
    # minutes; null = none.
    idle_minutes_to_autostop: Optional[int] = None
    autodown: bool = False
    retry_until_up: bool = False
    # Shell lines run once when a cluster is launched (pip install ...); shell by design.
    setup: List[str] = field(default_factory=list)
    # Extra files on the cluster: {REMOTE_PATH: LOCAL_PATH or bucket URL}.
    file_mounts: Dict[str, str] = field(default_factory=dict)
    # Run each point as a SkyPilot managed job (sky.jobs.launch: its own cluster, recovered on
    # spot preemption) instead of on a cluster of nrun's.
    managed: bool = False
    # Python on the cluster (hydra-core and the task's packages); null = $NRUN_SKYPILOT_PYTHON,
    # else "python3".
    python: Optional[str] = None
    # Where nrun keeps code and job dirs on the cluster (relative = the cluster user's home).
    remote_dir: str = ".nrun/sky"
    # A command run on this machine before nrun launches a cluster, "{cluster}" replaced by its
    # name (the sandbox places files SkyPilot would download); null = $NRUN_SKYPILOT_PREPARE.
    prepare_cluster: Optional[str] = None
    # A point's files (`.hydra/`, outputs, result) come back through its log, base64: cap in MB.
    max_files_mb: float = 64.0
