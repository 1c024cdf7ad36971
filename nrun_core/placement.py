"""A JobSpec made concrete for the machine a point lands on: argv, working dir, environment.

Each backend says where things are on its side (a ``Placement``): its Python, the point runtime,
the code, and how a job dir of the launcher maps there. This is the one place a spec's template
words and paths are resolved, and the one builder of a point's environment, for every backend.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

from nrun_core import threads as _threads
from nrun_core.spec import PAYLOAD, PYTHON, RUNTIME, JobSpec


def _same(path: str) -> str:
    return path


@dataclass(frozen=True)
class Placement:
    """Where a point's words point to on the machine that runs it."""

    python: str                     # the interpreter there
    runtime: str                    # nrun_point.py there
    code_dir: str                   # the code root there (the artifact, or the passthrough tree)
    job_dir: Callable[[str], str] = field(default=_same)  # a launcher job dir -> the dir there
    # Threads per point (nrun_core.threads); None: the spec's cpus_per_task, if any.
    threads: Optional[int] = None

    def argv(self, spec: JobSpec) -> List[str]:
        words = {PYTHON: self.python, RUNTIME: self.runtime, PAYLOAD: self.payload(spec)}
        return [words.get(w, w) for w in spec.command]

    def workdir(self, spec: JobSpec) -> str:
        return posixpath.normpath(posixpath.join(self.code_dir, spec.workdir))

    def nrun_dir(self, spec: JobSpec) -> str:
        return posixpath.join(self.job_dir(spec.job_dir), ".nrun", spec.sweep_id)

    def payload(self, spec: JobSpec) -> str:
        return posixpath.join(self.nrun_dir(spec), "point.json")

    def result_file(self, spec: JobSpec) -> str:
        return posixpath.join(self.nrun_dir(spec), "result.json")

    def log(self, spec: JobSpec, stream: str, suffix: str = "") -> str:
        return posixpath.join(self.job_dir(spec.job_dir), f"{stream}{suffix}.log")

    def thread_budget(self, spec: JobSpec) -> Optional[int]:
        """Threads per point: the executor's budget, else the CPUs the point was given."""
        if self.threads is not None:
            return self.threads
        return _threads.budget(spec.cpus_per_task, 1) if spec.cpus_per_task else None

    def env(self, spec: JobSpec, *, token: str, extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
        """The point's environment: the user's ``env``, the thread budget where the user left
        the thread variables unset (here or in this process's environment), then nrun's own
        variables (the point runtime reads NRUN_CODE_DIR, NRUN_JOB_DIR and NRUN_RESULT_FILE;
        NRUN_TOKEN tags every process of the point). Secret values are added by the executor at
        the last moment."""
        out = dict(spec.env)
        out.update(_threads.thread_env(self.thread_budget(spec), spec.env))
        out.setdefault("PYTHONUNBUFFERED", "1")
        out.update({"NRUN_SWEEP_ID": spec.sweep_id, "NRUN_POINT": str(spec.index), "NRUN_TOKEN": token,
                    "NRUN_CODE_DIR": self.code_dir, "NRUN_JOB_DIR": self.job_dir(spec.job_dir),
                    "NRUN_RESULT_FILE": self.result_file(spec)})
        out.update(extra or {})
        for name in spec.secret_env:
            out.pop(name, None)  # the secret's value, passed separately, wins
        return out


def runtime_file() -> str:
    """The point runtime of this nrun install (stdlib + hydra + omegaconf only)."""
    from nrun_core.runtime import point

    return os.path.abspath(point.__file__)


def local(spec: JobSpec, python: str, threads: Optional[int] = None) -> Placement:
    """This machine: the tree or the unpacked snapshot, nrun's own runtime file."""
    return Placement(python=python, runtime=runtime_file(), code_dir=code_dir_here(spec), threads=threads)


def code_dir_here(spec: JobSpec) -> str:
    """Where the point's code is on the launcher's machine."""
    if spec.artifact:
        from nrun_core.paths import nrun_home

        return str(nrun_home() / "snapshots" / spec.artifact)
    return spec.code_dir or os.getcwd()


def secret_values(names: List[str]) -> Dict[str, str]:
    """The secrets' values, from the launching shell (checked to exist before submission)."""
    return {n: os.environ[n] for n in names if n in os.environ}
