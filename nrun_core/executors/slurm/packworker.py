"""What an array task of packed points runs: ``python -m nrun_core.executors.slurm.packworker PACKS``.

Packed points run in process only, so their array tasks need nothing from submitit on the node:
the launcher writes the array's packs as one JSON file (``submit.submit_packs``), and each task
runs entry ``$SLURM_ARRAY_TASK_ID`` of it with the pack runner (``nrun_core.runtime.pack``). A
fresh task then costs an interpreter, Hydra and the app's imports, once for all its points.
The task exits 1 if any of its points did not complete (so ``afterok`` means all of them).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any, Dict, List, Optional

from nrun_core.placement import Placement, runtime_file
from nrun_core.runtime.pack import PackPoint, run_pack
from nrun_core.spec import JobSpec


def slurm_task_id() -> str:
    """``<array job>_<task>`` for array tasks, the job id otherwise."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID", "unknown")


def pack_id(task_id: str, k: int) -> str:
    """The Slurm id of point k of a pack (its hydra.job.id and backend id): ``<task>:<k>``."""
    return f"{task_id}:{k}"


def pack_points(pack: Dict[str, Any], task_id: str) -> List[PackPoint]:
    """The pack's points with their environment (Slurm id ``<task>:<k>`` as hydra.job.id)."""
    python: Optional[str] = pack.get("python")
    points = []
    for k, (raw, code_dir) in enumerate(zip(pack["specs"], pack["code_dirs"])):
        spec = JobSpec(**raw)
        where = Placement(python=python or sys.executable, runtime=runtime_file(), code_dir=code_dir)
        job_id = pack_id(task_id, k)
        points.append(PackPoint(index=spec.index, payload_file=spec.payload_file, nrun_dir=str(spec.nrun_dir),
                                stdout=spec.stdout, stderr=spec.stderr, cwd=where.workdir(spec),
                                env=where.env(spec, token=spec.token(job_id), extra={"NRUN_JOB_ID": job_id}),
                                timeout_s=spec.timeout_s))
    return points


def main(argv: Optional[List[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m nrun_core.executors.slurm.packworker PACKS_JSON (written by nrun)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)  # no requeue for packs: run to Slurm's limit
    with open(args[0]) as f:
        packs = json.load(f)["packs"]
    index = int(os.environ.get("SLURM_ARRAY_TASK_ID") or 0)
    task_id = slurm_task_id()
    print(f"nrun pack {task_id}: points {[d['index'] for d in packs[index]['specs']]}", flush=True)
    failed = run_pack(pack_points(packs[index], task_id))
    if failed:
        print(f"nrun pack {task_id}: point(s) {failed} did not complete; see each point's stdout.log/stderr.log "
              "and .nrun/<sweep>/pack.json", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
