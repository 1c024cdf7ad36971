"""nrun_kubeflow seen from any shell: a point's backend id is ``<namespace>/<TrainJob name>``."""

from nrun_core.executors.k8s.control import K8sControl
from nrun_core.executors.kubeflow import spec as ks


class KubeflowControl(K8sControl):
    resource = ks.RESOURCE
