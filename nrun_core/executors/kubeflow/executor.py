r"""nrun_kubeflow: each point as one Kubeflow Trainer v2 TrainJob, with the kubernetes client.

    python train.py -m hydra/launcher=nrun_kubeflow hydra.launcher.image=nvcr.io/nvidia/pytorch:24.05-py3 \
        hydra.launcher.pvc=my-pvc hydra.launcher.storage_dir=/mnt/pvc hydra.sweep.dir=/mnt/pvc/multirun \
        hydra.launcher.nodes=2 hydra.launcher.gpus_per_node=8 lr=0.1,0.01

What a TrainJob holds and how its status reads: ``spec``; everything else: ``executors.k8s``.
"""

from __future__ import annotations

from typing import Any, Dict

from nrun_core.executors.k8s.executor import K8sJobExecutor
from nrun_core.executors.kubeflow import spec as ks
from nrun_core.executors.kubeflow.control import KubeflowControl
from nrun_core.spec import JobSpec


class KubeflowExecutor(K8sJobExecutor):
    name = "kubeflow"
    option = ks.OPTION
    operator = "the Kubeflow Trainer (v2) operator"
    kind = ks.KIND
    control_class = KubeflowControl
    state_of = staticmethod(ks.state_of)

    def check_kind_options(self) -> None:
        ks.check_options(self.opts)

    def manifest(self, spec: JobSpec, attempt: int = 1) -> Dict[str, Any]:
        return ks.trainjob(self.opts, spec, attempt)


__all__ = ["KubeflowExecutor"]
