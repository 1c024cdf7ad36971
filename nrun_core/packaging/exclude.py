"""What no packager packs: ``exclude`` patterns, this launch's Hydra output dirs, and NRUN_HOME.

Hydra writes the sweep dir (``multirun.yaml``, secrets included) before the launcher runs, and
earlier runs leave ``outputs/`` and ``multirun/`` behind: packing them would leak those files,
make every git tree dirty, and give every sweep a new artifact.

Patterns are .gitignore lines relative to the packed root, applied as git applies them: a path is
left out when it or a directory above it matches, so ``!`` cannot re-include a file below an
excluded directory. Output dirs are literal paths (no globbing), left out with all they hold.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from pathspec import GitIgnoreSpec

from nrun_core.packaging.ignore import own_verdict

log = logging.getLogger("nrun.packaging")
Extra = Iterable["str | os.PathLike[str]"]


class Excluder:
    """The rules for one packed root; paths are POSIX and relative to that root."""

    def __init__(self, root: Path, patterns: Sequence[str], extra: Extra = (), *, source_dir: Path | None = None) -> None:
        self.patterns = [p for p in patterns if p.strip() and not p.startswith("#")]
        self.spec = GitIgnoreSpec.from_lines(self.patterns) if self.patterns else None
        self.dirs = frozenset(output_dirs(root, extra, source_dir or root))

    def __bool__(self) -> bool:
        return self.spec is not None or bool(self.dirs)

    def own(self, path: str, is_dir: bool) -> bool:
        """Whether ``path`` itself is excluded, its parents aside (for walks that pruned them)."""
        if path in self.dirs:
            return True
        return self.spec is not None and own_verdict(self.spec, path + "/" if is_dir else path) is True

    def excluded(self, path: str) -> bool:
        """Whether a file at ``path`` is excluded, by itself or by a directory above it."""
        parts = path.split("/")
        return any(self.own("/".join(parts[:i]), True) for i in range(1, len(parts))) or self.own(path, False)

    def git_args(self, prefix: str) -> list[str]:
        """``--exclude`` options giving git the same rules, for a root at ``prefix`` in the repository."""
        rules = [_reroot(p, prefix) for p in self.patterns]
        rules += ["/" + _escape(f"{prefix}/{d}" if prefix else d) + "/" for d in sorted(self.dirs)]
        return [f"--exclude={rule}" for rule in rules]


def output_dirs(root: Path, extra: Extra, source_dir: Path) -> list[str]:
    """``extra`` (relative ones start at ``source_dir``) and NRUN_HOME, as paths inside ``root``."""
    from nrun_core.paths import nrun_home

    real_root = os.path.realpath(root)
    out = []
    for raw, is_extra in [*((e, True) for e in extra), (nrun_home(), False)]:
        path = os.path.realpath(os.path.join(source_dir, os.path.expanduser(os.fspath(raw))))
        if _within(real_root, path):
            if is_extra:
                log.warning("%s holds the whole packed tree %s, so its outputs cannot be left out of the "
                            "artifact; set hydra.sweep.dir outside the code", path, real_root)
        elif _within(path, real_root):
            out.append(Path(os.path.relpath(path, real_root)).as_posix())
    return out


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _reroot(pattern: str, prefix: str) -> str:
    """A .gitignore line relative to ``prefix`` rewritten relative to the repository root."""
    if not prefix:
        return pattern
    neg = "!" if pattern.startswith("!") else ""
    body = pattern[len(neg):]
    slash = "/" if body.endswith("/") else ""
    core = body[: len(body) - len(slash)]
    if "/" in core:  # anchored: relative to the root it was written for
        return f"{neg}/{_escape(prefix)}/{core.removeprefix('/')}{slash}"
    return f"{neg}/{_escape(prefix)}/**/{core}{slash}"


def _escape(literal: str) -> str:
    """A path as a .gitignore pattern matching only itself."""
    return re.sub(r"([\\*?\[\]!#])", r"\\\1", literal)
