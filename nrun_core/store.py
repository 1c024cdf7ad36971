"""The job store: SQLite under NRUN_HOME, the one source of truth about sweeps and points.

Written before submission and on every change, in short transactions with WAL, so several
processes (the launcher, a detached supervisor, `nrun status` in another shell) can share it and
a crashed launcher loses nothing.

A store that is busy (another process holds its lock), on a full disk or failing I/O must not kill
a running sweep: such a change is queued in memory, in order, retried before the next write and by
`flush()`, and this process's own reads already see it. The records made before anything is
submitted (`create_sweep`, `add_points`) wait instead, up to NRUN_STORE_WAIT_S, then fail cleanly.
"""

from __future__ import annotations

import _thread
import atexit
import contextlib
import json
import os
import secrets
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from nrun_core.errors import ConfigError, StoreError
from nrun_core.paths import nrun_home, private_home

# PENDING: not submitted yet; QUEUED: submitted, waiting at the backend (no clock yet);
# RUNNING: running since `started`; then one terminal state.
PENDING, QUEUED, RUNNING, COMPLETED, FAILED, TIMEOUT, CANCELLED, LOST = (
    "PENDING", "QUEUED", "RUNNING", "COMPLETED", "FAILED", "TIMEOUT", "CANCELLED", "LOST")
TERMINAL = frozenset({COMPLETED, FAILED, TIMEOUT, CANCELLED, LOST})
NO_POINTS = "no point was recorded: the launcher stopped before recording them (its output says why)"

BUSY_S = 3.0         # one write waits this long for another process's lock, then it is queued
RETRY_EVERY_S = 0.5  # while changes are queued, later calls retry them at most this often
# SQLite primary result codes: what we wait out, and what no waiting fixes.
_TRANSIENT = {5: "busy", 6: "busy", 15: "busy", 13: "full", 10: "ioerr", 8: "readonly", 14: "readonly"}
_CORRUPT = {11, 26}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sweeps (
    id TEXT PRIMARY KEY, name TEXT, executor TEXT, created REAL, state TEXT,
    app TEXT, cwd TEXT, argv TEXT, sweep_dir TEXT, conf TEXT, artifact TEXT,
    detached INTEGER DEFAULT 0, supervisor_pid INTEGER, supervisor_start TEXT,
    backend_id TEXT, info TEXT, cancel_requested INTEGER DEFAULT 0, ended REAL
);
CREATE TABLE IF NOT EXISTS points (
    sweep_id TEXT, idx INTEGER, overrides TEXT, spec TEXT, state TEXT,
    backend_id TEXT, pid INTEGER, pid_start TEXT, attempts INTEGER DEFAULT 0,
    exit_code INTEGER, started REAL, ended REAL, error TEXT, value_repr TEXT,
    stdout TEXT, stderr TEXT, cancel_requested INTEGER DEFAULT 0, usage TEXT,
    PRIMARY KEY (sweep_id, idx)
);
CREATE TABLE IF NOT EXISTS events (
    sweep_id TEXT, idx INTEGER, time REAL, state TEXT, detail TEXT
);
CREATE INDEX IF NOT EXISTS events_by_point ON events (sweep_id, idx);
"""

_SWEEP_FIELDS = {"name", "executor", "state", "app", "cwd", "argv", "sweep_dir", "conf",
                 "artifact", "detached", "supervisor_pid", "supervisor_start", "backend_id",
                 "info", "cancel_requested", "ended"}
_POINT_FIELDS = {"state", "backend_id", "pid", "pid_start", "attempts", "exit_code", "started",
                 "ended", "error", "value_repr", "stdout", "stderr", "cancel_requested", "spec", "usage"}
_JSON_FIELDS = {"argv", "conf", "artifact", "info", "overrides", "usage"}
# Columns added after the first release: (table, column, type), added to older stores on open.
_MIGRATIONS = [("points", "usage", "TEXT")]


def sweep_state(counts: Dict[str, int]) -> str:
    """A sweep's state from its points' states: RUNNING while any is live, then the worst outcome.

    No points at all is FAILED (NO_POINTS says why): the launcher died or the disk filled up
    between recording the sweep and its points, and such a sweep did nothing, it did not complete.
    """
    if not counts:
        return FAILED
    if any(s not in TERMINAL for s in counts):
        return RUNNING
    if any(s not in (COMPLETED, CANCELLED) for s in counts):
        return FAILED
    return CANCELLED if CANCELLED in counts else COMPLETED


def new_sweep_id() -> str:
    """Sortable by time, unique enough for one user's machine, short to type (prefixes work)."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def store_wait_s() -> float:
    """How long records made before submission (and reads) wait for a busy or full store."""
    raw = os.environ.get("NRUN_STORE_WAIT_S", "60")
    try:
        return max(0.0, float(raw))
    except ValueError:
        raise ConfigError(f"NRUN_STORE_WAIT_S={raw!r} is not a number of seconds; "
                          "unset it or set e.g. NRUN_STORE_WAIT_S=60") from None


class _Change:
    """One write: its statements (one transaction) and, for this process's reads, what it sets."""

    __slots__ = ("sweep_id", "what", "ops", "sweep", "points")

    def __init__(self, sweep_id: str, what: str, ops: List[Tuple[str, Sequence[Any]]],
                 sweep: Optional[Dict[str, Any]] = None,
                 points: Sequence[Tuple[Optional[int], Dict[str, Any]]] = ()) -> None:
        self.sweep_id, self.what, self.ops, self.sweep, self.points = sweep_id, what, ops, sweep, points


class Store:
    """The job store of NRUN_HOME (or `path`).

    `create=False` (the `nrun` commands) opens only an existing store, so a mistyped NRUN_HOME is
    an error instead of a new empty store; only the launcher creates one. Failed writes wait in
    memory: `pending` counts them, `last_error` says why the latest failed, `flush()` retries.
    """

    def __init__(self, path: Optional[Path] = None, *, create: bool = True) -> None:
        self.path = Path(path) if path else nrun_home() / "nrun.db"
        self.last_error: Optional[str] = None
        self._queue: List[_Change] = []
        self._lock = _thread.RLock()
        self._fix = ""
        self._warned = False
        self._next_retry = 0.0
        self._busy_s = BUSY_S
        self._pid = os.getpid()
        self._db: Optional[sqlite3.Connection] = None
        self._batch: Optional[List[_Change]] = None
        self._open(create)

    @property
    def pending(self) -> int:
        """Changes not written yet (the store was busy, or its disk full, when they were made)."""
        return len(self._queue)

    def flush(self, timeout: float = 0.0) -> bool:
        """Write the queued changes, retrying for up to `timeout` s; True when none is left."""
        return self._flush(timeout, None)

    def close(self, timeout: Optional[float] = None) -> None:
        """Write what is queued (waiting up to NRUN_STORE_WAIT_S), say what could not be, close."""
        with self._lock:
            if self._db is None:
                return
            try:
                if self._queue and not self.flush(store_wait_s() if timeout is None else timeout):
                    ids = ", ".join(sorted({c.sweep_id for c in self._queue}))
                    print(f"nrun: {len(self._queue)} change(s) to sweep {ids} could not be written to the "
                          f"job store {self.path}: {self.last_error}; they are lost (`nrun status {ids}` "
                          f"settles points from the result files they left). To fix: {self._fix}.",
                          file=sys.stderr, flush=True)
            finally:
                self._db.close()
                self._db = None
                _UNWRITTEN.discard(self)

    # -- opening ------------------------------------------------------------------------
    def _open(self, create: bool) -> None:
        if not create and not self.path.is_file():
            raise StoreError(_missing(self.path))
        private_home(self.path.parent)
        if create:
            _create_private(self.path)
        for suffix in ("", "-wal", "-shm"):  # older versions left them 0644; SQLite copies the db's mode
            _tighten(Path(f"{self.path}{suffix}"))
        name = str(self.path.absolute()).replace("%", "%25").replace("?", "%3f").replace("#", "%23")
        uri = f"file:{name}?mode={'rwc' if create else 'rw'}"
        try:
            self._db = sqlite3.connect(uri, uri=True, timeout=BUSY_S, isolation_level=None,
                                       check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the job store {self.path}: {exc}; check that it and "
                             f"{self.path.parent} are yours and writable") from None
        self._db.row_factory = sqlite3.Row
        try:
            if create:  # the launcher, before it submits anything: waits like create_sweep
                self._retrying(lambda: self._prepare(create), "open", _RETRYABLE, " Nothing was submitted.")
            else:
                self._retrying(lambda: self._prepare(create), "open")
        except BaseException:
            self._db.close()
            self._db = None
            raise

    def _prepare(self, create: bool) -> None:
        db = self._db
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if {"sweeps", "points", "events"} <= tables:
            self._migrate()
            return
        if not create:
            raise StoreError(f"{self.path} holds no nrun sweeps (empty, or not nrun's store); check "
                             f"NRUN_HOME, or if it is a damaged store move it aside: "
                             f"`mv {self.path} {self.path}.corrupt` (nrun never deletes it)")
        db.executescript(_SCHEMA)

    def _migrate(self) -> None:
        """A store made by an older nrun gains the columns added since (one ALTER each)."""
        db = self._db
        for table, column, kind in _MIGRATIONS:
            have = {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
            if column not in have:
                try:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
                except sqlite3.OperationalError as exc:
                    if "duplicate column" not in str(exc):  # another process added it first: fine
                        raise

    def delete_sweeps(self, sweep_ids: Sequence[str]) -> None:
        """Forget these sweeps: their rows, points and events (``nrun gc``), in one transaction."""
        ops: List[Tuple[str, Sequence[Any]]] = []
        for sid in sweep_ids:
            ops += [("DELETE FROM events WHERE sweep_id = ?", (sid,)),
                    ("DELETE FROM points WHERE sweep_id = ?", (sid,)),
                    ("DELETE FROM sweeps WHERE id = ?", (sid,))]
        if ops:
            self._write(_Change("", f"the removal of {len(sweep_ids)} sweep(s)", ops))

    # -- writing ------------------------------------------------------------------------
    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """The changes made inside are written together, in one transaction at the end (the
        runner applies a poll's events this way: one commit per poll, not one per event)."""
        with self._lock:
            outer = self._batch is not None
            if not outer:
                self._batch = []
        try:
            yield
        finally:
            if not outer:
                with self._lock:
                    changes, self._batch = self._batch or [], None
                    for change in _merged(changes):
                        self._write(change)

    def _write(self, change: _Change, must: bool = False) -> None:
        with self._lock:
            if self._batch is not None:
                if not must:
                    self._batch.append(change)
                    return
                self._queue.extend(_merged(self._batch))  # what the batch holds goes first, in order
                self._batch = []
            self._queue.append(change)
            if must:
                wait = store_wait_s()
                if self._flush(wait, wait):
                    return
                self._queue.remove(change)
                raise StoreError(f"could not record {change.what} in the job store {self.path} within "
                                 f"{wait:g} s (NRUN_STORE_WAIT_S): {self.last_error}. To fix: {self._fix}. "
                                 "Nothing was submitted.")
            if len(self._queue) == 1:
                self._drain(BUSY_S, None)
            elif time.monotonic() >= self._next_retry:
                self._drain(0.0, None)

    def _flush(self, timeout: float, waiting: Optional[float]) -> bool:
        deadline = time.monotonic() + timeout
        with self._lock:
            while not self._drain(min(BUSY_S, max(0.0, deadline - time.monotonic())), waiting):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                time.sleep(min(0.2, left))
            return True

    def _drain(self, busy_s: float, waiting: Optional[float]) -> bool:
        """Write the queue in order; stop at the first change the store cannot take now."""
        self._busy(busy_s)
        try:
            while self._queue:
                change = self._queue[0]
                try:
                    self._commit(change.ops)
                except sqlite3.Error as exc:
                    kind = _kind(exc)
                    if kind in _RETRYABLE:
                        self._failed(kind, exc, waiting)
                        return False
                    self._queue.pop(0)  # no retry fixes it: it would block every later change
                    raise self._fatal(exc, kind, f"write {change.what}") from None
                self._queue.pop(0)
        finally:
            self._busy(BUSY_S)
        _UNWRITTEN.discard(self)
        if self._warned:
            self._warned = False
            print(f"nrun: the job store {self.path} is written again; no change was lost",
                  file=sys.stderr, flush=True)
        return True

    def _commit(self, ops: List[Tuple[str, Sequence[Any]]]) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            for sql, params in ops:
                if type(params) is _Many:
                    db.executemany(sql, params)
                else:
                    db.execute(sql, params)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                try:
                    db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            raise

    def _failed(self, kind: str, exc: sqlite3.Error, waiting: Optional[float]) -> None:
        reason, self._fix = _reason(kind, self.path)
        self.last_error = f"{reason} ({exc})"
        if self._queue:
            _UNWRITTEN.add(self)  # kept alive (and written at exit) even if its owner lets it go
        self._next_retry = time.monotonic() + RETRY_EVERY_S
        if self._warned:
            return
        self._warned = True
        then = (f"waiting up to {waiting:g} s (NRUN_STORE_WAIT_S) before submitting anything"
                if waiting is not None else
                "the changes wait in memory and are retried (a running sweep goes on)")
        print(f"nrun: cannot write the job store {self.path}: {self.last_error}; {then}. "
              f"To fix: {self._fix}.", file=sys.stderr, flush=True)

    def _busy(self, seconds: float) -> None:
        if seconds != self._busy_s:
            self._db.execute(f"PRAGMA busy_timeout = {int(seconds * 1000)}")
            self._busy_s = seconds

    # -- reading ------------------------------------------------------------------------
    def _rows(self, sql: str, params: Sequence[Any] = ()) -> List[sqlite3.Row]:
        with self._lock:
            if self._queue and time.monotonic() >= self._next_retry:
                self._drain(0.0, None)  # readers are the first to notice a store free again
            return self._retrying(lambda: self._db.execute(sql, params).fetchall(), "read")

    def _retrying(self, fn: Callable[[], Any], what: str, kinds: frozenset = frozenset({"busy"}),
                  then: str = "") -> Any:
        """Run a read (or the opening); `kinds` of failure are waited out, up to NRUN_STORE_WAIT_S."""
        wait = store_wait_s()
        deadline = time.monotonic() + wait
        while True:
            try:
                return fn()
            except sqlite3.Error as exc:
                kind = _kind(exc)
                if kind not in kinds or time.monotonic() >= deadline:
                    waited = f" within {wait:g} s (NRUN_STORE_WAIT_S)" if kind in kinds else ""
                    raise self._fatal(exc, kind, what, then, waited) from None
                if then:  # the launcher: say why it waits
                    self._failed(kind, exc, wait)
                time.sleep(0.1)

    def _fatal(self, exc: sqlite3.Error, kind: Optional[str], what: str, then: str = "",
               waited: str = "") -> BaseException:
        if kind is None:
            return exc  # not the store's fault but ours (e.g. a closed connection): keep the traceback
        if kind == "corrupt":
            return StoreError(_corrupt(self.path, exc) + then)
        if kind == "other":
            return StoreError(f"the job store {self.path} could not {what}: {exc}.{then}")
        reason, fix = _reason(kind, self.path)
        return StoreError(f"could not {what} the job store {self.path}{waited}: {reason} ({exc}). "
                          f"To fix: {fix}.{then}")

    def _with_pending_sweep(self, row: Dict[str, Any]) -> Dict[str, Any]:
        for c in self._queue:
            if c.sweep and c.sweep_id == row["id"]:
                row.update(c.sweep)
        return row

    def _with_pending_point(self, row: Dict[str, Any]) -> Dict[str, Any]:
        for c in self._queue:
            if c.sweep_id == row["sweep_id"]:
                for idx, fields in c.points:
                    if idx is None or idx == row["idx"]:
                        row.update(fields)
        return row

    # -- writes -------------------------------------------------------------------------
    def create_sweep(self, sweep_id: str, **fields: Any) -> None:
        """Record a new sweep; waits for a busy store, then raises StoreError (nothing submitted yet)."""
        enc = _encode(fields, _SWEEP_FIELDS)
        cols = ["id", "created", *enc]
        sql = f"INSERT INTO sweeps ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
        self._write(_Change(sweep_id, f"sweep {sweep_id}", [(sql, [sweep_id, time.time(), *enc.values()])]),
                    must=True)

    def add_points(self, sweep_id: str, points: Sequence[Dict[str, Any]]) -> None:
        """Insert (or reset for a retry batch) points, all in one transaction; waits like create_sweep."""
        now = time.time()
        rows = _Many((sweep_id, p["idx"], json.dumps(p["overrides"]), p["spec"], p.get("state", PENDING),
                      p.get("stdout"), p.get("stderr")) for p in points)
        events = _Many((sweep_id, p["idx"], now, p.get("state", PENDING), "recorded") for p in points)
        ops: List[Tuple[str, Sequence[Any]]] = [
            ("INSERT OR REPLACE INTO points (sweep_id, idx, overrides, spec, state, stdout, stderr)"
             " VALUES (?, ?, ?, ?, ?, ?, ?)", rows),
            ("INSERT INTO events VALUES (?, ?, ?, ?, ?)", events)]
        self._write(_Change(sweep_id, f"the {len(points)} point(s) of sweep {sweep_id}", ops), must=True)

    def update_sweep(self, sweep_id: str, **fields: Any) -> None:
        """Change a sweep; queued, never raised, if the store is busy or its disk full."""
        if not fields:
            return
        enc = _encode(fields, _SWEEP_FIELDS)
        sql = f"UPDATE sweeps SET {', '.join(f'{k} = ?' for k in enc)} WHERE id = ?"
        self._write(_Change(sweep_id, f"sweep {sweep_id}", [(sql, [*enc.values(), sweep_id])],
                            sweep=dict(fields)))

    def update_point(self, sweep_id: str, idx: int, detail: str = "", **fields: Any) -> None:
        """Change a point; a change of state is also appended to its event history. Queued like
        update_sweep."""
        enc = _encode(fields, _POINT_FIELDS)
        ops: List[Tuple[str, Sequence[Any]]] = []
        if enc:
            ops.append((f"UPDATE points SET {', '.join(f'{k} = ?' for k in enc)} WHERE sweep_id = ? AND idx = ?",
                        [*enc.values(), sweep_id, idx]))
        if "state" in enc:
            ops.append(("INSERT INTO events VALUES (?, ?, ?, ?, ?)",
                        (sweep_id, idx, time.time(), enc["state"], detail)))
        if ops:
            self._write(_Change(sweep_id, f"point {idx} of sweep {sweep_id}", ops, points=[(idx, dict(fields))]))

    def request_cancel(self, sweep_id: str, indices: Optional[Sequence[int]] = None) -> None:
        flag = {"cancel_requested": 1}
        if indices is None:
            ops = [("UPDATE sweeps SET cancel_requested = 1 WHERE id = ?", (sweep_id,)),
                   ("UPDATE points SET cancel_requested = 1 WHERE sweep_id = ?", (sweep_id,))]
            change = _Change(sweep_id, f"the cancel request of sweep {sweep_id}", ops, sweep=flag,
                             points=[(None, flag)])
        else:
            ops = [("UPDATE points SET cancel_requested = 1 WHERE sweep_id = ? AND idx = ?", (sweep_id, i))
                   for i in indices]
            change = _Change(sweep_id, f"the cancel request of sweep {sweep_id}", ops,
                             points=[(i, flag) for i in indices])
        self._write(change)

    # -- reads (this process's queued changes included) ----------------------------------
    def sweep(self, ref: str) -> Dict[str, Any]:
        """A sweep by id, unique id prefix, name (its latest sweep), or 'last'."""
        if ref in ("last", "-"):
            rows = self._rows("SELECT * FROM sweeps ORDER BY created DESC LIMIT 1")
        else:
            rows = self._rows("SELECT * FROM sweeps WHERE id = ?", (ref,))
            if not rows:
                rows = self._rows("SELECT * FROM sweeps WHERE id LIKE ? ORDER BY created DESC",
                                  (ref.replace("%", "") + "%",))
            if not rows:
                rows = self._rows("SELECT * FROM sweeps WHERE name = ? ORDER BY created DESC LIMIT 1", (ref,))
        if not rows:
            raise ConfigError(f"no sweep matches {ref!r} in {self.path}; `nrun list` shows the sweeps")
        if len(rows) > 1:
            ids = ", ".join(r["id"] for r in rows[:5])
            raise ConfigError(f"{ref!r} matches several sweeps ({ids}); give more of the id")
        return self._with_pending_sweep(_decode(rows[0]))

    def sweeps(self, limit: int = 20) -> List[Dict[str, Any]]:
        rows = self._rows("SELECT * FROM sweeps ORDER BY created DESC LIMIT ?", (limit,))
        return [self._with_pending_sweep(_decode(r)) for r in rows]

    def points(self, sweep_id: str) -> List[Dict[str, Any]]:
        rows = self._rows("SELECT * FROM points WHERE sweep_id = ? ORDER BY idx", (sweep_id,))
        return [self._with_pending_point(_decode(r)) for r in rows]

    def point(self, sweep_id: str, idx: int) -> Dict[str, Any]:
        rows = self._rows("SELECT * FROM points WHERE sweep_id = ? AND idx = ?", (sweep_id, idx))
        if not rows:
            raise ConfigError(f"sweep {sweep_id} has no point {idx}; `nrun status {sweep_id}` lists them")
        return self._with_pending_point(_decode(rows[0]))

    def events(self, sweep_id: str, idx: Optional[int] = None) -> List[Dict[str, Any]]:
        """Written events only (a queued change's event appears once it is written)."""
        if idx is None:
            rows = self._rows("SELECT * FROM events WHERE sweep_id = ? ORDER BY time", (sweep_id,))
        else:
            rows = self._rows("SELECT * FROM events WHERE sweep_id = ? AND idx = ? ORDER BY time",
                              (sweep_id, idx))
        return [dict(r) for r in rows]

    def cancel_requests(self, sweep_id: str) -> List[int]:
        """The points of a sweep whose cancel was requested (one indexed query, not every row)."""
        rows = self._rows("SELECT idx FROM points WHERE sweep_id = ? AND cancel_requested = 1", (sweep_id,))
        wanted = {r[0] for r in rows}
        for c in self._queue:
            if c.sweep_id == sweep_id:
                for idx, fields in c.points:
                    if fields.get("cancel_requested"):
                        if idx is None:
                            return [p["idx"] for p in self.points(sweep_id)]
                        wanted.add(idx)
        return sorted(wanted)

    def counts(self, sweep_id: str) -> Dict[str, int]:
        if any(c.sweep_id == sweep_id and c.points for c in self._queue):
            out: Dict[str, int] = {}
            for p in self.points(sweep_id):
                out[p["state"]] = out.get(p["state"], 0) + 1
            return out
        rows = self._rows("SELECT state, COUNT(*) FROM points WHERE sweep_id = ? GROUP BY state", (sweep_id,))
        return {state: n for state, n in rows}


class _Many(list):
    """The rows of one executemany statement."""


def _merged(changes: List[_Change]) -> List[_Change]:
    """Consecutive changes of one sweep as one change (one transaction), in order."""
    out: List[_Change] = []
    for c in changes:
        last = out[-1] if out else None
        if last is None or last.sweep_id != c.sweep_id:
            out.append(_Change(c.sweep_id, c.what, list(c.ops), sweep=dict(c.sweep) if c.sweep else None,
                               points=list(c.points)))
            continue
        last.what = f"changes to sweep {c.sweep_id}"
        last.ops.extend(c.ops)
        last.points.extend(c.points)  # type: ignore[attr-defined]
        if c.sweep:
            last.sweep = {**(last.sweep or {}), **c.sweep}
    return out


_RETRYABLE = frozenset({"busy", "full", "ioerr", "readonly"})
_UNWRITTEN: "set[Store]" = set()  # stores holding changes not written yet


@atexit.register
def _close_at_exit() -> None:
    """A launcher that exits while the store is busy still writes what it queued, or says so."""
    for store in list(_UNWRITTEN):
        if store._pid == os.getpid():
            store.close()


def _kind(exc: sqlite3.Error) -> Optional[str]:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return None
    code &= 0xFF
    return "corrupt" if code in _CORRUPT else _TRANSIENT.get(code, "other")


def _reason(kind: str, path: Path) -> Tuple[str, str]:
    """What is wrong with the store, and what the user can do about it."""
    d = path.parent
    return {
        "busy": ("another process holds its lock",
                 f"find that process with `fuser {path} {path}-wal` and let it finish or stop it"),
        "full": ("the disk is full", f"free space on that disk (`df -h {d}`) or move NRUN_HOME to a larger one"),
        "ioerr": ("disk I/O error", f"check the disk holding it (`df -h {d}`, `dmesg`), or move NRUN_HOME"),
        "readonly": ("it cannot be written",
                     f"check that {d} and {path}* are yours and writable (`ls -ld {d} {path}*`)"),
    }[kind]


def _corrupt(path: Path, exc: sqlite3.Error) -> str:
    return (f"the job store {path} is corrupt ({exc}). Move it aside and the next sweep starts a new one "
            f"(nrun never deletes it): `mv {path} {path}.corrupt`, and if they exist "
            f"`mv {path}-wal {path}.corrupt-wal; mv {path}-shm {path}.corrupt-shm`.")


def _missing(path: Path) -> str:
    home = os.environ.get("NRUN_HOME")
    if home and path.parent == nrun_home():
        return (f"no nrun store at {path}; check NRUN_HOME={home} (a typo?): only a launcher "
                "(hydra/launcher=nrun_...) creates a store, the `nrun` commands read it")
    return (f"no nrun store at {path}: no sweep has run with an nrun launcher as this user yet; set "
            "NRUN_HOME if your sweeps record somewhere else")


def _create_private(path: Path) -> None:
    """Create the store file 0600 before SQLite does (it would make it 0644); -wal/-shm copy its mode."""
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT, 0o600))
    except OSError as exc:
        raise StoreError(f"cannot create the job store {path}: {exc.strerror}; set NRUN_HOME to a "
                         "directory you can write") from None


def _tighten(path: Path) -> None:
    try:
        st = path.stat()
        if st.st_uid == os.geteuid() and st.st_mode & 0o777 != 0o600:
            os.chmod(path, 0o600)
    except OSError:
        pass  # absent, or not ours to change


def _encode(fields: Dict[str, Any], allowed: set) -> Dict[str, Any]:
    unknown = set(fields) - allowed
    assert not unknown, f"not a store column: {sorted(unknown)}"
    return {k: json.dumps(v) if k in _JSON_FIELDS and v is not None else v for k, v in fields.items()}


def _decode(row: sqlite3.Row) -> Dict[str, Any]:
    out = dict(row)
    for k in _JSON_FIELDS & out.keys():
        if out[k] is not None:
            out[k] = json.loads(out[k])
    return out
