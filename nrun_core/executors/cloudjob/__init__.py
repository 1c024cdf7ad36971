"""What the remote-job executors (nrun_lepton, nrun_dgxcloud, the Kubernetes ones) share: their
common options (``options``), the shared-storage layout a job sees (``storage``), the point's
command inside a cloud container (``command``), a queue of remote jobs followed by polling with
backoff (``polled``), the sweep's secrets at the backend (``secrets``) and the any-shell control
(``control``). Imports nothing of any vendor SDK."""
