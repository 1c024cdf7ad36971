"""nrun_local: points as isolated processes on this machine (``executor``)."""
