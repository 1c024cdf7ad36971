"""nrun_kuberay: each point as one KubeRay RayJob (``ray.io/v1``): its options (``options``), the
RayJob body and status mapping (``spec``), the executor (``executor``) and the view from any
shell (``control``); shared parts in ``executors.k8s``."""
