"""Select files under a base directory by include/exclude globs, for code outside git.

Globs use gitignore syntax through pathspec (``*.py`` matches at any depth, ``src/**`` everything
under src, ``/x`` only at the base, ``dir/`` a directory and its contents, ``!`` negates an earlier
glob of the same list). A file is packed when the include list matches it and the exclude list
does not; excluded directories are not entered. ``.git`` entries are never packed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pathspec import PathSpec

from nrun_core.packaging import listing
from nrun_core.packaging.fstree import FsFile


def pattern_files(
    base: Path, include: list[str], exclude: list[str], skip: Callable[[str, bool], bool] | None = None
) -> list[FsFile]:
    """Files and symlinks under ``base`` selected by the globs; paths relative to base.

    ``skip(path, is_dir)`` leaves out more (the launch's output dirs); a skipped directory is not entered.
    """
    inc = PathSpec.from_lines("gitignore", include)
    exc = PathSpec.from_lines("gitignore", exclude)
    files: list[FsFile] = []
    stack: list[tuple[str, str]] = [(str(base), "")]
    while stack:
        abs_dir, rel_dir = stack.pop()
        for entry, rel, is_dir in listing.entries(abs_dir, rel_dir, "fix its permissions or exclude it"):
            if skip is not None and skip(rel, is_dir):
                continue
            if is_dir:
                if not exc.match_file(rel + "/"):
                    stack.append((entry.path, rel))
            elif listing.packable(entry):
                if inc.match_file(rel) and not exc.match_file(rel):
                    files.append(listing.fs_file(rel, entry))
    return files
