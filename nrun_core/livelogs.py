"""Points' output on the launcher's terminal while they run, each line prefixed by its point.

What `docker compose logs` does for services, for the points of a sweep: the runner's poll loop
calls ``pump`` and every running point's stdout.log/stderr.log is read on from where it was
left, through the executor's ``Control.logs`` (a file here, or on a login node through its
transport), so every backend streams the same way and ``nrun logs -f`` reads the same sources.
Reads are byte ranges of at most CHUNK, a bounded number per turn: a point printing gigabytes
never sits in memory nor stalls the loop. A line is printed once complete; a partial line is held
(up to HOLD bytes, then printed in pieces) until its end arrives or the point ends.

``hydra.launcher.stream``: auto (on for a sweep of one point), true, false; never in the detached
mode, where no terminal waits.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from nrun_core.errors import ConfigError
from nrun_core.spec import JobSpec

CHUNK = 1 << 16          # bytes read at once
CHUNKS_PER_TURN = 16     # per stream and pump: at most 1 MiB a turn, the rest on the next
HOLD = 1 << 16           # a line still without its end past this is printed in pieces
EVERY_S = 0.2            # files here: read this often
REMOTE_EVERY_S = 1.0     # through a transport (SSH): each read is a round trip
PREFIX_MAX = 40          # a prefix longer than this is cut (the point number always stays)
BATCH = 1 << 18          # lines are handed to the view in batches of at most about this many bytes
CHOICES = ("auto", "true", "false")

# Lines as (prefix, line, stderr?, color number), a batch at a time (a live table redraws once
# per batch, not once per line); where they go is the view's business.
Line = Tuple[str, str, bool, int]
Sink = Callable[[List[Line]], None]


def wanted(setting: Any, points: int, wait: bool) -> bool:
    """Whether to stream, from hydra.launcher.stream; ConfigError naming the setting if bad."""
    value = str(setting).strip().lower() if setting is not None else "auto"
    if value not in CHOICES:
        raise ConfigError(f"hydra.launcher.stream={setting!r}: choose one of {', '.join(CHOICES)} "
                          "(auto: the points' output on this terminal for a sweep of one point)")
    if not wait:
        return False
    return value == "true" or (value == "auto" and points == 1)


class _Stream:
    __slots__ = ("source", "err", "offset", "rest", "dead", "remote")

    def __init__(self, source: Any, err: bool) -> None:
        self.source, self.err = source, err
        self.offset, self.rest, self.dead = 0, b"", False
        self.remote = getattr(source, "transport", None) is not None


class LogTail:
    """Follows the points it is told are running; prints their new lines through `sink`."""

    def __init__(self, control: Any, sweep_id: str, sink: Sink, label: Callable[[int], str]) -> None:
        self.control, self.sweep_id, self.sink, self.label = control, sweep_id, sink, label
        self._streams: Dict[int, List[_Stream]] = {}
        self._active: Dict[int, None] = {}   # running points, in start order
        self._prefix: Dict[int, str] = {}
        self._width = 0
        self._next = 0.0
        self._batch: List[Line] = []
        self._batch_bytes = 0

    def watch(self, spec: JobSpec, backend_id: str = "") -> None:
        """The point started (again: a retry appends to the same logs, read on from where we are)."""
        idx = spec.index
        if idx not in self._streams:
            point = {"idx": idx, "stdout": spec.stdout, "stderr": spec.stderr, "backend_id": backend_id,
                     "spec": json.dumps(spec.as_dict())}
            try:
                self._streams[idx] = [_Stream(self.control.logs(point, s), s == "stderr") for s in ("stdout", "stderr")]
            except Exception as exc:  # a backend that cannot say where its logs are: the run goes on
                self._stopped(idx, exc)
                return
            text = f"{idx} {self.label(idx)}".strip()
            if len(text) > PREFIX_MAX:
                text = text[: PREFIX_MAX - 1] + "…"
            self._prefix[idx] = f"[{text}]"
            self._width = max(self._width, len(self._prefix[idx]))
        self._active[idx] = None

    def pump(self) -> None:
        """New lines of every running point; at most every EVERY_S (REMOTE_EVERY_S over SSH)."""
        now = time.monotonic()
        if now < self._next or not self._active:
            return
        remote = False
        for idx in list(self._active):
            for st in self._streams.get(idx, ()):
                remote = remote or st.remote
                self._read(idx, st, CHUNKS_PER_TURN)
        self._flush()
        self._next = now + (REMOTE_EVERY_S if remote else EVERY_S)

    def drain(self, spec: JobSpec) -> None:
        """The point ended: the rest of its output, its last partial line included (all of it
        for a point seen only queued: a short one can start and end between two polls)."""
        idx = spec.index
        if idx not in self._streams:
            self.watch(spec)
        self._active.pop(idx, None)
        for st in self._streams.get(idx, ()):
            self._read(idx, st, None)
            if st.rest:
                self._emit(idx, st, st.rest)
                st.rest = b""
        self._flush()

    def close(self) -> None:
        try:
            self.control.close()
        except Exception:
            pass

    def _read(self, idx: int, st: _Stream, chunks: Optional[int]) -> None:
        n = 0
        while not st.dead and (chunks is None or n < chunks):
            try:
                data = st.source.read(st.offset, CHUNK)
            except Exception as exc:
                st.dead = True
                self._stopped(idx, exc)
                return
            if not data:
                return
            n += 1
            st.offset += len(data)
            buf = st.rest + data
            cut = buf.rfind(b"\n") + 1
            if not cut and len(buf) >= HOLD:
                cut = len(buf)
            if cut:
                lines = buf[:cut].split(b"\n")
                if buf[cut - 1] == 0x0A:
                    lines.pop()  # the empty piece after the last newline
                for line in lines:
                    self._emit(idx, st, line)
            st.rest = buf[cut:]

    def _emit(self, idx: int, st: _Stream, raw: bytes) -> None:
        text = raw.decode(errors="replace")
        if "\r" in text:  # a progress bar redrawn in place: what a terminal would end up showing
            parts = [p for p in text.split("\r") if p]
            text = parts[-1] if parts else ""
        self._batch.append((self._prefix[idx].ljust(self._width), text, st.err, idx))
        self._batch_bytes += len(raw)
        if self._batch_bytes >= BATCH:
            self._flush()

    def _flush(self) -> None:
        if self._batch:
            batch, self._batch, self._batch_bytes = self._batch, [], 0
            self.sink(batch)

    def _stopped(self, idx: int, exc: Exception) -> None:
        self._batch.append((f"[{idx}]", f"[nrun] live output of point #{idx} stopped ({exc}); "
                            f"`nrun logs {self.sweep_id} {idx}` reads it", True, idx))
