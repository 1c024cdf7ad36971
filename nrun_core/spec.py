"""A sweep point as plain data: what to run, where, with what, and where its files go.

No pickles of live objects: a JobSpec is JSON, so it can be stored, shown by `nrun show`,
diffed, and sent to a container or a host whose Python differs from the launcher's.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional


@dataclass
class JobSpec:
    sweep_id: str
    index: int                      # hydra.job.num: the point's number in the sweep
    overrides: List[str]            # the point's Hydra overrides, verbatim
    job_dir: str                    # Hydra's output dir of the point (sweep dir / subdir)
    command: List[str]              # argv that runs the point (after the launcher wrapped it)
    workdir: str                    # where the command starts
    env: Dict[str, str] = field(default_factory=dict)
    secret_env: List[str] = field(default_factory=list)   # names only, values never stored
    nodes: int = 1
    gpus_per_node: int = 0
    cpus_per_task: Optional[int] = None
    timeout_s: Optional[float] = None
    artifact: Optional[str] = None  # digest of the packaged code, None for passthrough
    launcher: str = "direct"

    @property
    def nrun_dir(self) -> Path:
        """nrun's own files of the point (result, runtime state) inside Hydra's job dir."""
        return Path(self.job_dir) / ".nrun"

    @property
    def stdout(self) -> str:
        return str(Path(self.job_dir) / "stdout.log")

    @property
    def stderr(self) -> str:
        return str(Path(self.job_dir) / "stderr.log")

    @property
    def result_file(self) -> str:
        return str(self.nrun_dir / "result.json")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "JobSpec":
        return cls(**json.loads(text))

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)
