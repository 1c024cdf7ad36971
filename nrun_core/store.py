"""The job store: SQLite under NRUN_HOME, the one source of truth about sweeps and points.

Written before submission and on every change, in short transactions with WAL, so several
processes (the launcher, a detached supervisor, `nrun status` in another shell) can share it and
a crashed launcher loses nothing.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

from nrun_core.errors import ConfigError
from nrun_core.paths import nrun_home

PENDING, RUNNING, COMPLETED, FAILED, TIMEOUT, CANCELLED, LOST = (
    "PENDING", "RUNNING", "COMPLETED", "FAILED", "TIMEOUT", "CANCELLED", "LOST")
TERMINAL = frozenset({COMPLETED, FAILED, TIMEOUT, CANCELLED, LOST})

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
    stdout TEXT, stderr TEXT, cancel_requested INTEGER DEFAULT 0,
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
                 "ended", "error", "value_repr", "stdout", "stderr", "cancel_requested", "spec"}
_JSON_FIELDS = {"argv", "conf", "artifact", "info", "overrides"}


def sweep_state(counts: Dict[str, int]) -> str:
    """A sweep's state from its points' states: RUNNING while any is live, then the worst outcome."""
    if any(s not in TERMINAL for s in counts):
        return RUNNING
    if any(s not in (COMPLETED, CANCELLED) for s in counts):
        return FAILED
    return CANCELLED if CANCELLED in counts else COMPLETED


def new_sweep_id() -> str:
    """Sortable by time, unique enough for one user's machine, short to type (prefixes work)."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


class Store:
    def __init__(self, path: Optional[Path] = None) -> None:
        self.path = Path(path) if path else nrun_home() / "nrun.db"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                   check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _txn(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- writes -------------------------------------------------------------------------
    def create_sweep(self, sweep_id: str, **fields: Any) -> None:
        fields = _encode(fields, _SWEEP_FIELDS)
        cols = ["id", "created", *fields]
        with self._txn() as db:
            db.execute(f"INSERT INTO sweeps ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                       [sweep_id, time.time(), *fields.values()])

    def add_points(self, sweep_id: str, points: Sequence[Dict[str, Any]]) -> None:
        """Insert (or reset for a retry batch) points, all in one transaction."""
        now = time.time()
        with self._txn() as db:
            for p in points:
                db.execute(
                    "INSERT OR REPLACE INTO points (sweep_id, idx, overrides, spec, state, stdout, stderr)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (sweep_id, p["idx"], json.dumps(p["overrides"]), p["spec"], p.get("state", PENDING),
                     p.get("stdout"), p.get("stderr")))
                db.execute("INSERT INTO events VALUES (?, ?, ?, ?, ?)",
                           (sweep_id, p["idx"], now, p.get("state", PENDING), "recorded"))

    def update_sweep(self, sweep_id: str, **fields: Any) -> None:
        fields = _encode(fields, _SWEEP_FIELDS)
        with self._txn() as db:
            db.execute(f"UPDATE sweeps SET {', '.join(f'{k} = ?' for k in fields)} WHERE id = ?",
                       [*fields.values(), sweep_id])

    def update_point(self, sweep_id: str, idx: int, detail: str = "", **fields: Any) -> None:
        """Change a point; a change of state is also appended to its event history."""
        fields = _encode(fields, _POINT_FIELDS)
        with self._txn() as db:
            if fields:
                db.execute(
                    f"UPDATE points SET {', '.join(f'{k} = ?' for k in fields)} WHERE sweep_id = ? AND idx = ?",
                    [*fields.values(), sweep_id, idx])
            if "state" in fields:
                db.execute("INSERT INTO events VALUES (?, ?, ?, ?, ?)",
                           (sweep_id, idx, time.time(), fields["state"], detail))

    def request_cancel(self, sweep_id: str, indices: Optional[Sequence[int]] = None) -> None:
        with self._txn() as db:
            if indices is None:
                db.execute("UPDATE sweeps SET cancel_requested = 1 WHERE id = ?", (sweep_id,))
                db.execute("UPDATE points SET cancel_requested = 1 WHERE sweep_id = ?", (sweep_id,))
            else:
                db.executemany("UPDATE points SET cancel_requested = 1 WHERE sweep_id = ? AND idx = ?",
                               [(sweep_id, i) for i in indices])

    # -- reads --------------------------------------------------------------------------
    def sweep(self, ref: str) -> Dict[str, Any]:
        """A sweep by id, unique id prefix, name (its latest sweep), or 'last'."""
        if ref in ("last", "-"):
            rows = self._db.execute("SELECT * FROM sweeps ORDER BY created DESC LIMIT 1").fetchall()
        else:
            rows = self._db.execute("SELECT * FROM sweeps WHERE id = ?", (ref,)).fetchall()
            if not rows:
                rows = self._db.execute("SELECT * FROM sweeps WHERE id LIKE ? ORDER BY created DESC",
                                        (ref.replace("%", "") + "%",)).fetchall()
            if not rows:
                rows = self._db.execute("SELECT * FROM sweeps WHERE name = ? ORDER BY created DESC LIMIT 1",
                                        (ref,)).fetchall()
        if not rows:
            raise ConfigError(f"no sweep matches {ref!r} in {self.path}; `nrun list` shows the sweeps")
        if len(rows) > 1:
            ids = ", ".join(r["id"] for r in rows[:5])
            raise ConfigError(f"{ref!r} matches several sweeps ({ids}); give more of the id")
        return _decode(rows[0])

    def sweeps(self, limit: int = 20) -> List[Dict[str, Any]]:
        rows = self._db.execute("SELECT * FROM sweeps ORDER BY created DESC LIMIT ?", (limit,))
        return [_decode(r) for r in rows]

    def points(self, sweep_id: str) -> List[Dict[str, Any]]:
        rows = self._db.execute("SELECT * FROM points WHERE sweep_id = ? ORDER BY idx", (sweep_id,))
        return [_decode(r) for r in rows]

    def point(self, sweep_id: str, idx: int) -> Dict[str, Any]:
        row = self._db.execute("SELECT * FROM points WHERE sweep_id = ? AND idx = ?",
                               (sweep_id, idx)).fetchone()
        if row is None:
            raise ConfigError(f"sweep {sweep_id} has no point {idx}; `nrun status {sweep_id}` lists them")
        return _decode(row)

    def events(self, sweep_id: str, idx: Optional[int] = None) -> List[Dict[str, Any]]:
        if idx is None:
            rows = self._db.execute("SELECT * FROM events WHERE sweep_id = ? ORDER BY time", (sweep_id,))
        else:
            rows = self._db.execute("SELECT * FROM events WHERE sweep_id = ? AND idx = ? ORDER BY time",
                                    (sweep_id, idx))
        return [dict(r) for r in rows]

    def counts(self, sweep_id: str) -> Dict[str, int]:
        rows = self._db.execute("SELECT state, COUNT(*) FROM points WHERE sweep_id = ? GROUP BY state",
                                (sweep_id,))
        return {state: n for state, n in rows}


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
