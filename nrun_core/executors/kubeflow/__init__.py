"""nrun_kubeflow: each point as one Kubeflow Trainer v2 TrainJob (``trainer.kubeflow.org/v1alpha1``):
its options (``options``), the TrainJob body and status mapping (``spec``), the executor
(``executor``) and the view from any shell (``control``); shared parts in ``executors.k8s``."""
