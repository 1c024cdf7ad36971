"""Drives one batch of points through an executor: store, retries, results, cancel requests.

The same loop runs in the foreground launcher and in a detached supervisor, for every backend;
executors only report what happened to processes, and the runner decides what it means from
the result file each point leaves in its job dir.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from nrun_core.executors.base import Ended, Executor, Started
from nrun_core.progress import Row, View
from nrun_core.runtime.result import COMPLETED as R_COMPLETED, read_result
from nrun_core.spec import JobSpec
from nrun_core.store import (CANCELLED, COMPLETED, FAILED, LOST, PENDING, RUNNING, TIMEOUT,
                             TERMINAL, Store)

CANCEL_CHECK_S = 0.5


@dataclass
class Outcome:
    state: str
    value: Any = None
    error: str = ""
    traceback: str = ""
    exit_code: Optional[int] = None


class Interrupted(Exception):
    """The user pressed Ctrl-C; the points were cancelled and recorded as such."""


def settle(spec: JobSpec, ended: Ended) -> Outcome:
    """What a point's end means, from how its process ended and the result file it left."""
    if ended.reason == "cancelled":
        return Outcome(CANCELLED, error=ended.detail or "cancelled", exit_code=ended.exit_code)
    if ended.reason == "timeout":  # the backend's own words (e.g. Slurm's time limit) when it has them
        return Outcome(TIMEOUT, error=ended.detail or f"exceeded hydra.launcher.timeout_s={spec.timeout_s}",
                       exit_code=ended.exit_code)
    if ended.reason == "lost":
        return Outcome(LOST, error=ended.detail or "lost", exit_code=ended.exit_code)
    result = read_result(spec.result_file)
    if result and result["status"] == R_COMPLETED and ended.exit_code in (0, None):
        return Outcome(COMPLETED, value=result.get("value"), exit_code=ended.exit_code)
    if result and result["status"] != R_COMPLETED:
        return Outcome(FAILED, error=f"{result['error_type']}: {result['error']}",
                       traceback=result.get("traceback", ""), exit_code=ended.exit_code)
    how = ended.detail or f"exited with code {ended.exit_code}"
    return Outcome(FAILED, error=f"{how}, before reporting a result", exit_code=ended.exit_code)


class Runner:
    def __init__(self, store: Store, sweep_id: str, executor: Executor, specs: List[JobSpec],
                 rows: Dict[int, Row], view: View, retries: int = 0) -> None:
        self.store, self.sweep_id, self.executor = store, sweep_id, executor
        self.specs = {s.index: s for s in specs}
        self.rows, self.view, self.retries = rows, view, retries
        self.outcomes: Dict[int, Outcome] = {}
        self._attempts: Dict[int, int] = {i: 0 for i in self.specs}

    def submit(self) -> None:
        for spec in self.specs.values():
            _clear_result(spec)
        self.executor.start(list(self.specs.values()))

    def run(self, submitted: bool = False) -> Dict[int, Outcome]:
        if not submitted:
            self.submit()
        next_check = time.monotonic() + CANCEL_CHECK_S
        try:
            while self.executor.busy():
                for event in self.executor.poll(timeout=0.25):
                    self._apply(event)
                if time.monotonic() >= next_check:
                    self._honour_cancel_requests()
                    next_check = time.monotonic() + CANCEL_CHECK_S
                self.view.tick()
        except KeyboardInterrupt:
            self._interrupt()
            raise Interrupted() from None
        return self.outcomes

    def _apply(self, event: Any) -> None:
        row = self.rows[event.idx]
        if isinstance(event, Started):
            self._attempts[event.idx] += 1
            row.state, row.started, row.ended, row.detail = RUNNING, event.time, None, ""
            row.attempt = self._attempts[event.idx]
            self.store.update_point(self.sweep_id, event.idx, state=RUNNING, backend_id=event.backend_id,
                                    pid=event.pid, pid_start=event.pid_start, started=row.started,
                                    attempts=row.attempt, detail=f"started as {event.backend_id}")
        elif isinstance(event, Ended):
            spec = self.specs[event.idx]
            if row.state != RUNNING:  # ended without ever starting (e.g. could not be spawned)
                self._attempts[event.idx] += 1
                row.attempt = self._attempts[event.idx]
            outcome = settle(spec, event)
            row.ended = event.time
            if outcome.state in (FAILED, TIMEOUT) and self._attempts[event.idx] <= self.retries:
                row.state, row.detail = PENDING, f"retry {self._attempts[event.idx]}/{self.retries}: {outcome.error}"
                self.store.update_point(self.sweep_id, event.idx, state=PENDING, exit_code=outcome.exit_code,
                                        error=outcome.error, detail=row.detail)
                self.view.changed(row)
                _clear_result(spec)
                self.executor.start([spec])
                return
            self.outcomes[event.idx] = outcome
            row.state = outcome.state
            row.detail = _short(repr(outcome.value)) if outcome.state == COMPLETED else _short(outcome.error)
            self.store.update_point(
                self.sweep_id, event.idx, state=outcome.state, exit_code=outcome.exit_code,
                ended=row.ended, error=(outcome.error + ("\n" + outcome.traceback if outcome.traceback else "")) or None,
                value_repr=_short(repr(outcome.value), 500) if outcome.state == COMPLETED else None,
                detail=outcome.error)
        self.view.changed(row)

    def _honour_cancel_requests(self) -> None:
        """`nrun cancel` from another shell marks points in the store; stop them here."""
        wanted = [p["idx"] for p in self.store.points(self.sweep_id)
                  if p["cancel_requested"] and p["idx"] in self.specs and p["idx"] not in self.outcomes]
        if wanted:
            self.executor.cancel(wanted)

    def _interrupt(self) -> None:
        self.view.message("[nrun] Ctrl-C: cancelling the points of this sweep (Ctrl-C again to stop waiting)")
        self.executor.cancel(None)
        try:
            while self.executor.busy():
                for event in self.executor.poll(timeout=0.25):
                    if isinstance(event, Ended) and event.reason == "exited" and event.exit_code != 0:
                        event.reason = "cancelled"
                        event.detail = event.detail or "cancelled by Ctrl-C"
                    self._apply(event)
                self.view.tick()
        except KeyboardInterrupt:
            pass
        for idx, row in self.rows.items():
            if idx in self.specs and row.state not in TERMINAL:
                row.state = CANCELLED
                self.store.update_point(self.sweep_id, idx, state=CANCELLED, ended=time.time(),
                                        detail="cancelled by Ctrl-C")


def _clear_result(spec: JobSpec) -> None:
    try:
        os.unlink(spec.result_file)
    except FileNotFoundError:
        pass


def _short(text: str, limit: int = 80) -> str:
    text = text.strip().splitlines()[-1] if text.strip() else ""
    return text if len(text) <= limit else text[: limit - 3] + "..."
