"""The git questions the git packager asks, each one subprocess with an argv list (no shell).

Every call sets ``GIT_OPTIONAL_LOCKS=0`` so that packing never takes the index lock the user's own
git commands (or IDE) may need. Errors keep git's words and say what to do.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from nrun_core.errors import PackagingError

SETTING = "hydra.launcher.packager"


def env() -> dict[str, str]:
    """The caller's environment, plus: never take optional locks."""
    return {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}


def git(args: list[str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    """Run ``git args`` in ``cwd``; the caller inspects the return code."""
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, env=env())
    except FileNotFoundError:
        raise PackagingError(
            f"{SETTING}.name=git: git is not installed (not found on PATH). Install git, or use "
            "nrun/packager=workdir to pack the directory honouring .gitignore."
        ) from None


def git_out(args: list[str], cwd: Path, what: str) -> bytes:
    p = git(args, cwd)
    if p.returncode != 0:
        raise PackagingError(f"{what}: git {' '.join(args[:2])} failed in {cwd}: {p.stderr.decode(errors='replace').strip()}")
    return p.stdout


def archive_cmd(treeish: str, prefix: str) -> list[str]:
    """argv for a tar ``git archive`` with 0644/0755 modes."""
    return ["git", "-c", "tar.umask=0022", "archive", "--format=tar", *([f"--prefix={prefix}"] if prefix else []), treeish]


@dataclass(frozen=True)
class Resolved:
    """A repository and the ref to pack, resolved to object ids."""

    toplevel: Path
    prefix: str  # the caller's cwd relative to toplevel ("" at the root)
    head: str | None
    commit: str
    tree: str  # the tree id at ``subpath`` of ``commit``


def resolve(source_dir: Path, ref: str, subpath: str) -> Resolved:
    """One ``git rev-parse`` for everything; on failure, find out which part failed and say so."""
    tree_spec = f"{ref}:{subpath}" if subpath else f"{ref}^{{tree}}"
    p = git(["rev-parse", "--show-toplevel", "--show-prefix", "HEAD", f"{ref}^{{commit}}", tree_spec, "--"], source_dir)
    if p.returncode != 0:
        _diagnose(source_dir, ref, subpath, p.stderr.decode(errors="replace").strip())
    top, prefix, head, commit, tree = p.stdout.decode(errors="surrogateescape").split("\n")[:5]
    return Resolved(Path(top), prefix.rstrip("/"), head, commit, tree)


def _diagnose(source_dir: Path, ref: str, subpath: str, stderr: str) -> None:
    if git(["rev-parse", "--show-toplevel"], source_dir).returncode != 0:
        raise PackagingError(
            f"{SETTING}.name=git: {source_dir} is not inside a git repository. Run `git init` and commit, "
            "or use nrun/packager=workdir (the directory honouring .gitignore) or nrun/packager=pattern."
        )
    if git(["rev-parse", "--verify", "--quiet", "HEAD"], source_dir).returncode != 0:
        raise PackagingError(
            f"{SETTING}.name=git: the repository at {source_dir} has no commits yet. Commit your code, "
            "or use nrun/packager=workdir."
        )
    if git(["rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", "--"], source_dir).returncode != 0:
        raise PackagingError(
            f"{SETTING}.ref={ref!r} is not a commit in this repository; use a branch, tag or commit id "
            "(default HEAD)."
        )
    if subpath:
        raise PackagingError(
            f"{SETTING}.subpath={subpath!r} does not exist at {ref}; it must be a directory committed "
            "in the repository, relative to its root."
        )
    raise PackagingError(f"{SETTING}: git rev-parse failed in {source_dir}: {stderr}")


def object_type(repo: Path, oid: str) -> str:
    return git_out(["cat-file", "-t", oid], repo, SETTING).decode().strip()


class Rules(Protocol):
    """What git needs of an ``exclude.Excluder``."""

    def excluded(self, path: str) -> bool: ...
    def git_args(self, prefix: str) -> list[str]: ...


@dataclass(frozen=True)
class Change:
    """A tracked path that differs from HEAD; ``head_mode`` is "000000" when HEAD lacks it."""

    path: str
    head_mode: str
    head_oid: str
    submodule: bool


def uncommitted(toplevel: Path, subpath: str, submodules: bool, ex: Rules | None = None) -> tuple[list[str], list[Change]]:
    """(paths that make the tree dirty, tracked changes that ``ex`` excludes), repo-relative.

    ``ex`` holds rules for the root at ``subpath``. Untracked paths come from ``ls-files``, not
    ``status``, because only ls-files takes extra rules: a directory holding nothing but excluded
    files is then not reported at all. Submodules are code and never excluded. Untracked
    directories end in '/'.
    """
    spec = ["--", subpath] if subpath else []
    out = git_out([
        "-c", "core.quotepath=off", "status", "--porcelain=v2", "-z", "--no-renames", "--untracked-files=no",
        f"--ignore-submodules={'none' if submodules else 'all'}", *spec,
    ], toplevel, f"{SETTING}.on_dirty")
    tracked = [_change(rec) for rec in out.split(b"\0") if rec[:2] in (b"1 ", b"u ")]
    args = ex.git_args(subpath) if ex else []
    others = git_out(
        ["ls-files", "-z", "-o", "--exclude-standard", "--directory", "--no-empty-directory", *args, *spec],
        toplevel, f"{SETTING}.on_dirty",
    )
    strip = len(subpath) + 1 if subpath else 0
    hidden: list[Change] = []
    dirty: set[str] = set()
    for c in tracked:
        if ex and not c.submodule and ex.excluded(c.path[strip:]):
            hidden.append(c)
        else:
            dirty.add(c.path)
    dirty.update(r.decode(errors="surrogateescape") for r in others.split(b"\0") if r)
    return sorted(dirty), hidden


def _change(rec: bytes) -> Change:
    """One porcelain v2 record: ``1 XY sub mH mI mW hH hI path`` or ``u XY sub m1 m2 m3 mW h1 h2 h3 path``."""
    if rec[:1] == b"1":
        f = rec.split(b" ", 8)
        mode, oid, path = f[3], f[6], f[8]
    else:  # unmerged: HEAD's side is stage 2
        f = rec.split(b" ", 10)
        mode, oid, path = f[4], f[8], f[10]
    return Change(path.decode(errors="surrogateescape"), mode.decode(), oid.decode(), f[2].startswith(b"S"))


def ls_files(repo: Path, subpath: str, exclude_args: list[str] | None = None) -> tuple[list[str], list[str], list[str]]:
    """(tracked paths, gitlink paths, untracked non-ignored paths) under ``subpath``, repo-relative.

    ``exclude_args`` (``--exclude`` rules) leave untracked paths out; tracked ones are always listed.
    """
    spec = ["--", subpath] if subpath else []
    tracked: dict[str, None] = {}
    gitlinks: list[str] = []
    for rec in git_out(["ls-files", "-z", "-s", *spec], repo, f"{SETTING}.on_dirty").split(b"\0"):
        if not rec:
            continue
        meta, _, path = rec.partition(b"\t")
        name = path.decode(errors="surrogateescape")
        if meta.startswith(b"160000 "):
            gitlinks.append(name)
        else:
            tracked[name] = None
    untracked = git_out(
        ["ls-files", "-z", "-o", "--exclude-standard", *(exclude_args or []), *spec], repo, f"{SETTING}.on_dirty"
    )
    others = [r.decode(errors="surrogateescape") for r in untracked.split(b"\0") if r]
    return list(tracked), sorted(set(gitlinks)), others


def blob(repo: Path, oid: str) -> bytes:
    """The content of a blob (a committed file, or a link's target)."""
    return git_out(["cat-file", "blob", oid], repo, f"{SETTING}.exclude")


def gitlinks(repo: Path, tree: str) -> list[tuple[str, str]]:
    """(path, commit) of every submodule recorded in ``tree``."""
    out = git_out(["ls-tree", "-r", "-z", tree], repo, f"{SETTING}.submodules")
    links = []
    for rec in out.split(b"\0"):
        if rec.startswith(b"160000 commit "):
            meta, _, path = rec.partition(b"\t")
            links.append((path.decode(errors="surrogateescape"), meta.split()[2].decode()))
    return links


def checked_out(sub_dir: Path) -> bool:
    """Whether a submodule has its own repository (``git submodule update --init`` was run)."""
    return (sub_dir / ".git").exists()


def has_commit(repo: Path, commit: str) -> bool:
    return git(["cat-file", "-e", f"{commit}^{{commit}}"], repo).returncode == 0
