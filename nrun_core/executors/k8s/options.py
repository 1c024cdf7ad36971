"""Options every Kubernetes executor takes (``hydra.launcher.<name>=...``); plain dataclasses."""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from nrun_core.executors.cloudjob.options import CloudJobConf


@dataclass
class K8sConf(CloudJobConf):
    """Where the objects go, what their pods run, and the volume code and outputs travel by."""

    # Namespace of the objects; kubeconfig file (null = $KUBECONFIG, else ~/.kube/config) and its
    # context (null = the current one).
    namespace: str = "default"
    kubeconfig: Optional[str] = None
    context: Optional[str] = None
    # The volume every pod mounts, seen at storage_dir / mount_path: a PVC of the namespace (pvc)
    # or a directory of every node (host_path).
    pvc: Optional[str] = None
    host_path: Optional[str] = None
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
    # One API request's limit, in seconds.
    request_timeout_s: float = 30.0
