"""Options every Kubernetes executor takes (``hydra.launcher.<name>=...``); plain dataclasses."""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from nrun_core.conf import NrunConf


@dataclass
class K8sConf(NrunConf):
    """Where the objects go, what their pods run, and the volume code and outputs travel by."""

    # Namespace of the objects; kubeconfig file (null = $KUBECONFIG, else ~/.kube/config) and its
    # context (null = the current one).
    namespace: str = "default"
    kubeconfig: Optional[str] = None
    context: Optional[str] = None
    # Container image (required) and its Python.
    image: Optional[str] = None
    python: str = "python3"
    command_prefix: List[str] = field(default_factory=list)
    # The volume every pod mounts (code, logs and results travel only through it): a PVC of the
    # namespace (pvc) or a directory of every node (host_path), seen here at storage_dir (required)
    # and in the pods at mount_path (null = at storage_dir's path).
    pvc: Optional[str] = None
    host_path: Optional[str] = None
    storage_dir: Optional[str] = None
    mount_path: Optional[str] = None
    # More volumes and their mounts, as Kubernetes spells them (pod spec volumes / volumeMounts).
    volumes: List[Dict[str, Any]] = field(default_factory=list)
    volume_mounts: List[Dict[str, Any]] = field(default_factory=list)
    # Requests per node: CPU ("8", "500m") and memory ("32Gi"); GPUs come from gpus_per_node, as
    # gpu_resource (the device plugin's resource name).
    cpu: Optional[str] = None
    memory: Optional[str] = None
    gpu_resource: str = "nvidia.com/gpu"
    # Environment variables from Kubernetes secrets of the namespace: {VAR: "secret-name:key"}.
    secret_refs: Dict[str, str] = field(default_factory=dict)
    # Extra labels of every object (nrun adds nrun.dev/sweep and nrun.dev/point), node selector and
    # tolerations of every pod.
    labels: Dict[str, str] = field(default_factory=dict)
    node_selector: Dict[str, str] = field(default_factory=dict)
    tolerations: List[Dict[str, Any]] = field(default_factory=list)
    # Status polling: first after poll_s, then 1.5x longer each time, at most poll_max_s.
    poll_s: float = 2.0
    poll_max_s: float = 30.0
    # Delete each object once its end is read (its logs and result are on the volume).
    delete_finished: bool = True
    # One API request's limit, in seconds.
    request_timeout_s: float = 30.0
