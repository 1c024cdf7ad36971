"""`hydra/launcher=nrun_lepton` options (registered by nrun_core.registry; plain dataclasses,
imported at Hydra start: nothing of leptonai here)."""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from nrun_core.executors.cloudjob.options import CloudJobConf


@dataclass
class LeptonConf(CloudJobConf):
    """`hydra/launcher=nrun_lepton`: each point as one DGX Cloud Lepton job."""

    # Workspace id and API URL; null = $LEPTON_WORKSPACE_ID / $LEPTON_WORKSPACE_URL (the SDK's
    # default URL for the id when both are unset).
    workspace_id: Optional[str] = None
    workspace_url: Optional[str] = None
    # Name of the environment variable holding the workspace token (never a setting: a value
    # here would be stored with the sweep).
    token_env: str = "LEPTON_WORKSPACE_TOKEN"
    # Resource shape of each replica, e.g. "gpu.8xh100-80gb" or "cpu.small".
    resource_shape: str = "cpu.small"
    # Dedicated node group (id) and, within it, the nodes allowed; null/empty = any.
    node_group: Optional[str] = None
    allowed_nodes: List[str] = field(default_factory=list)
    # /dev/shm size in MiB; null = Lepton's default.
    shared_memory_size: Optional[int] = None
    # The shared storage every job mounts (Lepton mount "from", e.g. "node-nfs:lepton-shared-fs")
    # and the path on it that storage_dir shows (seen at storage_dir / mount_path).
    storage: Optional[str] = None
    storage_path: str = "/"
    # More Lepton mounts, as the API spells them: {path, from, mount_path}.
    mounts: List[Dict[str, Any]] = field(default_factory=list)
    # Environment variables taken from existing Lepton secrets: {VAR: secret name}.
    secret_refs: Dict[str, str] = field(default_factory=dict)
    image_pull_secrets: List[str] = field(default_factory=list)
    # Preemption (Lepton queue_config): priority class, may it be preempted / preempt others.
    priority_class: Optional[str] = None
    can_be_preempted: Optional[bool] = None
    can_preempt: Optional[bool] = None
    # Seconds Lepton keeps a finished job (null = Lepton's default).
    ttl_seconds_after_finished: Optional[int] = 600
    # Replicas of a multi-node point reach each other (null = true when nodes > 1).
    intra_job_communication: Optional[bool] = None
    # Extra job labels (nrun adds nrun.sweep and nrun.point).
    labels: Dict[str, str] = field(default_factory=dict)
