"""Shell completion for `nrun` (argcomplete): sweep ids and point numbers from the store.

Every TAB runs `nrun` once, so this stays cheap: argcomplete is imported only when the shell asks
(``_ARGCOMPLETE`` set), and the store is read with one or two indexed queries on a read-only
SQLite connection (no lock taken, nothing written, a missing store completes nothing).
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any, List, Optional

SHELLS = ("bash", "zsh", "fish")
MAX_SWEEPS = 200  # the newest ones; an older sweep is still reachable by typing more of its id
INSTALL = "pip install 'hydra-nrun[completion]'"


def autocomplete(parser: Any) -> None:
    """Answer the shell and exit when it asks for completions; otherwise return at once."""
    if "_ARGCOMPLETE" not in os.environ:
        return
    try:
        import argcomplete
    except ImportError:
        return  # nothing to offer; the shell shows no completion rather than an error
    argcomplete.autocomplete(parser)


def shell_hook(shell: str) -> str:
    """The script that makes SHELL complete `nrun` (to eval in the shell's rc file)."""
    try:
        import argcomplete
    except ImportError:
        from nrun_core.errors import ConfigError

        raise ConfigError(f"shell completion needs argcomplete; fix: {INSTALL}") from None
    return argcomplete.shellcode(["nrun"], shell=shell)


def _db() -> Optional[sqlite3.Connection]:
    from nrun_core.paths import nrun_home

    path = nrun_home() / "nrun.db"
    if not path.is_file():
        return None
    name = str(path.absolute()).replace("%", "%25").replace("?", "%3f").replace("#", "%23")
    try:
        return sqlite3.connect(f"file:{name}?mode=ro", uri=True, timeout=1.0)
    except sqlite3.Error:
        return None


def sweeps(prefix: str = "", **_: Any) -> List[str]:
    """Sweep ids (newest first) and names starting with PREFIX, and 'last'."""
    db = _db()
    if db is None:
        return []
    try:
        rows = db.execute("SELECT id, name FROM sweeps ORDER BY created DESC LIMIT ?", (MAX_SWEEPS,)).fetchall()
    except sqlite3.Error:
        return []
    finally:
        db.close()
    out = ["last"] + [r[0] for r in rows]
    out += sorted({r[1] for r in rows if r[1]} - set(out))
    return [x for x in out if x.startswith(prefix)]


def points(prefix: str = "", parsed_args: Any = None, **_: Any) -> List[str]:
    """Point numbers of the sweep already typed on the line (its id, prefix, name or 'last')."""
    ref = getattr(parsed_args, "sweep", None) or "last"
    db = _db()
    if db is None:
        return []
    try:
        sid = _resolve(db, ref)
        if sid is None:
            return []
        rows = db.execute("SELECT idx FROM points WHERE sweep_id = ? ORDER BY idx", (sid,)).fetchall()
    except sqlite3.Error:
        return []
    finally:
        db.close()
    return [str(r[0]) for r in rows if str(r[0]).startswith(prefix)]


def columns(prefix: str = "", parsed_args: Any = None, **_: Any) -> List[str]:
    """Columns of `nrun results` for the sweep on the line (for --sort), each also as '-COLUMN'."""
    try:
        from nrun_core import results
        from nrun_core.store import Store

        store = Store(create=False)
        names = results.load(store, store.sweep(getattr(parsed_args, "sweep", None) or "last")).columns
    except Exception:  # noqa: BLE001 - a completion never shows a traceback in the user's prompt
        return []
    return [c for c in [*names, *(f"-{n}" for n in names)] if c.startswith(prefix)]


def _resolve(db: sqlite3.Connection, ref: str) -> Optional[str]:
    """The sweep id REF names, as Store.sweep resolves it (exact id, unique prefix, name, 'last')."""
    if ref in ("last", "-"):
        row = db.execute("SELECT id FROM sweeps ORDER BY created DESC LIMIT 1").fetchone()
        return row[0] if row else None
    if db.execute("SELECT 1 FROM sweeps WHERE id = ?", (ref,)).fetchone():
        return ref
    rows = db.execute("SELECT id FROM sweeps WHERE id LIKE ? LIMIT 2", (ref.replace("%", "") + "%",)).fetchall()
    if len(rows) == 1:
        return rows[0][0]
    row = db.execute("SELECT id FROM sweeps WHERE name = ? ORDER BY created DESC LIMIT 1", (ref,)).fetchone()
    return row[0] if row else None
