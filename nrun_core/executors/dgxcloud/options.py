"""`hydra/launcher=nrun_dgxcloud` options (registered by nrun_core.registry; plain dataclasses)."""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from nrun_core.executors.cloudjob.options import CloudJobConf


@dataclass
class DgxCloudConf(CloudJobConf):
    """`hydra/launcher=nrun_dgxcloud`: each point as one Run:ai workload (training for one node,
    distributed PyTorch for several)."""

    # Run:ai API root, e.g. https://<tenant>.run.ai/api/v1; null = $RUNAI_BASE_URL.
    base_url: Optional[str] = None
    # Application (client credentials) id; null = $RUNAI_CLIENT_ID. Its secret is read from the
    # environment variable client_secret_env names, never from a setting (it would be stored).
    client_id: Optional[str] = None
    client_secret_env: str = "RUNAI_CLIENT_SECRET"
    # Run:ai project the workloads run in (required).
    project: Optional[str] = None
    # The PVC every workload mounts (required), seen at storage_dir / mount_path.
    pvc: Optional[str] = None
    # More PVCs, as Run:ai spells them: {claimName, path, readOnly, existingPvc}.
    pvcs: List[Dict[str, Any]] = field(default_factory=list)
    # Environment variables from Kubernetes secrets of the project: {VAR: "secret-name:key"}.
    secret_refs: Dict[str, str] = field(default_factory=dict)
    # Compute: large /dev/shm, CPU cores and memory requests, node pools (null/empty = Run:ai's).
    large_shm: bool = True
    cpu_core_request: Optional[float] = None
    cpu_memory_request: Optional[str] = None
    node_pools: List[str] = field(default_factory=list)
    # Extra fields merged into the workload's spec as given (Run:ai's own names).
    custom_spec: Dict[str, Any] = field(default_factory=dict)
    # One HTTP request's limit, in seconds.
    request_timeout_s: float = 30.0
