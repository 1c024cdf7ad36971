"""List a directory's files the way git's ignore rules would, using pathspec's GitIgnoreSpec.

Rules in force, as git applies them (the deepest .gitignore that has a matching pattern decides,
the last matching pattern within a file wins, then ``$GIT_DIR/info/exclude``):

- every ``.gitignore`` from the enclosing repository's root down to each directory;
- directories that are ignored are not entered, so a ``!negation`` below an ignored directory does
  not re-include anything (git's documented behaviour);
- ``.git`` entries are never packed; symlinks are packed as links, never followed.

The user's global ``core.excludesFile`` is deliberately not read: a personal ignore list should not
change what a sweep ships, and two users packing the same tree should get the same artifact.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pathspec import GitIgnoreSpec

from nrun_core.errors import PackagingError
from nrun_core.packaging import listing
from nrun_core.packaging.fstree import FsFile

Specs = list[tuple[str, GitIgnoreSpec]]  # (directory relative to top, its .gitignore)


def find_repo(start: Path) -> tuple[Path, Path | None]:
    """The enclosing work tree's root and its git dir, or (start, None) outside any repository."""
    for d in (start, *start.parents):
        dot = d / ".git"
        if dot.is_dir():
            return d, dot
        if dot.is_file():
            text = dot.read_text(errors="replace").strip()
            if text.startswith("gitdir:"):
                gitdir = (d / text[len("gitdir:") :].strip()).resolve()
                common = gitdir / "commondir"
                if common.is_file():
                    gitdir = (gitdir / common.read_text().strip()).resolve()
                return d, gitdir
    return start, None


def _load(path: Path) -> GitIgnoreSpec | None:
    try:
        lines = path.read_text(encoding="utf-8", errors="surrogateescape").splitlines()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    return GitIgnoreSpec.from_lines(lines) if any(ln.strip() for ln in lines) else None


def own_verdict(spec: GitIgnoreSpec, probe: str) -> bool | None:
    """True/False from the last pattern of ``spec`` that matches ``probe`` itself; None if none does.

    pathspec answers for a path *or anything below it* (its regexes are searched, so a file under
    ``d/`` matches ``!d/``): right for a flat list of files, wrong for a walk that has already
    decided every parent directory. There, as in git, a pattern decides only for the path it names.
    So pathspec's own compiled regex must match up to the end of the probe (a directory probe ends
    in "/"); a trailing ``/**`` (or ``/**/``, directories only) must match strictly inside.
    """
    if spec.check_file(probe).include is None:  # fast path: nothing matches, not even a parent
        return None
    for pattern in reversed(spec.patterns):
        rx = pattern.regex
        if rx is None or pattern.include is None:
            continue
        text = str(pattern.pattern).rstrip()
        inside = text.endswith(("/**", "/**/"))
        if inside and text.endswith("/") and not probe.endswith("/"):
            continue
        if _anchored(rx.pattern, rx.flags, inside).search(probe):
            return bool(pattern.include)
    return None


@functools.lru_cache(maxsize=4096)
def _anchored(regex: str, flags: int, inside: bool) -> re.Pattern[str]:
    """pathspec's regex, required to end at the end of the probe (or, for ``/**``, before it)."""
    return re.compile(f"(?:{regex})(?=.)" if inside else f"(?:{regex})\\Z", flags)


class Rules:
    """The ignore rules in force under ``base``; paths are POSIX, relative to the repository root."""

    def __init__(self, base: Path) -> None:
        self.base = base.resolve()
        self.top, gitdir = find_repo(self.base)
        rel = self.base.relative_to(self.top).as_posix()
        self.base_rel = "" if rel == "." else rel
        self.exclude = _load(gitdir / "info" / "exclude") if gitdir else None

    def ignored(self, path: str, is_dir: bool, specs: Specs) -> bool:
        """Git's verdict for ``path`` (relative to the repository root) given the .gitignore files above it."""
        probe_suffix = "/" if is_dir else ""
        for d, spec in reversed(specs):
            sub = path[len(d) + 1 :] if d else path
            verdict = own_verdict(spec, sub + probe_suffix)
            if verdict is not None:
                return verdict
        if self.exclude is not None:
            verdict = own_verdict(self.exclude, path + probe_suffix)
            if verdict is not None:
                return verdict
        return False

    def specs_above_base(self) -> Specs:
        """.gitignore files of the base's ancestors inside the repository; raises if base is ignored."""
        specs: Specs = []
        d = ""
        for part in [p for p in self.base_rel.split("/") if p]:
            spec = _load(self.top / d / ".gitignore")
            if spec is not None:
                specs.append((d, spec))
            d = f"{d}/{part}" if d else part
            if self.ignored(d, True, specs):
                raise PackagingError(
                    f"hydra.launcher.packager.base_dir: {self.base} is itself ignored by the .gitignore rules "
                    f"of {self.top}, so the workdir packager would pack nothing. Use packager=pattern to pick "
                    "files explicitly, or change the .gitignore rule."
                )
        return specs


def workdir_files(base: Path, skip: Callable[[str, bool], bool] | None = None, record: Any = None) -> list[FsFile]:
    """Every file and symlink under ``base`` that git's ignore rules keep; paths relative to base.

    ``skip(path, is_dir)`` (path relative to base) leaves out more; a skipped directory is not entered.
    ``record`` (a ``walkcache.Walk``) is told every directory listed, every ignore file read and
    every directory left out, so a later launch can tell whether this answer still holds.
    """
    rules = Rules(base)
    strip = len(rules.base_rel) + 1 if rules.base_rel else 0
    files: list[FsFile] = []
    if record is not None:
        record.rules_read(rules)
    stack: list[tuple[str, str, Specs]] = [(str(rules.base), rules.base_rel, rules.specs_above_base())]
    while stack:
        abs_dir, rel_dir, specs = stack.pop()
        if record is not None:
            record.listing(abs_dir)
        spec = _load(Path(abs_dir) / ".gitignore")
        if spec is not None:
            specs = [*specs, (rel_dir, spec)]
        for entry, rel, is_dir in listing.entries(abs_dir, rel_dir, "fix its permissions or add it to .gitignore"):
            if rules.ignored(rel, is_dir, specs) or (skip is not None and skip(rel[strip:], is_dir)):
                if is_dir and record is not None:
                    record.pruned.append(rel[strip:])
                continue
            if is_dir:
                stack.append((entry.path, rel, specs))
            elif listing.packable(entry):
                files.append(listing.fs_file(rel[strip:], entry))
    return files
