"""Several sweep points in one warm interpreter: the pack runner of a Slurm array task.

A fresh Python per point (interpreter, hydra, omegaconf, the app's imports) costs far more than
a short point itself. A pack pays it once: this process imports Hydra and loads each distinct
task function once, then forks one child per point, one after the other, as nrun_local's fork
mode does. Each child is the point: its own process group and subreaper, its own environment,
cwd, stdout.log/stderr.log in its job dir and result file, the point runtime's own ``run_point``.

Per point the runner also keeps, in the point's nrun dir:
- ``pack.json``: when the point started and how it ended (exit code; ``exited``, ``timeout`` or
  ``cancelled``), written atomically; the launcher reads it to report each point on its own
  while the array task still runs. A point that already has an end there (a requeued pack) is
  not run again.
- ``cancel``: a marker anyone may create (``nrun cancel SWEEP/3``): a point not started yet is
  skipped, a running one gets SIGTERM on its process group and everything it started, then
  SIGKILL after ``GRACE_S``; the pack goes on with its next point.
- ``timeout_s``: the runner stops a point at its own limit the same way (reason ``timeout``).
SIGTERM to the runner (scancel of the array task) is passed to the running point's group
before the runner itself ends; Slurm ends whatever is left.
"""

from __future__ import annotations

import gc
import json
import os
import select
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from nrun_core.runtime import point as rt

STATUS_FILE = "pack.json"
CANCEL_FILE = "cancel"
GRACE_S = 5.0
CHECK_S = 0.2        # how often a running point's cancel marker and deadline are looked at
EXITED, TIMEOUT, CANCELLED = "exited", "timeout", "cancelled"


@dataclass
class PackPoint:
    """One point of a pack, with every path as this machine sees it."""

    index: int
    payload_file: str
    nrun_dir: str
    stdout: str
    stderr: str
    cwd: str
    env: Dict[str, str] = field(default_factory=dict)   # the point's own variables (NRUN_*, env)
    timeout_s: Optional[float] = None

    @property
    def status_file(self) -> str:
        return os.path.join(self.nrun_dir, STATUS_FILE)

    @property
    def cancel_file(self) -> str:
        return os.path.join(self.nrun_dir, CANCEL_FILE)


def read_status(nrun_dir: str) -> Optional[Dict[str, Any]]:
    """A point's pack record (None before the pack reached it)."""
    try:
        with open(os.path.join(nrun_dir, STATUS_FILE)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def run_pack(points: Sequence[PackPoint]) -> List[int]:
    """Run the points one after the other, each in a fork of this process; the indices of the
    points that did not end with exit code 0 (failed, timed out or cancelled)."""
    failed: List[int] = []
    tasks: Dict[str, Any] = {}
    _warm()
    saved_main = sys.modules.get("__main__")
    saved_path = sys.path[:]
    previous = signal.getsignal(signal.SIGTERM)
    current: Dict[str, int] = {}

    def forward(signum: int, frame: Any) -> None:  # scancel: the running point first, then us
        pid = current.get("pid")
        if pid:
            _killpg(pid, signal.SIGTERM)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    rt.become_subreaper()
    try:
        for p in points:
            done = read_status(p.nrun_dir)
            if done and "ended" in done:  # requeued pack: this point already ran
                if done.get("exit_code") != 0:
                    failed.append(p.index)
                continue
            if os.path.exists(p.cancel_file):
                _write_status(p, {"started": None, "ended": time.time(), "exit_code": None, "reason": CANCELLED,
                                  "detail": "cancelled before it started (nrun cancel)"})
                failed.append(p.index)
                continue
            try:
                payload = _read_payload(p.payload_file)
                task = _task(tasks, payload, p)
            except Exception as exc:  # the point cannot start: say why in its result file
                _fail_unstarted(p, exc)
                failed.append(p.index)
                continue
            code, reason, detail, started = _run_one(p, payload, task, current)
            _write_status(p, {"started": started, "ended": time.time(), "exit_code": code, "reason": reason,
                              "detail": detail})
            if code != 0:
                failed.append(p.index)
    finally:
        signal.signal(signal.SIGTERM, previous)
        sys.path[:] = saved_path
        if saved_main is not None:
            sys.modules["__main__"] = saved_main
    return failed


# -- one point -------------------------------------------------------------------------------
def _run_one(p: PackPoint, payload: Dict[str, Any], task: Any, current: Dict[str, int]) -> "tuple":
    os.makedirs(p.nrun_dir, exist_ok=True)
    started = time.time()
    _write_status(p, {"started": started})
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # ---- child: never returns
        _child(p, payload, task)
    current["pid"] = pid
    try:
        return (*_watch(p, pid), started)
    finally:
        current.pop("pid", None)
        rt.end_leftovers()  # orphans of a killed point came back to us (a subreaper): end them


def _child(p: PackPoint, payload: Dict[str, Any], task: Any) -> None:
    code = 70
    try:
        gc.freeze()  # the pack's heap stays shared: the child's collector never walks (copies) it
        os.setpgid(0, 0)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)  # Slurm's time-limit warning is the pack's
        null = os.open(os.devnull, os.O_RDONLY)
        out = os.open(p.stdout, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        err = os.open(p.stderr, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        for fd, target in ((null, 0), (out, 1), (err, 2)):
            os.dup2(fd, target)
            os.close(fd)
        sys.stdout = open(1, "w", buffering=1, closefd=False)
        sys.stderr = open(2, "w", buffering=1, closefd=False)
        os.environ.update(p.env)
        os.chdir(p.cwd)
        rt.become_subreaper()
        start = getattr(rt, "mark_start", None)  # the point's clock for its usage record
        if start is not None:
            start()
        _threads_in_fork()
        code = _run_payload(payload, task, p)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException as exc:  # the point could not run: its result file says why
        try:
            traceback.print_exc()
            _fail_result(p, payload, exc)
        except BaseException:
            pass
        code = 1
    finally:
        try:
            rt.end_leftovers()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _run_payload(payload: Dict[str, Any], task: Any, p: PackPoint) -> int:
    """``point.run_payload`` with the task function this pack already loaded."""
    env = os.environ
    code_dir = env.get("NRUN_CODE_DIR") or payload["code_root"]
    result_file = env.get("NRUN_RESULT_FILE") or payload["result_file"]
    rt._set_version_base(payload.get("version_base"))
    cfg = rt.load_config(payload["config"])
    rt._place(cfg, payload, code_dir)
    return rt.run_point(task, cfg, result_file=result_file, ident=payload.get("identity"),
                        task_name=payload.get("task_name"))


def _watch(p: PackPoint, pid: int) -> "tuple":
    """Wait for the child; stop it on its cancel marker or at its timeout. (exit code, reason, detail)"""
    deadline = time.monotonic() + p.timeout_s if p.timeout_s else None
    fd = _pidfd(pid)
    stop: Optional[str] = None
    kill_at: Optional[float] = None
    tree: List[int] = []
    try:
        while True:
            got, status = os.waitpid(pid, os.WNOHANG)
            if got:
                break
            if fd is not None:
                select.select([fd], [], [], CHECK_S)
            else:
                time.sleep(0.02)
            if stop is None:
                if os.path.exists(p.cancel_file):
                    stop = CANCELLED
                elif deadline is not None and time.monotonic() >= deadline:
                    stop = TIMEOUT
                if stop is not None:
                    tree = rt.descendants(pid)
                    _signal_all(pid, tree, signal.SIGTERM)
                    kill_at = time.monotonic() + GRACE_S
            elif kill_at is not None and time.monotonic() >= kill_at:
                _signal_all(pid, tree + rt.descendants(pid), signal.SIGKILL)
                kill_at = None
    finally:
        if fd is not None:
            os.close(fd)
    code = os.waitstatus_to_exitcode(status)
    if stop is not None:  # what it left running came back to the pack (a subreaper): end_leftovers
        why = ("cancelled (nrun cancel)" if stop == CANCELLED else
               f"exceeded hydra.launcher.timeout_s={p.timeout_s:g}")
        return code, stop, why
    return code, EXITED, ""


# -- helpers -----------------------------------------------------------------------------------
def _warm() -> None:
    """What every point needs, imported once before the first fork."""
    import hydra.core.utils  # noqa: F401
    import omegaconf  # noqa: F401
    from hydra._internal import callbacks  # noqa: F401


def _task(cache: Dict[str, Any], payload: Dict[str, Any], p: PackPoint) -> Any:
    code_dir = p.env.get("NRUN_CODE_DIR") or payload["code_root"]
    key = json.dumps([payload["task"], code_dir], sort_keys=True)
    if key not in cache:
        rt._set_version_base(payload.get("version_base"))
        cache[key] = rt.load_task(payload["task"], code_dir)
    return cache[key]


def _read_payload(path: str) -> Dict[str, Any]:
    with open(path) as f:
        payload = json.load(f)
    if payload.get("format") != rt.FORMAT:
        raise RuntimeError(f"{path} has payload format {payload.get('format')}, this runtime reads "
                           f"{rt.FORMAT}: the launcher and the nodes run different nrun versions")
    return payload


def _fail_unstarted(p: PackPoint, exc: BaseException) -> None:
    try:
        with open(p.stderr, "a") as f:
            f.write(f"nrun: point {p.index} could not start in its pack: {exc!r}\n"
                    + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    except OSError:
        pass
    try:
        payload = _read_payload(p.payload_file)
    except Exception:
        payload = {}
    _fail_result(p, payload, exc)
    _write_status(p, {"started": None, "ended": time.time(), "exit_code": 1, "reason": EXITED,
                      "detail": f"could not start: {exc!r}"})


def _fail_result(p: PackPoint, payload: Dict[str, Any], exc: BaseException) -> None:
    result = p.env.get("NRUN_RESULT_FILE") or payload.get("result_file")
    if result:
        error = exc if isinstance(exc, Exception) else RuntimeError(f"the point exited: {exc!r}")
        rt.write_result(result, status=rt.FAILED, error=error, ident=payload.get("identity"))


def _write_status(p: PackPoint, record: Dict[str, Any]) -> None:
    os.makedirs(p.nrun_dir, exist_ok=True)
    tmp = f"{p.status_file}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(record, f)
    os.replace(tmp, p.status_file)


def _threads_in_fork() -> None:
    """torch, if the app imported it in the pack, takes the point's OMP_NUM_THREADS now."""
    try:
        from nrun_core.threads import apply_in_fork
    except ImportError:  # pragma: no cover - older nrun on the nodes
        return
    apply_in_fork()


def _pidfd(pid: int) -> Optional[int]:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):  # pragma: no cover - old kernel: short sleeps instead
        return None


def _signal_all(pid: int, tree: Sequence[int], sig: int) -> None:
    _killpg(pid, sig)
    for q in tree:
        try:
            os.kill(q, sig)
        except ProcessLookupError:
            pass


def _killpg(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
