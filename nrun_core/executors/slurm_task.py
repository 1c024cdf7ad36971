"""What one Slurm array task runs: one sweep point, inside submitit's worker on the compute node.

submitit pickles a ``PointTask`` (by reference to this module, so nrun must be importable on the
nodes: a shared filesystem or the same environment) and calls it in
``python -m submitit.core._submit``. Two ways to run the point:

- inprocess: the app module runs as ``__main__`` with Hydra's ``@hydra.main`` swapped for a
  runner of the config the launcher already composed, so the point costs one Python process and
  no second composition. Return values come back in the result file, pickled against the app's
  own ``__main__``, exactly as the launcher expects them.
- command: ``python app.py <overrides>`` (or the torchrun-wrapped argv) as a child process; on
  several nodes or tasks, each Slurm task starts it with its rank and rendezvous variables.

Either way the point's stdout/stderr go to its job dir, hydra.job.id is the Slurm id
(``<array>_<task>``), and a failed point makes the Slurm task fail (so ``afterok`` means what it
says). Imports stdlib and nrun's runtime only; Hydra only for in-process points.
"""

from __future__ import annotations

import contextlib
import functools
import os
import pickle
import runpy
import signal
import subprocess
import sys
import traceback
from typing import Any, Dict, Iterator, List, Optional

from nrun_core.runtime.result import COMPLETED, FAILED, read_result, write_result
from nrun_core.spec import JobSpec


class PointError(Exception):
    """The point failed; raised after its result file is written so the Slurm task fails too."""


class PointTask:
    """A picklable, checkpointable callable: submitit requeues it on preemption or timeout."""

    def __init__(self, spec: Dict[str, Any], *, mode: str, config: Optional[bytes] = None,
                 python: Optional[str] = None, rdzv_port: int = 29500, requeue: bool = False) -> None:
        self.spec, self.mode, self.config = spec, mode, config
        self.python, self.rdzv_port, self.requeue = python, rdzv_port, requeue

    def __call__(self) -> int:
        spec = JobSpec(**self.spec)
        job_id = slurm_job_id()
        _signals(self.requeue)
        os.makedirs(spec.nrun_dir, exist_ok=True)
        os.environ.update(spec.env)
        os.environ.update({"NRUN_SWEEP_ID": spec.sweep_id, "NRUN_POINT": str(spec.index),
                           "NRUN_RESULT_FILE": spec.result_file, "NRUN_JOB_DIR": spec.job_dir,
                           "NRUN_TOKEN": f"{spec.sweep_id}:{spec.index}:{job_id}"})
        os.chdir(spec.workdir)
        try:
            if self.mode == "inprocess":
                code = run_in_process(spec, self.config or b"", job_id)
            else:
                code = run_command(spec, job_id, python=self.python, rdzv_port=self.rdzv_port)
        except Exception as exc:  # the point could not even start: say why in its result file
            if _rank() == 0 and read_result(spec.result_file) is None:
                write_result(spec.result_file, status=FAILED, error=exc)
            raise
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
def run_command(spec: JobSpec, job_id: str, *, python: Optional[str], rdzv_port: int) -> int:
    argv = [_with_job_id(a, job_id) for a in spec.command]
    if python:
        argv[0] = python
    rank = _rank()
    env = {**os.environ, "PYTHONUNBUFFERED": os.environ.get("PYTHONUNBUFFERED", "1"),
           **_rank_env(spec, job_id, rdzv_port)}
    suffix = "" if rank == 0 else f".rank{rank}"
    out = open(os.path.join(spec.job_dir, f"stdout{suffix}.log"), "ab")
    err = open(os.path.join(spec.job_dir, f"stderr{suffix}.log"), "ab")
    with out, err:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env,
                                cwd=spec.workdir, preexec_fn=_child_signals)
        while True:
            try:
                return proc.wait()
            except KeyboardInterrupt:  # pragma: no cover - interactive only
                proc.terminate()


def _child_signals() -> None:
    """The worker handles Slurm's USR2 (requeue); the point's own processes ignore it."""
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def _with_job_id(arg: str, job_id: str) -> str:
    # Quoted: Hydra's grammar would read 123_4 as the integer 1234.
    return f"hydra.job.id='{job_id}'" if arg.startswith("hydra.job.id=") else arg


def _rank_env(spec: JobSpec, job_id: str, rdzv_port: int) -> Dict[str, str]:
    """Per-task variables on several nodes/tasks: torchrun's PET_* or torch's RANK/MASTER_*."""
    ntasks = int(os.environ.get("SLURM_NTASKS", "1") or 1)
    if ntasks <= 1:
        return {}
    head = _head_host()
    port = str(rdzv_port + int(os.environ.get("SLURM_JOB_ID", "0") or 0) % 1000)
    node = os.environ.get("SLURM_NODEID", "0")
    if spec.launcher == "torchrun":
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
def run_in_process(spec: JobSpec, config: bytes, job_id: str) -> int:
    """Run the app's module as __main__, with @hydra.main running the pre-composed config."""
    from omegaconf import open_dict, read_write

    cfg = pickle.loads(config)
    with read_write(cfg.hydra.job), open_dict(cfg.hydra.job):
        cfg.hydra.job.id = job_id
    swap = _MainSwap(cfg, spec)
    kind, target = app_of(spec.command)
    with _redirected(spec), swap.installed():
        saved_argv, saved_path = sys.argv[:], sys.path[:]
        try:
            if kind == "script":
                sys.argv = [target]
                sys.path.insert(0, os.path.dirname(os.path.abspath(target)))
                runpy.run_path(target, run_name="__main__")
            else:
                sys.argv = [target]
                sys.path.insert(0, os.getcwd())
                runpy.run_module(target, run_name="__main__", alter_sys=True)
        except SystemExit as exc:
            if swap.ran and not swap.finished:  # submitit requeued the job from its USR2 handler
                raise
            if not swap.ran:
                raise RuntimeError(f"the app exited ({exc.code!r}) before running its @hydra.main "
                                   "function; set hydra.launcher.mode=command") from None
        finally:
            sys.argv, sys.path[:] = saved_argv, saved_path
    if not swap.ran:
        raise RuntimeError(f"{target} did not call its @hydra.main function when run as __main__; "
                           "nrun_slurm's inprocess mode needs `if __name__ == \"__main__\": main()`. "
                           "Set hydra.launcher.mode=command to run it as a command instead")
    return swap.code


def app_of(command: List[str]) -> tuple:
    """("module", name) or ("script", path) from the point's command (python <app> ...)."""
    if len(command) > 2 and command[1] == "-m":
        return "module", command[2]
    return "script", command[1]


_UNSET: Any = object()


class _MainSwap:
    """Stands in for ``hydra.main`` while the app module runs."""

    def __init__(self, cfg: Any, spec: JobSpec) -> None:
        self.cfg, self.spec = cfg, spec
        self.ran, self.finished, self.code = False, False, 1

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        import importlib

        import hydra

        module = importlib.import_module("hydra.main")  # the submodule (hydra.main is the function)
        saved = (hydra.main, module.main)
        hydra.main = module.main = self._main  # type: ignore[assignment]
        try:
            yield
        finally:
            hydra.main, module.main = saved  # type: ignore[assignment]

    def _main(self, config_path: Any = _UNSET, config_name: Any = None, version_base: Any = _UNSET) -> Any:
        from hydra import version

        # As hydra.main does: the version base decides e.g. whether the job chdirs.
        version.setbase(sys.modules["hydra.main"]._UNSPECIFIED_ if version_base is _UNSET else version_base)

        def decorator(task_function: Any) -> Any:
            @functools.wraps(task_function)
            def decorated_main(cfg_passthrough: Any = None) -> Any:
                if cfg_passthrough is not None:
                    return task_function(cfg_passthrough)
                if self.ran:
                    raise RuntimeError("the app called its @hydra.main function twice")
                self.ran = True
                self.code = self.run(task_function)
                self.finished = True
                return None

            return decorated_main

        return decorator

    def run(self, task_function: Any) -> int:
        from hydra._internal.callbacks import Callbacks
        from hydra.core.utils import JobRuntime, JobStatus, run_job, setup_globals
        from hydra.types import HydraContext

        setup_globals()
        JobRuntime.instance().set("name", str(self.cfg.hydra.job.name))
        ctx = HydraContext(config_loader=None, callbacks=Callbacks(self.cfg))  # type: ignore[arg-type]
        ret = run_job(task_function=task_function, config=self.cfg, job_dir_key="hydra.sweep.dir",
                      job_subdir_key="hydra.sweep.subdir", hydra_context=ctx)
        if ret.status == JobStatus.COMPLETED:
            write_result(self.spec.result_file, status=COMPLETED, value=ret._return_value)
            return 0
        error = ret._return_value
        traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
        write_result(self.spec.result_file, status=FAILED, error=error)
        return 1


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
