"""Pack a list of files from disk, re-reading only files whose stats changed since last time.

Used for working trees (git ``on_dirty=include``, ``workdir``, ``pattern``). Each file's blob id is
cached against (size, mtime_ns, ctime_ns, inode, mode); a file modified within ``RACY_NS`` before
the cache was taken is never trusted (as git does for "racily clean" index entries), so an edit
that keeps size and lands in the same timestamp tick still gives a new artifact.
"""

from __future__ import annotations

import os
import stat
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

from nrun_core.errors import PackagingError
from nrun_core.packaging import links, store
from nrun_core.packaging.compress import GzipSink
from nrun_core.packaging.digest import MODE_EXEC, MODE_FILE, MODE_LINK, Entry, blob_hasher, blob_oid, tree_digest

RACY_NS = 2_000_000_000
_BUF = 1 << 20


@dataclass(frozen=True)
class FsFile:
    """A regular file or symlink to pack: its path in the archive, on disk, and its lstat."""

    path: str
    abs: str
    st: os.stat_result


@dataclass(frozen=True)
class Packed:
    digest: str
    entries: list[Entry]
    info: dict  # store.load_info record: created, archive_bytes, ...
    reused: bool


def git_mode(st: os.stat_result) -> int:
    """Git's view of a file's mode: link, executable (user x bit) or plain."""
    if stat.S_ISLNK(st.st_mode):
        return MODE_LINK
    return MODE_EXEC if st.st_mode & stat.S_IXUSR else MODE_FILE


def pack_files(files: list[FsFile], cache_key: str, setting: str, how_to_exclude: str) -> Packed:
    """Digest ``files`` (reading only changed ones) and store their archive unless already present."""
    started = time.time_ns()
    files = sorted(files, key=lambda f: f.path)
    targets = {f.path: os.readlink(f.abs) for f in files if stat.S_ISLNK(f.st.st_mode)}
    links.check(list(targets.items()), setting, how_to_exclude)
    cache = store.stat_cache_load(cache_key)
    trusted_before = cache["written_ns"] - RACY_NS
    oids: dict[str, str] = {}
    for f in files:
        row = cache["files"].get(f.abs)
        if row and row[:5] == _signature(f.st) and f.st.st_mtime_ns < trusted_before:
            oids[f.path] = row[5]
    unknown = [f for f in files if f.path not in oids]
    unknown_bytes = sum(f.st.st_size for f in unknown)
    total_bytes = sum(f.st.st_size for f in files)
    if unknown_bytes <= total_bytes // 2:  # few changes: hash them first, maybe nothing to write
        for f in unknown:
            oids[f.path] = _hash_file(f, targets)
        entries = [_entry(f, oids[f.path], targets) for f in files]
        digest = tree_digest(entries)
        if store.has(digest):
            if unknown or len(cache["files"]) != len(files):  # else the cache already says all this
                _save_cache(cache_key, files, oids, started)
            return Packed(digest, entries, store.load_info(digest), reused=True)
    tmp, entries = _write_archive(files, targets)
    digest = tree_digest(entries)
    reused = store.has(digest)
    info = store.publish(tmp, digest, entries)
    _save_cache(cache_key, files, {e.path: e.oid for e in entries}, started)
    return Packed(digest, entries, info, reused=reused)


def _signature(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_mode]


def _entry(f: FsFile, oid: str, targets: dict[str, str]) -> Entry:
    size = len(os.fsencode(targets[f.path])) if f.path in targets else f.st.st_size
    return Entry(f.path, git_mode(f.st), size, oid)


def _save_cache(cache_key: str, files: list[FsFile], oids: dict[str, str], started: int) -> None:
    store.stat_cache_save(cache_key, {f.abs: [*_signature(f.st), oids[f.path]] for f in files}, started)


def _hash_file(f: FsFile, targets: dict[str, str]) -> str:
    if f.path in targets:
        return blob_oid(os.fsencode(targets[f.path]))
    h = blob_hasher(f.st.st_size)
    n = 0
    try:
        with open(f.abs, "rb") as fh:
            for chunk in iter(lambda: fh.read(_BUF), b""):
                h.update(chunk)
                n += len(chunk)
    except OSError as e:
        raise PackagingError(f"cannot read {f.abs}: {e.strerror}; fix its permissions or exclude it") from e
    if n != f.st.st_size:
        raise PackagingError(f"{f.abs} changed while it was being packed; launch again")
    return h.hexdigest()


def _write_archive(files: list[FsFile], targets: dict[str, str]) -> tuple[Path, list[Entry]]:
    """Write files into a new tmp archive, hashing each as it is read; returns the entries.

    Headers come from the stdlib's ``TarInfo.tobuf`` (PAX, so long and non-ASCII names are
    exact); contents are copied straight to the gzip sink in large chunks, skipping tarfile's
    stream buffer, which re-copies its buffer on every small write.
    """
    tmp = store.new_tmp_archive()
    sink = GzipSink(tmp)
    entries: list[Entry] = []
    try:
        for f in files:
            info = tarfile.TarInfo(f.path)
            info.mtime = int(f.st.st_mtime)
            info.uname = info.gname = ""
            if f.path in targets:
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, targets[f.path], 0o777
                sink.write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
                entries.append(_entry(f, blob_oid(os.fsencode(targets[f.path])), targets))
                continue
            info.size = f.st.st_size
            info.mode = 0o755 if f.st.st_mode & stat.S_IXUSR else 0o644
            sink.write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
            entries.append(Entry(f.path, git_mode(f.st), f.st.st_size, _copy_file(f, sink)))
        sink.write(bytes(2 * tarfile.BLOCKSIZE))
        sink.close()
    except BaseException:
        sink.abort()
        raise
    return tmp, entries


def _copy_file(f: FsFile, sink: GzipSink) -> str:
    """Copy exactly the stat'ed size (then pad to a block), hashing it; returns the blob id."""
    h = blob_hasher(f.st.st_size)
    left = f.st.st_size
    try:
        with open(f.abs, "rb") as fh:
            while left:
                chunk = fh.read(min(left, _BUF))
                if not chunk:
                    raise PackagingError(f"{f.abs} shrank while it was being packed; launch again")
                h.update(chunk)
                sink.write(chunk)
                left -= len(chunk)
    except PermissionError as e:
        raise PackagingError(f"cannot read {f.abs}: permission denied; fix its permissions or exclude it") from e
    except OSError as e:
        raise PackagingError(f"cannot read {f.abs} ({e.strerror}); launch again, or exclude it") from e
    pad = -f.st.st_size % tarfile.BLOCKSIZE
    if pad:
        sink.write(bytes(pad))
    return h.hexdigest()
