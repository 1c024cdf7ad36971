"""What nrun_lepton and nrun_dgxcloud share: the shared-storage layout a job sees (``storage``),
the point's command inside a cloud container (``command``) and a queue of remote jobs followed by
polling with backoff (``polled``). Imports nothing of any vendor SDK."""
