"""The content-addressed artifact store under ``NRUN_HOME/artifacts``.

Layout (all writes are atomic renames, so concurrent launches never see half a file)::

    artifacts/<digest>.tar.gz          the archive
    artifacts/<digest>.entries.json    what it holds: entries (path, mode, size, oid), created, bytes
    artifacts/index/<key>.json         git fast path: (repo, tree id, options) -> digest, file list
    artifacts/stat/<key>.json          file stats -> blob ids, so unchanged files are not re-read
    artifacts/tmp/                     archives being written

An artifact counts as present only when both its archive and its entries file exist; the entries
file is written first and the archive renamed into place last.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from nrun_core.packaging.digest import Entry, from_rows, to_rows
from nrun_core.paths import nrun_home

SUFFIX = ".tar.gz"


def root() -> Path:
    return nrun_home() / "artifacts"


def archive_path(digest: str) -> Path:
    return root() / f"{digest}{SUFFIX}"


def _entries_path(digest: str) -> Path:
    return root() / f"{digest}.entries.json"


def has(digest: str) -> bool:
    return archive_path(digest).is_file() and _entries_path(digest).is_file()


def key(*parts: Any) -> str:
    """A stable name for a cache record from JSON-able parts."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:40]


def new_tmp_archive() -> Path:
    """A fresh file in the store's tmp dir (same filesystem, so publishing is a rename)."""
    tmp_dir = root() / "tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="pack-", suffix=SUFFIX, dir=tmp_dir)
    os.close(fd)
    return Path(name)


def publish(tmp: Path, digest: str, entries: list[Entry]) -> dict[str, Any]:
    """Move a finished archive into place (or drop it if another launch got there first)."""
    if has(digest):
        tmp.unlink(missing_ok=True)
        return load_info(digest)
    info = {"digest": digest, "created": _now(), "archive_bytes": tmp.stat().st_size, "entries": to_rows(entries)}
    write_json(_entries_path(digest), info)
    os.chmod(tmp, 0o644)  # mkstemp made it private; artifacts are read by containers and other users
    os.replace(tmp, archive_path(digest))
    return info


def touch(digest: str) -> None:
    """Mark an artifact as just used: `nrun gc` keeps anything this young, so a launcher that
    reuses an old artifact keeps it until its sweep is recorded."""
    for path in (_entries_path(digest), archive_path(digest)):
        try:
            os.utime(path)
        except OSError:
            pass


def load_info(digest: str) -> dict[str, Any]:
    """The entries record of a present artifact: digest, created, archive_bytes, entries (rows)."""
    return json.loads(_entries_path(digest).read_text())


def load_entries(digest: str) -> list[Entry]:
    return from_rows(load_info(digest)["entries"])


def index_get(k: str) -> dict[str, Any] | None:
    """The git fast-path record for key ``k``, if its artifact is still present."""
    try:
        rec = json.loads((root() / "index" / f"{k}.json").read_text())
    except (OSError, ValueError):
        return None
    return rec if has(rec.get("digest", "")) else None


def index_put(k: str, rec: dict[str, Any]) -> None:
    write_json(root() / "index" / f"{k}.json", rec)


def stat_cache_load(k: str) -> dict[str, Any]:
    try:
        data = json.loads((root() / "stat" / f"{k}.json").read_text())
        if isinstance(data.get("files"), dict) and isinstance(data.get("written_ns"), int):
            return data
    except (OSError, ValueError, AttributeError):
        pass
    return {"written_ns": 0, "files": {}}


def stat_cache_save(k: str, files: dict[str, list], started_ns: int) -> None:
    """Save stats taken after ``started_ns``; files modified shortly before it are not trusted later."""
    write_json(root() / "stat" / f"{k}.json", {"written_ns": started_ns, "files": files})


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(data, separators=(",", ":")))  # dumps uses the C encoder; dump does not
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
