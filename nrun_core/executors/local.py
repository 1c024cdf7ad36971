"""nrun_local: each point an isolated process on this machine, at most ``max_parallel`` at once.

Two ways to run a point:
- fork: a forked child of the launcher runs the task function in-process (no new interpreter,
  no re-import, no re-composition: the cheapest way there is), in its own process group, with
  its stdout/stderr in files. A segfault, ``os._exit`` or an OOM kill ends only that child.
- command: ``python app.py <overrides>`` (wrapped by torchrun, or run from a snapshot).
Timeouts and cancels TERM the point's process group, then KILL it and every process still
tagged with the point's token after a grace period.
"""

from __future__ import annotations

import collections
import os
import select
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Deque, Dict, List, Mapping, Optional, Sequence

from nrun_core import procs
from nrun_core.errors import ConfigError
from nrun_core.executors.base import Ended, Event, Executor, Request, Started, split_queue
from nrun_core.spec import JobSpec

GRACE_S = 5.0


def default_parallelism() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


@dataclass
class _Proc:
    spec: JobSpec
    pid: int
    token: str
    t0: float
    deadline: Optional[float]
    reason: Optional[str] = None        # timeout | cancelled, once we decided to stop it
    kill_at: Optional[float] = None


@dataclass
class _Wakeup:
    """SIGCHLD → a byte in a pipe, so poll() sleeps in select() and wakes when a child ends."""

    r: int = -1
    w: int = -1
    old_fd: int = -1
    old_handler: Any = None
    active: bool = False

    def install(self) -> None:
        if self.active:
            return
        self.r, self.w = os.pipe()
        os.set_blocking(self.r, False)
        os.set_blocking(self.w, False)
        try:
            self.old_fd = signal.set_wakeup_fd(self.w, warn_on_full_buffer=False)
            self.old_handler = signal.signal(signal.SIGCHLD, lambda *_: None)
            self.active = True
        except ValueError:  # not the main thread: fall back to short sleeps
            os.close(self.r)
            os.close(self.w)
            self.r = self.w = -1

    def wait(self, timeout: float) -> None:
        if self.r < 0:
            time.sleep(min(timeout, 0.05))
            return
        ready, _, _ = select.select([self.r], [], [], max(0.0, timeout))
        if ready:
            try:
                while os.read(self.r, 512):
                    pass
            except BlockingIOError:
                pass

    def remove(self) -> None:
        if not self.active:
            return
        signal.set_wakeup_fd(self.old_fd)
        signal.signal(signal.SIGCHLD, self.old_handler or signal.SIG_DFL)
        os.close(self.r)
        os.close(self.w)
        self.active = False


class LocalExecutor(Executor):
    name = "local"

    def __init__(self, conf: Mapping[str, Any], *,
                 run_in_process: Optional[Callable[[JobSpec], int]] = None) -> None:
        super().__init__(conf)
        self.max_parallel = int(conf.get("max_parallel") or default_parallelism())
        self.run_in_process = run_in_process
        self.fork = run_in_process is not None
        self._queue: Deque[JobSpec] = collections.deque()
        self._running: Dict[int, _Proc] = {}
        self._attempts: Dict[int, int] = collections.Counter()
        self._cancelled_queued: List[int] = []
        self._wakeup = _Wakeup()

    # -- contract ----------------------------------------------------------------------
    def validate(self, specs: Sequence[JobSpec]) -> None:
        if self.max_parallel < 1:
            raise ConfigError(f"hydra.launcher.max_parallel={self.max_parallel}: must be >= 1 "
                              "(or null for one point per core)")
        for spec in specs:
            if spec.nodes != 1:
                raise ConfigError(f"hydra.launcher.nodes={spec.nodes}: nrun_local runs on this one "
                                  "machine; use nodes=1 (multi-node needs nrun_slurm, nrun_docker, ...)")

    def render(self, specs: Sequence[JobSpec]) -> List[Request]:
        from nrun_core.shell import join

        mode = "fork (in-process, equivalent to the command below)" if self.fork else "command"
        out = []
        for s in specs:
            env = "".join(f"  {k}={v}\n" for k, v in sorted(s.env.items()))
            secrets = "".join(f"  {k}=<from the launching shell>\n" for k in s.secret_env)
            out.append(Request(
                title=f"point {s.index}",
                text=(f"mode: {mode}\ncwd: {s.workdir}\nstdout: {s.stdout}\nstderr: {s.stderr}\n"
                      f"timeout_s: {s.timeout_s}\nenv:\n{env}{secrets}command:\n  {join(s.command)}\n")))
        return out

    def start(self, specs: Sequence[JobSpec]) -> None:
        self._wakeup.install()
        self._queue.extend(specs)

    def busy(self) -> bool:
        return bool(self._queue or self._running)

    def poll(self, timeout: float) -> List[Event]:
        events: List[Event] = self._start_queued()
        now = time.monotonic()
        wake_at = [p.deadline for p in self._running.values() if p.deadline and not p.reason]
        wake_at += [p.kill_at for p in self._running.values() if p.kill_at]
        wait = min([timeout] + [t - now for t in wake_at])
        if self._running:
            self._wakeup.wait(wait)  # a child that already ended has left a byte: no sleep
        self._reap(events)
        self._enforce_deadlines()
        events += self._start_queued()
        if not self.busy():
            self._wakeup.remove()
        return events

    def cancel(self, indices: Optional[Sequence[int]] = None) -> None:
        wanted = None if indices is None else set(indices)
        kept, cancelled = split_queue(self._queue, wanted)
        self._queue = collections.deque(kept)
        self._cancelled_queued += cancelled
        for proc in self._running.values():
            if (wanted is None or proc.spec.index in wanted) and proc.reason is None:
                self._stop(proc, "cancelled")

    # -- internals ---------------------------------------------------------------------
    def _start_queued(self) -> List[Event]:
        events: List[Event] = []
        for idx in self._cancelled_queued:
            events.append(Ended(idx=idx, reason="cancelled", detail="cancelled before it started"))
        self._cancelled_queued = []
        while self._queue and len(self._running) < self.max_parallel:
            spec = self._queue.popleft()
            self._attempts[spec.index] += 1
            token = f"{spec.sweep_id}:{spec.index}:{self._attempts[spec.index]}"
            try:
                pid = self._spawn(spec, token)
            except OSError as exc:
                events.append(Ended(idx=spec.index, reason="exited", exit_code=None,
                                    detail=f"could not start: {exc}"))
                continue
            now = time.monotonic()
            self._running[pid] = _Proc(spec=spec, pid=pid, token=token, t0=now,
                                       deadline=now + spec.timeout_s if spec.timeout_s else None)
            events.append(Started(idx=spec.index, backend_id=str(pid), pid=pid,
                                  pid_start=procs.start_time(pid)))
        return events

    def _spawn(self, spec: JobSpec, token: str) -> int:
        os.makedirs(spec.nrun_dir, exist_ok=True)
        env = {**spec.env, **_secret_values(spec.secret_env), "NRUN_TOKEN": token,
               "NRUN_SWEEP_ID": spec.sweep_id, "NRUN_POINT": str(spec.index),
               "NRUN_RESULT_FILE": spec.result_file, "NRUN_JOB_DIR": spec.job_dir}
        out = os.open(spec.stdout, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        err = os.open(spec.stderr, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid:
            os.close(out)
            os.close(err)
            return pid
        # ---- child: never returns -------------------------------------------------------
        code = 70
        try:
            os.setpgid(0, 0)
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD, signal.SIGPIPE):
                signal.signal(sig, signal.SIG_DFL)
            signal.set_wakeup_fd(-1)
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(out, 1)
            os.dup2(err, 2)
            os.environ.update(env)
            if self.fork:
                # Fresh text streams: the parent's may hold locks taken by a thread at fork time.
                sys.stdout = open(1, "w", buffering=1, closefd=False)
                sys.stderr = open(2, "w", buffering=1, closefd=False)
                assert self.run_in_process is not None
                code = self.run_in_process(spec)
            else:
                os.chdir(spec.workdir)
                os.execvpe(spec.command[0], spec.command, os.environ)
        except BaseException as exc:  # report anything, then leave without unwinding the parent's stack
            try:
                os.write(2, f"nrun: point {spec.index} could not run: {exc!r}\n".encode())
            except OSError:
                pass
            code = 127 if not self.fork else 70
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)
        raise AssertionError("unreachable")  # pragma: no cover

    def _reap(self, events: List[Event]) -> None:
        """Collect ended children, without blocking."""
        for pid in list(self._running):
            try:
                got, status, _usage = os.wait4(pid, os.WNOHANG)
            except ChildProcessError:
                got, status = pid, 0
            if got == 0:
                continue
            proc = self._running.pop(pid)
            if proc.reason:  # the group may hold survivors (torchrun workers): end them
                procs.kill_tagged(proc.token)
            code = os.waitstatus_to_exitcode(status)
            detail = "" if proc.reason == "timeout" else procs.describe_exit(code, oom_hint=True)
            events.append(Ended(idx=proc.spec.index, reason=proc.reason or "exited", exit_code=code,
                                detail=detail))

    def _enforce_deadlines(self) -> None:
        now = time.monotonic()
        for proc in self._running.values():
            if proc.deadline and proc.reason is None and now >= proc.deadline:
                self._stop(proc, "timeout")
            elif proc.kill_at and now >= proc.kill_at:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                procs.kill_tagged(proc.token)
                proc.kill_at = None

    def _stop(self, proc: _Proc, reason: str) -> None:
        proc.reason = reason
        proc.kill_at = time.monotonic() + GRACE_S
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    # -- from another shell --------------------------------------------------------------
    @classmethod
    def cancel_recorded(cls, sweep: Dict[str, Any], points: List[Dict[str, Any]]) -> List[int]:
        stopped = []
        for p in points:
            if p["pid"] and procs.alive(p["pid"], p["pid_start"]):
                procs.kill_group(p["pid"], grace_s=GRACE_S)
                stopped.append(p["idx"])
        return stopped

    @classmethod
    def probe_recorded(cls, sweep: Dict[str, Any], point: Dict[str, Any]) -> Optional[bool]:
        if not point["pid"]:
            return None
        return procs.alive(point["pid"], point["pid_start"])


def _secret_values(names: Sequence[str]) -> Dict[str, str]:
    return {n: os.environ[n] for n in names if n in os.environ}
