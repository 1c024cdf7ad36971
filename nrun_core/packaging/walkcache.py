"""The workdir packager's warm re-launch: the last walk's answer, reused while nothing it read changed.

A walk's answer (which files, their blob ids, the artifact's digest) depends only on the
directories it listed, the ignore files it read and the exclude settings. A directory's mtime
changes whenever an entry is added, removed or renamed in it, so while every listed directory
and every ignore file keeps the stat recorded, the file list is the same; one lstat per file
then says whether a content may have changed (size, mtime_ns, ctime_ns, inode, mode), as git's
index does. Never wrong: anything modified within ``RACY_NS`` before the record was taken (an
edit in the same timestamp tick would keep its stat) is not trusted, and whatever is not provably
unchanged falls back to the full walk (a directory) or to re-hashing (a file).

Records are ``marshal``-ed plain data under ``artifacts/walk/`` (NRUN_HOME is private): loading
10,000 entries takes a few ms, where JSON takes tens.
"""

from __future__ import annotations

import marshal
import os
import time
from pathlib import Path
from typing import Any, Optional

from nrun_core.packaging import store
from nrun_core.packaging.fstree import RACY_NS, FsFile

FORMAT = 2


def sig(st: os.stat_result) -> tuple:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_mode)


def _sig_of(path: str) -> Optional[tuple]:
    try:
        return sig(os.stat(path))
    except OSError:
        return None


class Walk:
    """What one full walk read, told by ``ignore.workdir_files``."""

    def __init__(self) -> None:
        self.started_ns = time.time_ns()
        self.dirs: list[tuple[str, int, int]] = []           # (abs path, mtime_ns, inode), before listing
        self.sources: list[tuple[str, Optional[tuple]]] = []  # ignore files: (abs path, stat or None)
        self.pruned: list[str] = []                            # dirs left out, relative to base

    def listing(self, abs_dir: str) -> None:
        st = os.stat(abs_dir)
        self.dirs.append((abs_dir, st.st_mtime_ns, st.st_ino))
        gi = os.path.join(abs_dir, ".gitignore")
        found = _sig_of(gi)
        if found is not None:  # a new one changes this directory's mtime
            self.sources.append((gi, found))

    def rules_read(self, rules: Any) -> None:
        """The directories between the repository's root and base (their .gitignore apply) and
        ``$GIT_DIR/info/exclude``."""
        from nrun_core.packaging.ignore import find_repo

        d = rules.top
        for part in [p for p in rules.base_rel.split("/") if p]:
            self.listing(str(d))
            d = d / part
        _, gitdir = find_repo(rules.base)
        if gitdir is not None:
            path = str(gitdir / "info" / "exclude")
            self.sources.append((path, _sig_of(path)))


def load(key: str) -> Optional[dict]:
    try:
        rec = marshal.loads((store.root() / "walk" / key).read_bytes())
    except (OSError, ValueError, EOFError, TypeError):
        return None
    return rec if isinstance(rec, dict) and rec.get("format") == FORMAT else None


def save(key: str, walk_started_ns: int, dirs: list, sources: list, pruned: list[str], outputs: list[str],
         files: list[FsFile], entries: list, digest: str, info: dict, prov: Any) -> None:
    by_path = {e.path: e for e in entries}
    files = sorted(files, key=lambda f: f.path)
    rec = {
        "format": FORMAT, "written_ns": walk_started_ns, "dirs": dirs, "sources": sources,
        "pruned": pruned, "outputs": outputs,
        "paths": [f.path for f in files], "abs": [f.abs for f in files], "sigs": [sig(f.st) for f in files],
        "rows": [[f.path, by_path[f.path].size] for f in files],  # the manifest's file rows, ready-made
        "digest": digest, "archive_bytes": info["archive_bytes"], "created": info["created"], "prov": prov,
    }
    rewrite(key, rec)


def rewrite(key: str, rec: dict) -> None:
    """Store a record atomically (a concurrent launch reads the old or the new one, whole)."""
    path = store.root() / "walk" / key
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{key}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(marshal.dumps(rec))
        os.replace(tmp, path)
    except OSError:  # a cache: losing it costs one slow launch
        tmp.unlink(missing_ok=True)


def listing_holds(rec: dict, outputs: list[str]) -> bool:
    """True when the recorded walk would list exactly the same files today."""
    if rec["outputs"] != outputs:  # other output dirs: fine only where the rules left them out anyway
        pruned = rec["pruned"]
        for d in set(rec["outputs"]) ^ set(outputs):
            if not any(d == p or d.startswith(p + "/") for p in pruned):
                return False
    trust = rec["written_ns"] - RACY_NS
    stat = os.stat
    for path, mtime, ino in rec["dirs"]:
        try:
            st = stat(path)
        except OSError:
            return False
        if st.st_mtime_ns != mtime or st.st_ino != ino or mtime >= trust:
            return False
    for path, recorded in rec["sources"]:
        now = _sig_of(path)
        if now != recorded or (now is not None and now[1] >= trust):
            return False
    return True


def unchanged_files(rec: dict) -> Optional[bool]:
    """One lstat per file: True if every file keeps its recorded, trusted stat; False if some
    may have changed; None if one is gone."""
    trust = rec["written_ns"] - RACY_NS
    lstat = os.lstat
    try:
        for a, s in zip(rec["abs"], rec["sigs"]):
            st = lstat(a)
            if st.st_mtime_ns >= trust or (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_mode) != s:
                return False
    except OSError:
        return None
    return True


def files_of(rec: dict) -> Optional[list[FsFile]]:
    """The recorded file list with fresh stats (for re-hashing what changed); None if one is gone."""
    try:
        return [FsFile(p, a, os.lstat(a)) for p, a in zip(rec["paths"], rec["abs"])]
    except OSError:
        return None


def git_state(base: Path) -> Optional[tuple]:
    """What the commit and the dirty list depend on besides the packed content: HEAD, the ref it
    names, packed-refs and the index (their stats). None where it cannot be told cheaply (a
    linked worktree, a submodule's .git file): then git is asked every time."""
    from nrun_core.packaging.ignore import find_repo

    top, gitdir = find_repo(base)
    if gitdir is None:
        return ("no-repo",)
    dot = top / ".git"
    if not dot.is_dir():
        return None
    try:
        head = (dot / "HEAD").read_bytes()
    except OSError:
        return None
    ref = head[5:].strip().decode(errors="replace") if head.startswith(b"ref: ") else ""
    return (head, _sig_of(str(dot / ref)) if ref else None, _sig_of(str(dot / "packed-refs")),
            _sig_of(str(dot / "index")))
