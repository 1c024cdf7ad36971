"""nrun_kuberay seen from any shell: a point's backend id is ``<namespace>/<RayJob name>``."""

from nrun_core.executors.k8s.control import K8sControl
from nrun_core.executors.kuberay import spec as rs


class KubeRayControl(K8sControl):
    resource = rs.RESOURCE
