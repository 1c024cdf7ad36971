"""`hydra/launcher=nrun_dgxcloud` options (registered by nrun_core.registry; plain dataclasses)."""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from nrun_core.conf import NrunConf


@dataclass
class DgxCloudConf(NrunConf):
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
    # Container image (required) and its Python.
    image: Optional[str] = None
    python: str = "python3"
    command_prefix: List[str] = field(default_factory=list)
    # The PVC every workload mounts (required: code, logs and results travel through it), where
    # this machine sees it (required) and where workloads see it (null = at storage_dir's path).
    pvc: Optional[str] = None
    storage_dir: Optional[str] = None
    mount_path: Optional[str] = None
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
    # Status polling: first after poll_s, then 1.5x longer each time, at most poll_max_s.
    poll_s: float = 2.0
    poll_max_s: float = 30.0
    # Delete each workload once its end is read (its logs and result are on the PVC).
    delete_finished: bool = True
    # One HTTP request's limit, in seconds.
    request_timeout_s: float = 30.0
