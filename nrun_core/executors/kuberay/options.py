"""`hydra/launcher=nrun_kuberay` options (registered by nrun_core.registry; plain dataclasses)."""

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from nrun_core.executors.k8s.options import K8sConf


@dataclass
class KubeRayConf(K8sConf):
    """`hydra/launcher=nrun_kuberay`: each point as one RayJob; its Ray cluster has a head and
    nodes - 1 workers, each with cpu/memory/gpus_per_node. The point's command is the entrypoint."""

    # Ray version of the cluster (spec.rayClusterSpec.rayVersion); it must match the image's Ray.
    ray_version: str = "2.46.0"
    # `ray start` parameters of the head and of the workers.
    head_start_params: Dict[str, str] = field(default_factory=dict)
    worker_start_params: Dict[str, str] = field(default_factory=dict)
    # Ray runtime environment of the job (merged with the point's env_vars), e.g. {pip: [...]}.
    runtime_env: Dict[str, Any] = field(default_factory=dict)
    # How KubeRay submits the entrypoint: K8sJobMode (a submitter pod), HTTPMode, InteractiveMode.
    submission_mode: str = "K8sJobMode"
    # Delete the Ray cluster when the job ends, after this many seconds (null: KubeRay's default).
    shutdown_after_job_finishes: bool = True
    ttl_seconds_after_finished: Optional[int] = None
    # Fields merged into the RayJob's spec as given (KubeRay's own names).
    spec_overrides: Dict[str, Any] = field(default_factory=dict)
