r"""nrun_kuberay: each point as one KubeRay RayJob (its own Ray cluster), with the kubernetes client.

    python train.py -m hydra/launcher=nrun_kuberay hydra.launcher.image=rayproject/ray:2.46.0-py311 \
        hydra.launcher.pvc=my-pvc hydra.launcher.storage_dir=/mnt/pvc hydra.sweep.dir=/mnt/pvc/multirun \
        hydra.launcher.nodes=3 hydra.launcher.gpus_per_node=1 lr=0.1,0.01

What a RayJob holds and how its status reads: ``spec``; everything else: ``executors.k8s``.
"""

from __future__ import annotations

from typing import Any, Dict

from nrun_core.executors.k8s.executor import K8sJobExecutor
from nrun_core.executors.kuberay import spec as rs
from nrun_core.executors.kuberay.control import KubeRayControl
from nrun_core.spec import JobSpec


class KubeRayExecutor(K8sJobExecutor):
    name = "kuberay"
    option = rs.OPTION
    operator = "the KubeRay operator"
    kind = rs.KIND
    control_class = KubeRayControl
    state_of = staticmethod(rs.state_of)

    def check_kind_options(self) -> None:
        rs.check_options(self.opts)

    def manifest(self, spec: JobSpec, attempt: int = 1) -> Dict[str, Any]:
        return rs.rayjob(self.opts, spec, attempt)


__all__ = ["KubeRayExecutor"]
