"""Where packed tar bytes go: a gzip file, compressed on a second thread while the caller hashes.

gzip (not zstd) because the executing side unpacks with the standard library of whatever Python
it has. Level 1: on a 10k-file, 200 MB tree it is ~3.5x faster than the default level 6 for ~12%
more bytes, and packing is on the critical path of every launch. zlib releases the GIL while it
deflates, so a thread gives real parallelism; measured, it beats piping into a ``gzip`` process
(one pipe hop fewer, and zlib's deflate is faster than gzip's own at level 1).
"""

from __future__ import annotations

import queue
import threading
import zlib
from pathlib import Path

from nrun_core.errors import PackagingError

LEVEL = 1
_BUF = 1 << 20
_GZIP_WBITS = 31  # zlib's gzip wrapper: header with mtime 0 and no name, so output is reproducible


class GzipSink:
    """A write-only byte sink producing ``path`` as a gzip file; ``close()`` finishes it."""

    def __init__(self, path: Path, level: int = LEVEL) -> None:
        self.path = path
        self._out = open(path, "wb")
        self._buf = bytearray()
        self._q: queue.Queue[bytes | None] = queue.Queue(maxsize=8)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._compress, args=(level,), name="nrun-gzip", daemon=True)
        self._thread.start()

    def write(self, data: bytes | bytearray | memoryview) -> int:
        n = len(data)
        if not self._buf and n >= _BUF:
            self._put(bytes(data))
        else:
            self._buf += data
            if len(self._buf) >= _BUF:
                self._put(bytes(self._buf))
                self._buf.clear()
        return n

    def close(self) -> None:
        """Flush, wait for the compressor, close the file; raises if writing failed."""
        if self._buf:
            self._put(bytes(self._buf))
            self._buf.clear()
        self._q.put(None)
        self._thread.join()
        self._out.close()
        self._raise_if_failed()

    def abort(self) -> None:
        """Stop and remove the partial file."""
        if self._thread.is_alive():
            self._q.put(None)
            self._thread.join()
        self._out.close()
        self.path.unlink(missing_ok=True)

    def _put(self, chunk: bytes) -> None:
        self._raise_if_failed()
        self._q.put(chunk)

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise PackagingError(f"cannot write {self.path} (disk full?): {self._error}") from self._error

    def _compress(self, level: int) -> None:
        z = zlib.compressobj(level, zlib.DEFLATED, _GZIP_WBITS)
        while (chunk := self._q.get()) is not None:
            if self._error is None:  # after a failure keep draining, so the producer never blocks
                try:
                    self._out.write(z.compress(chunk))
                except BaseException as e:  # noqa: BLE001 - reported by close() / the next write
                    self._error = e
        if self._error is None:
            try:
                self._out.write(z.flush())
            except BaseException as e:  # noqa: BLE001
                self._error = e
