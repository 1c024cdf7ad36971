"""nrun_ssh: SSH hosts as a cluster (``executor``), the hosts and their slots (``hosts``), one
host's files and helper calls (``site``) and the stateless view from any shell (``control``).
The helper that runs on each host is ``nrun_core/runtime/host.py``."""
