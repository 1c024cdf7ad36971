"""What nrun_kubeflow and nrun_kuberay share: the common options (``options``), the kubernetes
client with its errors mapped to nrun's (``api``), the pod pieces of a manifest - names, labels,
volume, env, resources (``manifest``) - and one custom object per point followed by polling
(``executor``, ``control``). The kubernetes package is imported only when a client is made."""
