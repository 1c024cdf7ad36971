"""ft's requeue loop on Slurm (`nrun/launcher=ft`, ``max_retries``): when a point still fails
after ft_launcher's in-job restarts (``max_restarts``), its Slurm job requeues itself, at most
``max_retries`` times, and runs the point again.

NeMo-Run does this by pre-scheduling a continuation job (``sbatch --dependency=afterany``) and
counting failures in a results file. nrun requeues the same job instead (``scontrol requeue``):
the point keeps its Slurm id, so the sweep, ``nrun status`` and ``nrun cancel`` keep following
it. The count lives in the point's nrun dir (per job id, so a resubmission by
``hydra.launcher.retries`` starts from zero); only the first task requeues (one job, one count).
Slurm holds a requeued job for two minutes (reason BeginTime) before it may start again; the
sweep, while it watches, lifts that hold (``scontrol update StartTime=now``, executor.py): the
loop is already bounded by ``max_retries``. A detached sweep's point waits the two minutes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any, Mapping, Optional

from nrun_core.spec import JobSpec

WAIT_FOR_KILL_S = 600.0  # scontrol requeue ends this job; nothing should outlive that


def count_file(spec: JobSpec, job_id: str) -> str:
    return os.path.join(spec.nrun_dir, f"ft-requeues.{job_id}")


def requeue(spec: JobSpec, cfg: Optional[Mapping[str, Any]], job_id: str, code: int) -> None:
    """Requeue this job if retries are left (then wait to be ended by Slurm); else return."""
    limit = int((cfg or {}).get("max_retries") or 0)
    if limit <= 0 or int(os.environ.get("SLURM_PROCID", "0") or 0) != 0:
        return
    path = count_file(spec, job_id)
    try:
        with open(path) as f:
            done = int(f.read().strip() or 0)
    except (FileNotFoundError, ValueError):
        done = 0
    if done >= limit:
        _say(spec, f"nrun: ft: the point failed (exit {code}) after {done} requeue(s); "
                   f"hydra.launcher.launcher.max_retries={limit} reached, giving up")
        return
    with open(path, "w") as f:
        f.write(str(done + 1))
    target = os.environ.get("SLURM_JOB_ID") or job_id
    _say(spec, f"nrun: ft: the point failed (exit {code}); requeueing Slurm job {job_id} "
               f"({done + 1} of hydra.launcher.launcher.max_retries={limit})")
    out = subprocess.run(["scontrol", "requeue", target], capture_output=True, text=True)
    if out.returncode != 0:
        _say(spec, f"nrun: ft: scontrol requeue {target} failed: {(out.stderr or out.stdout).strip()}")
        return
    time.sleep(WAIT_FOR_KILL_S)  # Slurm ends this attempt now


def _say(spec: JobSpec, text: str) -> None:
    print(text, file=sys.stderr, flush=True)
    try:
        with open(spec.stderr, "a") as f:
            f.write(text + "\n")
    except OSError:  # pragma: no cover - the job dir went away
        pass
