"""Turn a submission plan into one Slurm job array through submitit, on whichever host runs sbatch.

A sweep is one or more plans (``executor.plans``: arrays within MaxArraySize, each starting at
index 0); each plan is submitted on its own. A plan of single points goes through submitit (one
pickled ``PointTask`` per array task); a plan of packs (several in-process points per task) is
one JSON file and a plain sbatch of ``python -m nrun_core.executors.slurm.packworker`` (no
submitit, no pickles on the nodes: see ``packworker``).

The plan is plain data: the launcher calls ``submit`` directly when it runs on the login node,
and sends the plan as JSON to ``python -m nrun_core.executors.slurm.submit`` over SSH otherwise
(secret variables travel in the same stdin, never on a command line or on disk). Either way
submitit writes the batch script and one pickled ``PointTask`` per array task, and runs sbatch;
sbatch exports the submitting process's environment to the job, which is how ``secret_env``
values reach the points without being written down.
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import sys
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional


@dataclass
class Plan:
    folder: str                       # submitit folder, with %j (one subfolder per task)
    python: str                       # the worker's interpreter on the nodes
    exec_worker: bool                 # no srun: the worker replaces the batch shell (gets B:USR2)
    params: Dict[str, Any]            # submitit SlurmExecutor.update_parameters(**params)
    max_num_timeout: int = 0
    tasks: List[Dict[str, Any]] = field(default_factory=list)  # PointTask keyword arguments, or {"pack": PackTask's}
    first: int = 0                    # the sweep's task number of this array's index 0
    chain: Optional[int] = None       # runs after the array of plan #chain ended (array_parallelism lanes)

    def worker_python(self) -> str:
        """submitit's ``python`` (a shell prefix): exec it when there is no job step."""
        word = shlex.quote(self.python)
        return f"exec {word}" if self.exec_worker else word

    def to_json(self) -> str:
        data = asdict(self)
        for t in data["tasks"]:
            if t.get("config") is not None:
                t["config"] = base64.b64encode(t["config"]).decode()
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> "Plan":
        data = json.loads(text)
        for t in data["tasks"]:
            if t.get("config") is not None:
                t["config"] = base64.b64decode(t["config"])
        return cls(**data)


def is_packed(plan: Plan) -> bool:
    return bool(plan.tasks) and "pack" in plan.tasks[0]


def packs_file(plan: Plan, tag: str = "<uid>") -> str:
    """Where a plan of packs is written: beside submitit's folder, one file per submission
    (``tag``: unique per sbatch, so a retry's pack never overwrites one still queued)."""
    return os.path.join(pack_folder(plan), f"packs-{tag}.json")


def pack_folder(plan: Plan) -> str:
    return os.path.join(plan.folder.split("%j")[0].rstrip("/") or ".", "packs")


def render(plan: Plan, tag: str = "<uid>") -> str:
    """The batch script of this plan (submitit's format; the dry run shows it verbatim)."""
    from submitit.slurm.slurm import _make_sbatch_string

    n = len(plan.tasks)
    if is_packed(plan):
        command = (f"{plan.worker_python()} -u -m nrun_core.executors.slurm.packworker "
                   f"{shlex.quote(packs_file(plan, tag))}")
        return _make_sbatch_string(command=command, folder=pack_folder(plan), map_count=n if n > 1 else None,
                                   **plan.params)
    command = f"{plan.worker_python()} -u -m submitit.core._submit {shlex.quote(plan.folder)}"
    return _make_sbatch_string(command=command, folder=plan.folder, map_count=n if n > 1 else None,
                               **plan.params)


def submit_packs(plan: Plan) -> List[str]:
    """Write the packs and the batch script, sbatch it; the id of each array task in order."""
    import subprocess

    import uuid

    folder = pack_folder(plan)
    os.makedirs(folder, exist_ok=True)
    tag = uuid.uuid4().hex[:12]
    path = packs_file(plan, tag)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump({"packs": [t["pack"] for t in plan.tasks]}, f)
    os.replace(tmp, path)
    script = os.path.join(folder, f"packs-{tag}.sbatch")
    with open(script, "w") as f:
        f.write(render(plan, tag))
    out = subprocess.run(["sbatch", "--parsable", script], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"sbatch {script} failed (exit {out.returncode}): {(out.stderr or out.stdout).strip()}")
    job = out.stdout.strip().splitlines()[-1].split(";")[0]
    n = len(plan.tasks)
    return [f"{job}_{i}" for i in range(n)] if n > 1 else [job]


def submit(plan: Plan) -> List[str]:
    """Submit; the Slurm id of each task in plan order (``<array>_<i>``, or the job id for one)."""
    if is_packed(plan):
        return submit_packs(plan)
    import submitit

    from nrun_core.executors.slurm.task import PointTask

    executor = submitit.SlurmExecutor(folder=plan.folder, max_num_timeout=plan.max_num_timeout,
                                      python=plan.worker_python())
    executor.update_parameters(**plan.params)
    jobs = executor.submit_array([PointTask(**t) for t in plan.tasks])
    return [str(j.job_id) for j in jobs]


def main() -> int:
    """Remote end of an SSH submission: plan and secret variables as JSON on stdin."""
    import os

    data = json.loads(sys.stdin.read())
    os.environ.update({str(k): str(v) for k, v in (data.get("env") or {}).items()})
    try:
        ids = submit(Plan.from_json(data["plan"]))
    except Exception as exc:  # the launcher shows this text as the backend's own message
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        return 1
    print(json.dumps({"ids": ids}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
