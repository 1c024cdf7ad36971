"""What an artifact is, independent of how it was compressed: a list of entries and their digest.

Each file is identified the way git identifies a blob (SHA-1 of ``blob <size>\\0<content>``), so
trees packed from git, from a working directory or from globs are described in the same terms.
The artifact digest is SHA-256 over the sorted ``mode oid path`` lines: it changes whenever any
included path, executable bit, link target or byte of content changes, and never otherwise.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

FORMAT = "nrun-tree-v1"
MODE_FILE, MODE_EXEC, MODE_LINK = 0o100644, 0o100755, 0o120000


@dataclass(frozen=True)
class Entry:
    """One packed file or symlink; ``oid`` is its git blob id (a link's blob is its target)."""

    path: str
    mode: int
    size: int
    oid: str


def blob_hasher(size: int) -> "hashlib._Hash":
    """A SHA-1 primed with git's blob header, to be fed exactly ``size`` bytes of content."""
    h = hashlib.sha1(usedforsecurity=False)
    h.update(b"blob %d\0" % size)
    return h


def blob_oid(data: bytes) -> str:
    h = blob_hasher(len(data))
    h.update(data)
    return h.hexdigest()


def tree_digest(entries: list[Entry]) -> str:
    """SHA-256 of the sorted entry lines; the name of the artifact in the store."""
    h = hashlib.sha256(FORMAT.encode() + b"\n")
    for e in sorted(entries, key=lambda e: e.path):
        h.update(b"%o %s %s\0" % (e.mode, e.oid.encode(), e.path.encode("utf-8", "surrogateescape")))
    return h.hexdigest()


def to_rows(entries: list[Entry]) -> list[list]:
    return [[e.path, e.mode, e.size, e.oid] for e in entries]


def from_rows(rows: list[list]) -> list[Entry]:
    return [Entry(p, int(m), int(s), o) for p, m, s, o in rows]
