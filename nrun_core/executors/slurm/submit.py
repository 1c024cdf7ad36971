"""Turn a submission plan into one Slurm job array through submitit, on whichever host runs sbatch.

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
import shlex
import sys
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List


@dataclass
class Plan:
    folder: str                       # submitit folder, with %j (one subfolder per task)
    python: str                       # the worker's interpreter on the nodes
    exec_worker: bool                 # no srun: the worker replaces the batch shell (gets B:USR2)
    params: Dict[str, Any]            # submitit SlurmExecutor.update_parameters(**params)
    max_num_timeout: int = 0
    tasks: List[Dict[str, Any]] = field(default_factory=list)  # PointTask keyword arguments

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


def render(plan: Plan) -> str:
    """The batch script submitit writes for this plan (the dry run shows it verbatim)."""
    from submitit.slurm.slurm import _make_sbatch_string

    command = f"{plan.worker_python()} -u -m submitit.core._submit {shlex.quote(plan.folder)}"
    n = len(plan.tasks)
    return _make_sbatch_string(command=command, folder=plan.folder, map_count=n if n > 1 else None,
                               **plan.params)


def submit(plan: Plan) -> List[str]:
    """Submit; the Slurm id of each task in plan order (``<array>_<i>``, or the job id for one)."""
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
