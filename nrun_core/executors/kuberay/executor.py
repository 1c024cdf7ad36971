r"""nrun_kuberay: each point as one KubeRay RayJob (its own Ray cluster), with the kubernetes client.

    python train.py -m hydra/launcher=nrun_kuberay hydra.launcher.image=rayproject/ray:2.46.0-py311 \
        hydra.launcher.pvc=my-pvc hydra.launcher.storage_dir=/mnt/pvc hydra.sweep.dir=/mnt/pvc/multirun \
        hydra.launcher.nodes=3 hydra.launcher.gpus_per_node=1 lr=0.1,0.01

What a RayJob holds and how its status reads: ``spec``; everything else: ``executors.k8s``.
"""

from nrun_core.executors.k8s.executor import K8sJobExecutor
from nrun_core.executors.kuberay import spec as rs
from nrun_core.executors.kuberay.control import KubeRayControl


class KubeRayExecutor(K8sJobExecutor):
    name = "kuberay"
    resource = rs.RESOURCE
    control_class = KubeRayControl


__all__ = ["KubeRayExecutor"]
