r"""nrun_kubeflow: each point as one Kubeflow Trainer v2 TrainJob, with the kubernetes client.

    python train.py -m hydra/launcher=nrun_kubeflow hydra.launcher.image=nvcr.io/nvidia/pytorch:24.05-py3 \
        hydra.launcher.pvc=my-pvc hydra.launcher.storage_dir=/mnt/pvc hydra.sweep.dir=/mnt/pvc/multirun \
        hydra.launcher.nodes=2 hydra.launcher.gpus_per_node=8 lr=0.1,0.01

What a TrainJob holds and how its status reads: ``spec``; everything else: ``executors.k8s``.
"""

from nrun_core.executors.k8s.executor import K8sJobExecutor
from nrun_core.executors.kubeflow import spec as ks
from nrun_core.executors.kubeflow.control import KubeflowControl


class KubeflowExecutor(K8sJobExecutor):
    name = "kubeflow"
    resource = ks.RESOURCE
    control_class = KubeflowControl


__all__ = ["KubeflowExecutor"]
