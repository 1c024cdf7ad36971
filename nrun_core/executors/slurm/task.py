"""What one Slurm array task runs: one sweep point, inside submitit's worker on the compute node.

submitit pickles a ``PointTask`` (by reference to this module, so nrun must be importable on the
nodes: a shared filesystem or the same environment) and calls it in
``python -m submitit.core._submit``. The point itself is the payload the launcher wrote into the
point's job dir, run by the point runtime, in one of two ways:

- inprocess: the worker runs it (``point.run_payload``): one Python process per point, no second
  composition, the task function the launcher was given.
- command: ``python nrun_point.py PAYLOAD`` (or its torchrun-wrapped form) as a child process; on
  several nodes or tasks, each Slurm task starts it with its rank and rendezvous variables.
- ray (``nrun/launcher=ray``): each Slurm task is one node of the point's Ray cluster
  (``nrun_core.runtime.ray_node``); the first runs the command as the Ray driver.

Either way the point's stdout/stderr go to its job dir, hydra.job.id is the Slurm id
(``<array>_<task>``), and a failed point makes the Slurm task fail (so ``afterok`` means what it
says). Imports stdlib and nrun's runtime only (Hydra when the point runs).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from typing import Any, Dict, Iterator, Optional

from nrun_core.placement import Placement, runtime_file
from nrun_core.runtime.point import FAILED, become_subreaper, end_leftovers, run_payload, write_result
from nrun_core.runtime.result import read_result
from nrun_core.spec import JobSpec


class PointError(Exception):
    """The point failed; raised after its result file is written so the Slurm task fails too."""


class PointTask:
    """A picklable, checkpointable callable: submitit requeues it on preemption or timeout."""

    def __init__(self, spec: Dict[str, Any], *, mode: str, code_dir: str, python: Optional[str] = None,
                 rdzv_port: int = 29500, requeue: bool = False,
                 launcher: Optional[Dict[str, Any]] = None) -> None:
        self.spec, self.mode, self.code_dir = spec, mode, code_dir
        self.python, self.rdzv_port, self.requeue = python, rdzv_port, requeue
        self.launcher = launcher  # the nrun/launcher settings a task needs (ray, ft): plain data

    def __call__(self) -> int:
        spec = JobSpec(**self.spec)
        job_id = slurm_job_id()
        _signals(self.requeue)
        where = Placement(python=self.python or sys.executable, runtime=runtime_file(), code_dir=self.code_dir)
        os.makedirs(spec.nrun_dir, exist_ok=True)
        os.environ.update(where.env(spec, token=spec.token(job_id),
                                    extra={"NRUN_JOB_ID": job_id}))
        os.chdir(where.workdir(spec))
        try:
            if self.mode == "inprocess":
                code = run_in_process(spec)
            else:
                code = run_command(spec, where, job_id, rdzv_port=self.rdzv_port, launcher=self.launcher)
        except Exception as exc:  # the point could not even start: say why in its result file
            if _rank() == 0 and read_result(spec.result_file, expect=spec.identity) is None:
                write_result(spec.result_file, status=FAILED, error=exc, ident=spec.identity)
            raise
        if code != 0 and spec.launcher == "ft":
            from nrun_core.executors.slurm.ftrequeue import requeue

            requeue(spec, self.launcher, job_id, code)  # returns only if the job is not requeued
        if code != 0:
            raise PointError(f"point #{spec.index} failed ({_describe(code)}); logs: {spec.stdout} {spec.stderr}")
        return code

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """submitit calls this on USR2 (timeout/preemption): run the point again after requeue."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)


def slurm_job_id() -> str:
    """``<array job>_<task>`` for array tasks, the job id otherwise (Hydra's hydra.job.id)."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID", "unknown")


def _signals(requeue: bool) -> None:
    """scancel must stop the point at once; USR2 (the time-limit warning) only matters if the
    point may be requeued, otherwise it runs until Slurm's limit and is reported TIMEOUT."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if not requeue:
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def _rank() -> int:
    return int(os.environ.get("SLURM_PROCID", "0") or 0)


def _describe(code: int) -> str:
    if code >= 0:
        return f"exit code {code}"
    try:
        return f"killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"killed by signal {-code}"


# -- command ------------------------------------------------------------------------------
def run_command(spec: JobSpec, where: Placement, job_id: str, *, rdzv_port: int,
                launcher: Optional[Dict[str, Any]] = None) -> int:
    argv = where.argv(spec)
    rank = _rank()
    env = {**os.environ, **_rank_env(spec, job_id, rdzv_port)}
    suffix = "" if rank == 0 else f".rank{rank}"
    out = open(os.path.join(spec.job_dir, f"stdout{suffix}.log"), "ab")
    err = open(os.path.join(spec.job_dir, f"stderr{suffix}.log"), "ab")
    if spec.launcher == "ray":  # this node's part of the point's Ray cluster
        from nrun_core.runtime import ray_node

        with out, err:
            return ray_node.run(argv, env=env, cwd=where.workdir(spec), out=out, err=err, cfg=launcher,
                                python=where.python, job=int(os.environ.get("SLURM_JOB_ID", "0") or 0),
                                node=int(os.environ.get("SLURM_NODEID", "0") or 0),
                                nnodes=int(os.environ.get("SLURM_NNODES", "1") or 1), head_host=_head_host(),
                                nrun_dir=spec.nrun_dir, job_dir=spec.job_dir)
    with out, err:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env,
                                cwd=where.workdir(spec), preexec_fn=_child_signals)
        while True:
            try:
                return proc.wait()
            except KeyboardInterrupt:  # pragma: no cover - interactive only
                proc.terminate()


def _child_signals() -> None:
    """The worker handles Slurm's USR2 (requeue); the point's own processes ignore it. The
    point is a subreaper (kept across exec): what it starts stays its descendant."""
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    become_subreaper()


def _rank_env(spec: JobSpec, job_id: str, rdzv_port: int) -> Dict[str, str]:
    """Per-task variables on several nodes/tasks: torchrun's PET_* or torch's RANK/MASTER_*."""
    ntasks = int(os.environ.get("SLURM_NTASKS", "1") or 1)
    if ntasks <= 1 or spec.launcher == "ray":  # Ray's nodes find the head by its port block
        return {}
    head = _head_host()
    port = str(rdzv_port + int(os.environ.get("SLURM_JOB_ID", "0") or 0) % 1000)
    node = os.environ.get("SLURM_NODEID", "0")
    if spec.launcher in ("torchrun", "ft"):
        env = {"PET_NODE_RANK": node, "PET_RDZV_ENDPOINT": f"{head}:{port}"}
        if "PET_RDZV_CONF" not in os.environ:  # exactly one agent hosts the rendezvous store
            env["PET_RDZV_CONF"] = f"is_host={'true' if node == '0' else 'false'}"
        return env
    return {"RANK": os.environ.get("SLURM_PROCID", "0"), "LOCAL_RANK": os.environ.get("SLURM_LOCALID", "0"),
            "WORLD_SIZE": str(ntasks), "LOCAL_WORLD_SIZE": os.environ.get("SLURM_NTASKS_PER_NODE", "1"),
            "MASTER_ADDR": head, "MASTER_PORT": port, "NODE_RANK": node}


def _head_host() -> str:
    try:
        from submitit import JobEnvironment

        return JobEnvironment().hostnames[0]
    except Exception:  # pragma: no cover - outside submitit
        return os.uname().nodename


# -- in-process ---------------------------------------------------------------------------
def run_in_process(spec: JobSpec) -> int:
    """The point runtime in this worker process, on the payload the launcher wrote."""
    with open(spec.payload_file) as f:
        payload = json.load(f)
    saved_argv, saved_path, saved_main = sys.argv[:], sys.path[:], sys.modules.get("__main__")
    become_subreaper()
    with _redirected(spec):
        try:
            return run_payload(payload)
        finally:
            end_leftovers()
            sys.argv, sys.path[:] = saved_argv, saved_path
            if saved_main is not None:
                sys.modules["__main__"] = saved_main


@contextlib.contextmanager
def _redirected(spec: JobSpec) -> Iterator[None]:
    """fds 1 and 2 into the point's log files (live: submitit runs python -u), then back."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    out = os.open(spec.stdout, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    err = os.open(spec.stderr, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(out, 1)
    os.dup2(err, 2)
    os.close(out)
    os.close(err)
    try:
        yield
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
