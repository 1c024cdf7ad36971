"""Refuse, at pack time, symlinks that the executing side would refuse at unpack time.

Failing here, on the user's machine with the file names in hand, beats a job that dies remotely.
"""

from __future__ import annotations

import posixpath

from nrun_core.errors import PackagingError


def escapes(path: str, target: str) -> bool:
    """True if link ``path`` -> ``target`` points outside the tree it is packed in."""
    if target.startswith("/"):
        return True
    norm = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
    return norm == ".." or norm.startswith("../")


def check(links: list[tuple[str, str]], setting: str, how_to_exclude: str) -> None:
    """Raise PackagingError naming every escaping link and the ways out."""
    bad = [f"{p} -> {t}" for p, t in links if escapes(p, t)]
    if bad:
        shown = ", ".join(bad[:10]) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
        raise PackagingError(
            f"{setting}: {len(bad)} symlink(s) point outside the packed tree: {shown}. The executing "
            f"side refuses such links when unpacking. Make them relative links inside the tree, delete "
            f"them, or {how_to_exclude}."
        )
