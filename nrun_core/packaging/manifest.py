"""The manifest: what an artifact holds and where it came from, as plain JSON-able data.

``dirty`` is true only when the artifact differs from ``commit`` (uncommitted edits were packed,
listed in ``dirty_files``); edits that were left out under ``on_dirty=warn`` are listed in
``left_out`` instead, so a clean ``dirty`` always means "this artifact is exactly that commit".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nrun_core.packaging import store


def build(
    *,
    cfg: dict[str, Any],
    source_dir: Path,
    root: Path,
    commit: str | None,
    dirty: bool,
    dirty_files: list[str],
    left_out: list[str],
    files: list[list],
    digest: str,
    workdir: str,
    info: dict[str, Any],
    reused: bool,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "nrun_manifest": 1,
        "packager": cfg,
        "source_dir": str(source_dir),
        "root": str(root),
        "commit": commit,
        "dirty": dirty,
        "dirty_files": dirty_files,
        "left_out": left_out,
        "digest": digest,
        "archive": str(store.archive_path(digest)),
        "archive_bytes": info["archive_bytes"],
        "created": info["created"],
        "reused": reused,
        "workdir": workdir,
        "file_count": len(files),
        "total_bytes": sum(size for _, size in files),
        "files": files,
        **extra,
    }


def file_rows(entries: list) -> list[list]:
    """[[path, size], ...] sorted by path, from Entry objects."""
    return [[e.path, e.size] for e in sorted(entries, key=lambda e: e.path)]


def caller_position(source_dir: Path, root: Path) -> str:
    """Where the caller's cwd sits inside the packed tree ("" when at or outside its root)."""
    try:
        rel = source_dir.resolve().relative_to(root.resolve())
    except ValueError:
        return ""
    return "" if str(rel) == "." else rel.as_posix()
