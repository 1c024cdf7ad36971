"""A sweep point as plain data: what to run, with what, and where its files go.

No pickles of live objects and no paths of the machine that runs it: the command is a template
(``{python} {runtime} {payload}``, wrapped by the launcher) whose words each backend resolves
for the machine the point lands on (``nrun_core.placement``). A JobSpec is JSON, so it can be
stored, shown by `nrun show`, diffed, and sent anywhere.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

PYTHON = "{python}"      # the interpreter where the point runs
RUNTIME = "{runtime}"    # the point runtime (nrun_core/runtime/point.py) there
PAYLOAD = "{payload}"    # the point's payload file there
BASE_COMMAND = [PYTHON, RUNTIME, PAYLOAD]


@dataclass
class JobSpec:
    sweep_id: str
    index: int                      # hydra.job.num: the point's number in the sweep
    overrides: List[str]            # the point's Hydra overrides, verbatim
    job_dir: str                    # Hydra's output dir of the point (sweep dir / subdir), as composed
    command: List[str] = field(default_factory=lambda: list(BASE_COMMAND))  # template, see above
    workdir: str = "."              # where the command starts, relative to the code dir
    code_dir: Optional[str] = None  # passthrough: the tree the points run from (None: the artifact)
    env: Dict[str, str] = field(default_factory=dict)
    secret_env: List[str] = field(default_factory=list)   # names only, values never stored
    nodes: int = 1
    gpus_per_node: int = 0
    cpus_per_task: Optional[int] = None
    timeout_s: Optional[float] = None
    artifact: Optional[str] = None  # digest of the packaged code, None for passthrough
    launcher: str = "direct"
    # Ties the point's result to these exact overrides; kept when stored overrides are redacted.
    overrides_digest: str = ""

    def __post_init__(self) -> None:
        if not self.overrides_digest:
            from nrun_core.runtime.point import overrides_digest

            self.overrides_digest = overrides_digest(self.overrides)

    @property
    def nrun_dir(self) -> Path:
        """nrun's own files of the point in this sweep: never shared with another sweep that
        writes into the same job dir."""
        return Path(self._nrun_dir)

    # Paths as strings joined directly: these are read for every point of a 10,000-point sweep
    # several times, and building Path objects for them showed in profiles. The job dir is
    # spelled as Path spells it (computed once per value of job_dir).
    @property
    def _job(self) -> str:
        cached = self.__dict__.get("_job_spelled")
        if cached is None or cached[0] != self.job_dir:
            cached = self.__dict__["_job_spelled"] = (self.job_dir, str(Path(self.job_dir)))
        return cached[1]

    @property
    def _nrun_dir(self) -> str:
        return os.path.join(self._job, ".nrun", self.sweep_id)

    @property
    def stdout(self) -> str:
        return os.path.join(self._job, "stdout.log")

    @property
    def stderr(self) -> str:
        return os.path.join(self._job, "stderr.log")

    @property
    def result_file(self) -> str:
        return os.path.join(self._nrun_dir, "result.json")

    @property
    def payload_file(self) -> str:
        return os.path.join(self._nrun_dir, "point.json")

    def token(self, attempt: Any) -> str:
        """NRUN_TOKEN of one attempt (an attempt number, or the backend's id for it): it tags
        every process of that attempt, across sessions and re-parenting."""
        return f"{self.sweep_id}:{self.index}:{attempt}"

    @property
    def identity(self) -> Dict[str, Any]:
        return {"sweep_id": self.sweep_id, "index": int(self.index), "overrides": self.overrides_digest}

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "JobSpec":
        data = json.loads(text)
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    def as_dict(self) -> Dict[str, Any]:
        """The fields as plain data (lists and dicts copied), without asdict's deep recursion."""
        return {f: _copied(getattr(self, f)) for f in self.__dataclass_fields__}


def _copied(value: Any) -> Any:
    return list(value) if isinstance(value, list) else dict(value) if isinstance(value, dict) else value
