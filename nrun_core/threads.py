"""The thread budget of a point: no CPU oversubscription by default.

Numeric libraries (OpenMP, MKL, OpenBLAS, torch) start one thread per core in every process, so
N points running at once on C cores run N*C busy threads and spend their time switching. Each
point gets ``max(1, cores // points at once)`` threads through the usual variables, unless the
user set them (in ``hydra.launcher.env`` or the launching shell: an explicit value always wins).

In fork mode torch is often already imported in the launcher, where those variables were read
long ago: the forked child then sets torch's intra-op threads itself (``apply_in_fork``), but
only if torch is already there (importing it costs seconds, and a task without it needs nothing).
"""

from __future__ import annotations

import os
import sys
from typing import Dict, Mapping, Optional

# The variables the common numeric runtimes read at start-up.
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
               "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")


def budget(cores: float, concurrent: int) -> int:
    """Threads per point: the cores of one point slot shared by the points running at once."""
    return max(1, int(cores) // max(1, int(concurrent)))


def host_cores() -> int:
    """The CPUs this process may run on (the affinity mask: a container's or taskset's limit)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def local_budget(max_parallel: int, points: int) -> int:
    """nrun_local: this machine's CPUs over the points that run at once."""
    return budget(host_cores(), min(max(1, max_parallel), max(1, points)))


def user_set(name: str, user_env: Mapping[str, str], shell_env: Optional[Mapping[str, str]] = None) -> bool:
    shell = os.environ if shell_env is None else shell_env
    return name in user_env or name in shell


def thread_env(threads: Optional[int], user_env: Mapping[str, str],
               shell_env: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """The thread variables to add to a point's environment: each one the user left unset (in
    ``user_env``, the launcher's ``env`` option, or ``shell_env``, the launching shell's), set to
    ``threads``. None (no budget known) adds nothing."""
    if not threads:
        return {}
    return {name: str(int(threads)) for name in THREAD_VARS if not user_set(name, user_env, shell_env)}


def describe(threads: Optional[int], user_env: Mapping[str, str],
             shell_env: Optional[Mapping[str, str]] = None) -> str:
    """One line for the dry run and the sweep's header."""
    if not threads:
        return "threads per point: not limited (no CPU count known for a point)"
    kept = [n for n in THREAD_VARS if user_set(n, user_env, shell_env)]
    text = f"threads per point: {threads} (OMP/MKL/OPENBLAS_NUM_THREADS; torch's in fork mode)"
    if kept:
        text += f"; your own value kept for {', '.join(kept)}"
    return text


def apply_in_fork(env: Optional[Mapping[str, str]] = None) -> Optional[int]:
    """In a forked point: torch (already imported by the launcher, where the variables were read
    before the budget existed) gets the point's OMP_NUM_THREADS as its intra-op threads. Returns
    the count set, or None when torch is not loaded or no valid count is given."""
    torch = sys.modules.get("torch")
    if torch is None or not hasattr(torch, "set_num_threads"):
        return None
    raw = (os.environ if env is None else env).get("OMP_NUM_THREADS", "")
    try:
        n = int(raw)
    except ValueError:
        return None
    if n < 1:
        return None
    torch.set_num_threads(n)
    return n


def container_budget(cpus: Optional[float], cpus_per_task: Optional[int], max_parallel: Optional[int]) -> int:
    """nrun_docker: the container's CPU limit (``cpus``, else ``cpus_per_task``), else the
    host's CPUs over the containers running at once (``max_parallel``, default one per CPU)."""
    limit = cpus if cpus is not None else cpus_per_task
    if limit:
        return budget(limit, 1)
    cores = host_cores()
    return budget(cores, max_parallel or cores)
