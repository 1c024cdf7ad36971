"""One directory's entries as the packagers' walks see them (git's ignore rules, include/exclude
globs): ``.git`` never, each with its path relative to the walk's base and whether it is a
directory (links are not followed); a directory that cannot be listed stops the packing with a
message naming it and the fix."""

from __future__ import annotations

import os
from collections.abc import Iterator

from nrun_core.errors import PackagingError
from nrun_core.packaging.fstree import FsFile


def entries(abs_dir: str, rel_dir: str, fix: str) -> Iterator[tuple[os.DirEntry, str, bool]]:
    """(entry, path relative to the base, is a directory) of ``abs_dir`` (``rel_dir`` from the base)."""
    try:
        it = os.scandir(abs_dir)
    except OSError as e:
        raise PackagingError(f"cannot list {abs_dir}: {e.strerror}; {fix}") from e
    with it:
        for entry in it:
            if entry.name == ".git":
                continue
            yield entry, (f"{rel_dir}/{entry.name}" if rel_dir else entry.name), entry.is_dir(follow_symlinks=False)


def packable(entry: os.DirEntry) -> bool:
    """A regular file or a symlink (sockets, fifos and devices are never packed)."""
    return entry.is_file(follow_symlinks=False) or entry.is_symlink()


def fs_file(path: str, entry: os.DirEntry) -> FsFile:
    return FsFile(path, entry.path, entry.stat(follow_symlinks=False))
