"""Drives one batch of points through an executor: store, retries, results, cancel requests.

The same loop runs in the foreground launcher and in a detached supervisor, for every backend;
executors only report what happened to processes, and the runner decides what it means from
the result file each point leaves in its job dir.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from nrun_core.executors.base import Ended, Executor, Started
from nrun_core.progress import Row, View
from nrun_core.runtime.result import COMPLETED as R_COMPLETED, read_result
from nrun_core.spec import JobSpec
from nrun_core.store import (CANCELLED, COMPLETED, FAILED, LOST, PENDING, QUEUED, RUNNING, TIMEOUT,
                             TERMINAL, Store)

CANCEL_CHECK_S = 0.5


@dataclass
class Outcome:
    state: str
    value: Any = None
    error: str = ""
    traceback: str = ""
    exit_code: Optional[int] = None
    usage: Optional[Dict[str, Any]] = None  # what the point used (its result file, else the backend)


class Terminated(KeyboardInterrupt):
    """SIGTERM reached the launcher or supervisor: handled exactly like Ctrl-C."""


class Interrupted(Exception):
    """Ctrl-C or SIGTERM; the points were cancelled and recorded as such."""

    def __init__(self, why: str, exit_code: int) -> None:
        super().__init__(why)
        self.why, self.exit_code = why, exit_code


def settle(spec: JobSpec, ended: Ended) -> Outcome:
    """What a point's end means, from how its process ended and the result file it left, with
    what it used: the point's own account, else the backend's."""
    outcome = _settle(spec, ended)
    if outcome.usage is None:
        outcome.usage = ended.usage
    return outcome


def _settle(spec: JobSpec, ended: Ended) -> Outcome:
    if ended.reason == "cancelled":
        return Outcome(CANCELLED, error=ended.detail or "cancelled", exit_code=ended.exit_code)
    if ended.reason == "timeout":  # the backend's own words (e.g. Slurm's time limit) when it has them
        return Outcome(TIMEOUT, error=ended.detail or f"exceeded hydra.launcher.timeout_s={spec.timeout_s}",
                       exit_code=ended.exit_code)
    if ended.reason == "lost":
        return Outcome(LOST, error=ended.detail or "lost", exit_code=ended.exit_code)
    result = read_result(spec.result_file, expect=spec.identity)
    if result and result["status"] == R_COMPLETED and ended.exit_code in (0, None):
        return Outcome(COMPLETED, value=result.get("value"), exit_code=ended.exit_code, usage=result.get("usage"))
    if result and result["status"] != R_COMPLETED:
        return Outcome(FAILED, error=f"{result['error_type']}: {result['error']}",
                       traceback=result.get("traceback", ""), exit_code=ended.exit_code, usage=result.get("usage"))
    how = ended.detail or f"exited with code {ended.exit_code}"
    return Outcome(FAILED, error=f"{how}, before reporting a result", exit_code=ended.exit_code)


class Runner:
    def __init__(self, store: Store, sweep_id: str, executor: Executor, specs: List[JobSpec],
                 rows: Dict[int, Row], view: View, retries: int = 0, logs: Any = None) -> None:
        self.store, self.sweep_id, self.executor = store, sweep_id, executor
        self.specs = {s.index: s for s in specs}
        self.rows, self.view, self.retries = rows, view, retries
        self.logs = logs  # a livelogs.LogTail when the points' output is streamed here, else None
        self.outcomes: Dict[int, Outcome] = {}
        # Attempts already made (a detached supervisor continues what the launcher submitted)
        self._attempts: Dict[int, int] = {i: rows[i].attempt if i in rows else 0 for i in self.specs}
        self._retry_at: Dict[int, float] = {}   # point → when its next attempt starts

    def submit(self) -> None:
        """Hand every point to the executor and record what it reports at once (the backend's
        ids): Ctrl-C and SIGTERM wait until then, so no submitted point goes unrecorded."""
        try:
            with deferred_signals():
                for spec in self.specs.values():
                    _clear_result(spec)
                self.executor.start(list(self.specs.values()))
                with self.store.batch():  # one transaction for a whole poll's events
                    for event in self.executor.poll(timeout=0):
                        self._apply(event)
        except KeyboardInterrupt as exc:
            self.stop(exc)

    def run(self, submitted: bool = False) -> Dict[int, Outcome]:
        if not submitted:
            self.submit()
        next_check = time.monotonic() + CANCEL_CHECK_S
        try:
            while self.executor.busy() or self._retry_at:
                self._start_due_retries()
                if self.executor.busy():
                    events = self.executor.poll(timeout=self._poll_timeout())
                else:  # only retries waiting for their time
                    events = []
                    time.sleep(self._poll_timeout())
                with self.store.batch():
                    for event in events:
                        self._apply(event)
                if time.monotonic() >= next_check:
                    self._honour_cancel_requests()
                    next_check = time.monotonic() + CANCEL_CHECK_S
                if self.logs is not None:
                    self.logs.pump()
                self.view.tick()
            self.executor.finish()
        except KeyboardInterrupt as exc:
            self.stop(exc)
        line = usage_summary([o.usage for o in self.outcomes.values()])
        if line:
            self.view.message(f"[nrun] sweep {self.sweep_id}: {line}")
        return self.outcomes

    def _apply(self, event: Any) -> None:
        row = self.rows[event.idx]
        if isinstance(event, Started):
            if event.queued or row.state != QUEUED:  # a new attempt (a queued one starting is not)
                self._attempts[event.idx] += 1
            row.attempt = self._attempts[event.idx]
            if event.queued:  # at the backend, not running: no clock yet
                row.state, row.started, row.ended, row.detail = QUEUED, None, None, ""
                self.store.update_point(self.sweep_id, event.idx, state=QUEUED, backend_id=event.backend_id,
                                        attempts=row.attempt, detail=f"queued as {event.backend_id}")
            else:
                row.state, row.started, row.ended, row.detail = RUNNING, event.time, None, ""
                self.store.update_point(self.sweep_id, event.idx, state=RUNNING, backend_id=event.backend_id,
                                        pid=event.pid, pid_start=event.pid_start, started=row.started,
                                        attempts=row.attempt, detail=f"started as {event.backend_id}")
                if self.logs is not None:
                    self.logs.watch(self.specs[event.idx], event.backend_id)
        elif isinstance(event, Ended):
            spec = self.specs[event.idx]
            if self.logs is not None and (row.state == RUNNING or event.reason == "exited"):
                self.logs.drain(spec)  # its last lines, before the line saying how it ended
            if row.state not in (RUNNING, QUEUED):  # ended without ever starting (e.g. could not be spawned)
                self._attempts[event.idx] += 1
                row.attempt = self._attempts[event.idx]
            outcome = settle(spec, event)
            row.ended = event.time
            if outcome.state in (FAILED, TIMEOUT, LOST) and self._attempts[event.idx] <= self.retries:
                delay = retry_delay(self._attempts[event.idx])
                row.state = PENDING
                row.detail = f"retry {self._attempts[event.idx]}/{self.retries} in {delay:g}s: {outcome.error}"
                self.store.update_point(self.sweep_id, event.idx, state=PENDING, exit_code=outcome.exit_code,
                                        error=outcome.error, detail=row.detail, usage=outcome.usage)
                self.view.changed(row)
                self._retry_at[event.idx] = time.monotonic() + delay
                return
            self.outcomes[event.idx] = outcome
            row.state = outcome.state
            row.detail = _short(repr(outcome.value)) if outcome.state == COMPLETED else _short(outcome.error)
            self.store.update_point(
                self.sweep_id, event.idx, state=outcome.state, exit_code=outcome.exit_code,
                ended=row.ended, error=(outcome.error + ("\n" + outcome.traceback if outcome.traceback else "")) or None,
                value_repr=_short(repr(outcome.value), 500) if outcome.state == COMPLETED else None,
                usage=outcome.usage, detail=outcome.error)
        self.view.changed(row)

    def stop(self, exc: KeyboardInterrupt) -> None:
        """Ctrl-C or SIGTERM: cancel what was started, record it, raise Interrupted."""
        why = "SIGTERM" if isinstance(exc, Terminated) else "Ctrl-C"
        self._interrupt(why)
        try:
            self.executor.finish()
        except KeyboardInterrupt:
            pass
        raise Interrupted(why, 143 if why == "SIGTERM" else 130) from None

    def _start_due_retries(self) -> None:
        now = time.monotonic()
        due = [i for i, t in self._retry_at.items() if t <= now]
        for idx in due:
            del self._retry_at[idx]
            _clear_result(self.specs[idx])
        if due:
            self.executor.start([self.specs[i] for i in due])

    def _poll_timeout(self) -> float:
        if not self._retry_at:
            return 0.25
        return max(0.0, min(0.25, min(self._retry_at.values()) - time.monotonic()))

    def _cancel_retries(self, indices: Optional[List[int]], why: str) -> None:
        for idx in [i for i in self._retry_at if indices is None or i in indices]:
            del self._retry_at[idx]
            self._apply(Ended(idx=idx, reason="cancelled", detail=f"cancelled by {why} before its retry"))

    def _honour_cancel_requests(self) -> None:
        """`nrun cancel` from another shell marks points in the store; stop them here."""
        wanted = [i for i in self.store.cancel_requests(self.sweep_id)
                  if i in self.specs and i not in self.outcomes]
        if wanted:
            self._cancel_retries(wanted, "nrun cancel")
            self.executor.cancel(wanted)

    def _interrupt(self, why: str) -> None:
        self.view.message(f"[nrun] {why}: cancelling the points of this sweep (Ctrl-C again to stop waiting)")
        self._cancel_retries(None, why)
        self.executor.cancel(None)
        try:
            while self.executor.busy():
                for event in self.executor.poll(timeout=0.25):
                    if isinstance(event, Ended) and (event.reason == "cancelled" or
                                                     (event.reason == "exited" and event.exit_code != 0)):
                        event.reason = "cancelled"
                        event.detail = f"cancelled by {why}" + (f" ({event.detail})" if event.detail else "")
                    self._apply(event)
                self.view.tick()
        except KeyboardInterrupt:
            pass
        for idx, row in self.rows.items():
            if idx in self.specs and row.state not in TERMINAL:
                row.state = CANCELLED
                self.store.update_point(self.sweep_id, idx, state=CANCELLED, ended=time.time(),
                                        detail=f"cancelled by {why}")


class deferred_signals:
    """SIGINT and SIGTERM held back for a critical section (a submission and its record), then
    delivered: the handlers are swapped for recorders, not blocked, because other threads (the
    Docker executor's) would receive a blocked signal instead. Main thread only."""

    def __enter__(self) -> "deferred_signals":
        self.got: List[int] = []
        self.saved: Dict[int, Any] = {}
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.saved[sig] = signal.signal(sig, lambda num, frame: self.got.append(num))
        except ValueError:  # not the main thread: nothing to defer
            pass
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)
        if self.got:
            os.kill(os.getpid(), self.got[0])  # now, with the real handler in place


def usage_summary(usages: List[Optional[Dict[str, Any]]]) -> str:
    """'16 points, 12.3 CPU-s, peak RSS 310 MB' over the points that reported what they used."""
    known = [u for u in usages if u]
    if not known:
        return ""
    cpu = sum(float(u.get("cpu_s") or 0) for u in known)
    rss = max(int(u.get("max_rss") or 0) for u in known)
    text = f"{len(usages)} points, {cpu:.1f} CPU-s, peak RSS {human_bytes(rss)}"
    gpu = [int(u["gpu_mem"]) for u in known if u.get("gpu_mem")]
    if gpu:
        text += f", peak GPU memory {human_bytes(max(gpu))}"
    if len(known) < len(usages):
        text += f" ({len(usages) - len(known)} point(s) reported nothing)"
    return text


def human_bytes(n: float) -> str:
    """310 MB, 1.2 GB: decimal units, as `df -H` prints them."""
    for unit in ("B", "kB", "MB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}"
        n /= 1000.0
    return f"{n:.1f} GB"


def retry_delay(attempt: int) -> float:
    """Seconds before the next attempt: 1, 2, 4, ... up to a minute (a failing dependency gets
    time to come back; a hopeless point does not burn its retries in a second)."""
    return float(min(60, 2 ** max(0, attempt - 1)))


def _clear_result(spec: JobSpec) -> None:
    try:
        os.unlink(spec.result_file)
    except FileNotFoundError:
        pass


def _short(text: str, limit: int = 80) -> str:
    text = text.strip().splitlines()[-1] if text.strip() else ""
    return text if len(text) <= limit else text[: limit - 3] + "..."
