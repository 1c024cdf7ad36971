"""A queue of remote cloud jobs, one per point, followed by polling with backoff.

Submissions run on a small thread pool (the runner's loop never waits on the network); one
monitor thread asks the backend about each live job when its next poll is due: first after
``poll_s``, then 1.5x longer each time up to ``poll_max_s``, so a long point costs a handful of
status calls, not one a second. A job the backend no longer knows (404) ends as lost; a backend
that stops answering for ``LOST_AFTER_S`` makes its points lost too. Ended jobs are deleted at
the backend (``delete_finished``). Cancel and timeout go through the shared queue: TERM = the
backend's stop/suspend, KILL (after the grace) = delete. Everything the threads learn reaches
the runner's thread through one message queue.
"""

from __future__ import annotations

import atexit
import os
import queue
import threading
import time
from abc import abstractmethod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from nrun_core.errors import NrunError
from nrun_core.executors.base import ENDED, QUEUED, RUNNING, Ended, Event, Started
from nrun_core.executors.queue import QueuedExecutor, Slot, drain

GONE = "GONE"           # the backend answers 404 for the job
LOST_AFTER_S = 120.0    # backend unreachable this long: the point is lost
DEFAULT_PARALLEL = 16   # cloud jobs cost the launcher nothing but a few polls
BACKOFF = 1.5


@dataclass
class RemoteState:
    phase: str                       # QUEUED | RUNNING | ENDED | GONE
    exit_code: Optional[int] = None
    detail: str = ""
    raw: str = ""                    # the backend's own word for it


@dataclass
class _Job:
    slot: Slot
    id: str = ""
    running: bool = False
    next_at: float = 0.0
    interval: float = 1.0
    unreachable_since: Optional[float] = None
    done: bool = False


class PolledJobExecutor(QueuedExecutor):
    """Subclasses provide the backend calls; this class owns threads, backoff and events."""

    sees_launcher_files = False   # only the shared storage
    grace_s = 10.0                # between stop and delete

    def __init__(self, options: Any, ctx: Any) -> None:
        super().__init__(options, ctx)
        if not getattr(options, "max_parallel", None):
            self.max_parallel = DEFAULT_PARALLEL
        self._msgs: "queue.Queue[Tuple[Any, ...]]" = queue.Queue()
        self._pool: Optional[ThreadPoolExecutor] = None
        self._watch: Dict[int, _Job] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._pid: Optional[int] = None
        self.poll_s = float(getattr(options, "poll_s", 2.0) or 2.0)
        self.poll_max_s = max(self.poll_s, float(getattr(options, "poll_max_s", 30.0) or 30.0))

    # -- what a backend provides -----------------------------------------------------------
    @abstractmethod
    def open_backend(self) -> None:
        """Make the API client (called once per process that runs points)."""

    @abstractmethod
    def submit(self, slot: Slot) -> str:
        """Stage what the point needs and create its job; return the backend's job id."""

    @abstractmethod
    def remote_state(self, job_id: str) -> RemoteState:
        """What the backend says of the job (GONE for a 404); raise on a transport error."""

    @abstractmethod
    def stop(self, job_id: str) -> None:
        """Ask the backend to stop the job (its documented stop/suspend)."""

    @abstractmethod
    def remove(self, job_id: str) -> None:
        """Delete the job at the backend (a job already gone is not an error)."""

    def failure_tail(self, job_id: str) -> str:
        """The last words of a failed job where the backend keeps them ('' if none)."""
        return ""

    @property
    def delete_finished(self) -> bool:
        return bool(getattr(self.opts, "delete_finished", True))

    # -- QueuedExecutor --------------------------------------------------------------------
    def launch(self, slot: Slot) -> List[Event]:
        self._ensure()
        job = _Job(slot=slot, interval=self.poll_s)
        slot.handle = job
        assert self._pool is not None
        self._pool.submit(self._submit, job)
        return []

    def signal(self, slot: Slot, kill: bool) -> None:
        job = slot.handle
        if job is None or not job.id or job.done:
            return
        assert self._pool is not None
        self._pool.submit(_quietly, self.remove if kill else self.stop, job.id)
        with self._lock:  # look again soon: the stop shows in the next poll
            job.interval, job.next_at = self.poll_s, time.monotonic() + self.poll_s
        self._wake.set()

    def _settle(self, events: List[Event]) -> List[Event]:
        """A job waiting at the service (queued for capacity) has no clock yet: ``timeout_s``
        counts from when it runs, as the runner shows it."""
        events = super()._settle(events)
        for ev in events:
            slot = self._live.get(ev.idx)
            if isinstance(ev, Started) and ev.queued and slot is not None:
                slot.deadline = None
        return events

    def wait(self, timeout: float) -> List[Event]:
        return [ev for msg in drain(self._msgs, timeout) for ev in self._handle(msg)]

    # -- threads ---------------------------------------------------------------------------
    def _ensure(self) -> None:
        """Client, pool and monitor, made in the process that runs the points (a detached
        supervisor is a fork: no thread or connection may cross it)."""
        if self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self.open_backend()
        self._pool = ThreadPoolExecutor(max_workers=max(2, min(8, self.max_parallel)),
                                        thread_name_prefix=f"nrun-{self.name}")
        threading.Thread(target=self._monitor, daemon=True, name=f"nrun-{self.name}-monitor").start()
        atexit.register(self._abandon)

    def _submit(self, job: _Job) -> None:
        try:
            job.id = self.submit(job.slot)
        except Exception as exc:
            self._msgs.put(("failed", job, str(exc)))
            return
        with self._lock:
            job.next_at = time.monotonic() + job.interval
            self._watch[job.slot.spec.index] = job
        self._msgs.put(("created", job))
        self._wake.set()

    def _monitor(self) -> None:
        while True:
            with self._lock:
                now = time.monotonic()
                due = [j for j in self._watch.values() if j.next_at <= now]
                nxt = min([j.next_at for j in self._watch.values()], default=now + 1.0)
            for job in due:
                self._poll_one(job)
            if not due:
                self._wake.wait(max(0.05, min(1.0, nxt - time.monotonic())))
                self._wake.clear()

    def _poll_one(self, job: _Job) -> None:
        try:
            st = self.remote_state(job.id)
            job.unreachable_since = None
        except Exception as exc:
            now = time.monotonic()
            job.unreachable_since = job.unreachable_since or now
            if now - job.unreachable_since < LOST_AFTER_S:
                job.next_at = now + job.interval
                return
            st = RemoteState(GONE, detail=f"the backend did not answer for {LOST_AFTER_S:.0f}s: {exc}")
        if st.phase == RUNNING and not job.running:
            job.running = True
            self._msgs.put(("running", job))
        if st.phase in (ENDED, GONE):
            with self._lock:
                self._watch.pop(job.slot.spec.index, None)
            job.done = True
            if st.phase == ENDED and st.exit_code not in (0, None) and not job.slot.reason:
                st.detail += _last_words(job.slot.spec.stderr, _quietly(self.failure_tail, job.id) or "")
            if self.delete_finished and st.phase == ENDED:
                _quietly(self.remove, job.id)
            self._msgs.put(("ended", job, st))
            return
        job.interval = min(self.poll_max_s, job.interval * BACKOFF)
        job.next_at = time.monotonic() + job.interval

    # -- events ----------------------------------------------------------------------------
    def _handle(self, msg: Tuple[Any, ...]) -> List[Event]:
        kind, job = msg[0], msg[1]
        idx = job.slot.spec.index
        if kind == "created":
            return [Started(idx=idx, backend_id=job.id, queued=True)]
        if kind == "running":
            return [Started(idx=idx, backend_id=job.id)]
        if kind == "failed":
            return [Started(idx=idx, backend_id=job.id or "-"),
                    Ended(idx=idx, reason="exited", detail=f"could not create the job: {msg[2]}")]
        if kind == "ended":
            st: RemoteState = msg[2]
            out: List[Event] = [] if job.running else [Started(idx=idx, backend_id=job.id)]
            if st.phase == GONE:
                out.append(Ended(idx=idx, reason="lost", detail=st.detail or (
                    f"job {job.id} vanished at the backend (404: deleted outside nrun?)")))
            else:
                out.append(Ended(idx=idx, reason="exited", exit_code=st.exit_code, detail=st.detail))
            return out
        raise AssertionError(kind)  # pragma: no cover

    def _abandon(self) -> None:
        """atexit: the launcher leaves with jobs still live (Ctrl-C, crash): delete them."""
        if self._pid != os.getpid():
            return
        for slot in list(self._live.values()):
            job = slot.handle
            if job is not None and job.id and not job.done:
                _quietly(self.remove, job.id)


def phase_of(state: Optional[str], mapping: Dict[str, Tuple[str, Optional[int]]]) -> Tuple[str, Optional[int]]:
    """A backend word → (QUEUED|RUNNING|ENDED, exit code); unknown words count as queued."""
    return mapping.get(state or "", (QUEUED, None))


def _last_words(stderr_path: str, vendor_log: str, size: int = 400) -> str:
    """What a failed job said last: the end of the point's stderr on the shared storage (where
    a command that could not start complains), else the end of the service's own log."""
    try:
        with open(stderr_path, "rb") as f:
            f.seek(max(0, os.path.getsize(stderr_path) - size))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        text = ""
    if text.strip():
        return "; its stderr ends: " + " ".join(text.split())[-size:]
    if vendor_log.strip():
        return "; the job's log ends: " + " ".join(vendor_log.split())[-size:]
    return ""


def _quietly(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception:
        return None


__all__ = ["PolledJobExecutor", "RemoteState", "GONE", "ENDED", "RUNNING", "QUEUED", "phase_of", "NrunError"]
