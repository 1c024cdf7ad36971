"""`hydra/launcher=nrun_kubeflow` options (registered by nrun_core.registry; plain dataclasses)."""

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from nrun_core.executors.k8s.options import K8sConf


@dataclass
class KubeflowConf(K8sConf):
    """`hydra/launcher=nrun_kubeflow`: each point as one Kubeflow Trainer TrainJob; nodes and
    gpus_per_node become numNodes and resourcesPerNode."""

    # The training runtime the TrainJob refers to (spec.runtimeRef): its name and kind
    # (ClusterTrainingRuntime, or TrainingRuntime of the namespace).
    runtime: str = "torch-distributed"
    runtime_kind: str = "ClusterTrainingRuntime"
    # Processes per node the runtime starts (spec.trainer.numProcPerNode); null = the runtime's.
    num_proc_per_node: Optional[int] = None
    # Fields merged into the TrainJob's spec as given (Trainer's own names), e.g.
    # {activeDeadlineSeconds: 3600}.
    spec_overrides: Dict[str, Any] = field(default_factory=dict)
