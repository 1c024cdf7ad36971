"""Options every executor whose points run as remote container jobs on shared storage takes
(nrun_lepton, nrun_dgxcloud, the Kubernetes ones): besides the container's (``ContainerConf``),
where the storage is seen and how the jobs are followed. Imported at Hydra start: plain
dataclasses only."""

from dataclasses import dataclass
from typing import Optional

from nrun_core.conf import ContainerConf


@dataclass
class CloudJobConf(ContainerConf):
    # The shared storage every job mounts (code, logs and results travel only through it; each
    # executor names it its own way: pvc, storage, host_path), where this machine sees it
    # (required) and where jobs see it (null = at storage_dir's path).
    storage_dir: Optional[str] = None
    mount_path: Optional[str] = None
    # Status polling: first after poll_s, then 1.5x longer each time, at most poll_max_s.
    poll_s: float = 2.0
    poll_max_s: float = 30.0
    # Delete each job at the backend once its end is read (its logs and result are on the storage).
    delete_finished: bool = True
