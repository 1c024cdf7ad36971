"""The launcher-side queue of executors that start points themselves (local processes, Docker
containers, SSH hosts): at most ``max_parallel`` at once, ``timeout_s`` per point counted from
its start, cancel of queued and running points, and the TERM → grace → KILL of a stopped point.

A subclass says how to launch a point, how to signal it, and how to wait for what its backend
reports; everything about slots, timers and cancel reasons lives here once.
"""

from __future__ import annotations

import collections
import os
import queue
import time
from abc import abstractmethod
from dataclasses import dataclass, field
from typing import Any, Deque, Dict, List, Optional, Sequence

from nrun_core.errors import NrunError
from nrun_core.executors.base import Ended, Event, Executor, Started
from nrun_core.spec import JobSpec

GRACE_S = 5.0


def drain(msgs: "queue.Queue[Any]", timeout: float) -> List[Any]:
    """What backend threads reported: wait at most ``timeout`` for the first message, then take
    every one already there (executors whose threads talk to the engine or hosts)."""
    try:
        out = [msgs.get(timeout=timeout)]
    except queue.Empty:
        return []
    while True:
        try:
            out.append(msgs.get_nowait())
        except queue.Empty:
            return out


def default_parallelism() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


@dataclass
class Slot:
    """One attempt of one point, from launch until its end is reported."""

    spec: JobSpec
    attempt: int
    handle: Any = None                   # the backend's own (pid, container group, ...)
    started: bool = False
    deadline: Optional[float] = None     # monotonic; timeout_s after the backend said it runs
    reason: Optional[str] = None         # cancelled | timeout, once decided
    kill_at: Optional[float] = None
    extra: Dict[str, Any] = field(default_factory=dict)

    @property
    def token(self) -> str:
        return self.spec.token(self.attempt)


class QueuedExecutor(Executor):
    grace_s = GRACE_S

    def __init__(self, options: Any, ctx: Any) -> None:
        super().__init__(options, ctx)
        self.max_parallel = int(getattr(options, "max_parallel", None) or default_parallelism())
        self._queue: Deque[JobSpec] = collections.deque()
        self._live: Dict[int, Slot] = {}
        self._attempts: Dict[int, int] = collections.Counter()
        self._cancelled_queued: List[int] = []

    # -- what a backend provides -----------------------------------------------------------
    @abstractmethod
    def launch(self, slot: Slot) -> List[Event]:
        """Start the point; return its Started now, or nothing if ``wait`` will report it."""

    @abstractmethod
    def signal(self, slot: Slot, kill: bool) -> None:
        """Ask the point to stop (SIGTERM), or make it stop (``kill``: SIGKILL, everything)."""

    @abstractmethod
    def wait(self, timeout: float) -> List[Event]:
        """Block at most ``timeout`` s for the backend; return Started/Ended of live slots."""

    def idle(self) -> None:
        """Nothing is queued or running any more (release what waiting needed)."""

    def abort_start(self, slot: Slot) -> None:
        """Cancel asked while the point's start is still in flight (a cloud launch can take
        minutes): a backend that can abort the start does it here; the rest stop it once started."""

    def can_launch(self, spec: JobSpec) -> bool:
        """Has the backend room for this point now (beyond ``max_parallel``)? SSH hosts: free
        slots on enough hosts. False keeps it queued, in order."""
        return True

    # -- the contract ----------------------------------------------------------------------
    def start(self, specs: Sequence[JobSpec]) -> None:
        self._queue.extend(specs)

    def busy(self) -> bool:
        return bool(self._queue or self._live or self._cancelled_queued)

    def poll(self, timeout: float) -> List[Event]:
        events = self._fill()
        if self._live:
            now = time.monotonic()
            timers = [s.deadline for s in self._live.values() if s.deadline and not s.reason]
            timers += [s.kill_at for s in self._live.values() if s.kill_at]
            wait = 0.0 if events else max(0.0, min([timeout] + [t - now for t in timers]))
            events += self._settle(self.wait(wait))
        self._enforce()
        events += self._fill()
        if not self.busy():
            self.idle()
        return events

    def cancel(self, indices: Optional[Sequence[int]] = None) -> None:
        wanted = None if indices is None else set(indices)
        kept = [s for s in self._queue if wanted is not None and s.index not in wanted]
        self._cancelled_queued += [s.index for s in self._queue if wanted is None or s.index in wanted]
        self._queue = collections.deque(kept)
        for slot in self._live.values():
            if (wanted is None or slot.spec.index in wanted) and slot.reason is None:
                if slot.started:
                    self._stop(slot, "cancelled")
                else:  # still being started: stopped as soon as its start is reported
                    slot.reason = "cancelled"
                    self.abort_start(slot)

    # -- the machinery ---------------------------------------------------------------------
    def _fill(self) -> List[Event]:
        events: List[Event] = [Ended(idx=i, reason="cancelled", detail="cancelled before it started")
                               for i in self._cancelled_queued]
        self._cancelled_queued = []
        while self._queue and len(self._live) < self.max_parallel and self.can_launch(self._queue[0]):
            spec = self._queue.popleft()
            self._attempts[spec.index] += 1
            slot = self._live[spec.index] = Slot(spec=spec, attempt=self._attempts[spec.index])
            try:
                events += self._settle(self.launch(slot))
            except (NrunError, OSError) as exc:
                self._live.pop(spec.index, None)
                events.append(Ended(idx=spec.index, reason="exited", detail=f"could not start: {exc}"))
        return events

    def _settle(self, events: List[Event]) -> List[Event]:
        now = time.monotonic()
        for ev in events:
            slot = self._live.get(ev.idx)
            if slot is None:
                continue
            if isinstance(ev, Started):
                slot.started = True
                if slot.spec.timeout_s:
                    slot.deadline = now + float(slot.spec.timeout_s)
                if slot.reason:
                    self._stop(slot, slot.reason)
            else:
                self._live.pop(ev.idx)
                if slot.reason:
                    ev.reason = slot.reason
                    if slot.reason == "timeout":
                        ev.detail = ""  # the runner names the setting
        return events

    def _enforce(self) -> None:
        now = time.monotonic()
        for slot in self._live.values():
            if slot.deadline and slot.reason is None and now >= slot.deadline:
                self._stop(slot, "timeout")
            elif slot.kill_at and now >= slot.kill_at:
                slot.kill_at = None
                self.signal(slot, kill=True)

    def _stop(self, slot: Slot, reason: str) -> None:
        slot.reason = slot.reason or reason
        if slot.kill_at is not None:
            return
        slot.kill_at = time.monotonic() + self.grace_s
        self.signal(slot, kill=False)
