"""Package the code of a sweep once, reproducibly, into a content-addressed artifact.

Packagers (config group ``nrun/packager``): ``passthrough`` (no artifact, run in place), ``git``
(git archive of a ref, submodules, dirty-tree policy), ``pattern`` (globs), ``hybrid`` (several
into one) and ``workdir`` (the directory honouring .gitignore). Artifacts live in
``NRUN_HOME/artifacts/<digest>.tar.gz``; the digest is of the packed content, so an unchanged tree
is never packed twice. The executing side extracts with ``unpack`` (``unpack.py`` is stdlib-only
and can be shipped on its own: see ``UNPACK_SCRIPT``).

Importing this package is cheap; the work modules are imported when a function is called.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Bound before ``def unpack`` below so the package attribute ``unpack`` is the function, not the
# submodule (importing a submodule later would otherwise shadow it).
from nrun_core.packaging import unpack as _unpack_module

UNPACK_SCRIPT = Path(_unpack_module.__file__)
PACKAGERS = ("passthrough", "git", "pattern", "hybrid", "workdir")
PREFIX = "hydra.launcher.packager"
log = logging.getLogger("nrun.packaging")


@dataclass(frozen=True)
class Artifact:
    """One packed tree: where the archive is, what it holds, and where to run from inside it."""

    path: Path
    digest: str
    manifest: dict
    workdir: str


def validate(cfg: Mapping[str, Any]) -> None:
    """Raise ConfigError for an unknown packager, unknown keys or bad values, before anything runs."""
    from nrun_core.packaging.config import normalize

    normalize(cfg)


def package(
    cfg: Mapping[str, Any], *, source_dir: Path, extra_exclude: Iterable[str | os.PathLike[str]] = ()
) -> Artifact | None:
    """Pack per ``cfg`` from the launch directory ``source_dir``; None for passthrough.

    ``extra_exclude``: the Hydra output dirs of this launch (the sweep dir, wherever
    ``hydra.sweep.dir`` puts it; relative paths start at ``source_dir``). Each one inside the packed
    tree is left out with all it holds, by every packager, like NRUN_HOME; for git, files there
    never make the tree dirty. Dirs outside the packed tree change nothing.
    """
    from nrun_core.errors import PackagingError

    art = _package(cfg, Path(source_dir).resolve(), tuple(extra_exclude))
    if art is not None and _reserved_at_root(art.manifest["files"]):
        raise PackagingError(
            f"{PREFIX}: the packed tree has {_unpack_module.MARKER!r} at its root, a name nrun keeps for "
            "itself (unpacking refuses it); rename or delete it, or leave it out with exclude / .gitignore"
        )
    return art


def _reserved_at_root(files: list) -> bool:
    """Whether a packed path's first part is a name unpacking keeps for itself (all start with a
    dot: only such paths are looked at, which keeps this cheap on 10,000 files)."""
    reserved = _unpack_module.RESERVED
    if all(r.startswith(".") for r in reserved):
        files = [row for row in files if row[0][:1] == "."]
    return any(p.split("/")[0].casefold() in reserved for p, _ in files)


def _package(cfg: Mapping[str, Any], source: Path, extra: tuple) -> Artifact | None:
    from functools import partial

    from nrun_core.packaging import store
    from nrun_core.packaging.config import normalize

    c = normalize(cfg)
    name = c["name"]
    if name == "passthrough":
        return None
    t0 = time.perf_counter()
    if name == "git":
        from nrun_core.packaging.gitpack import pack as run
    elif name == "workdir":
        from nrun_core.packaging.fspack import pack_workdir as run
    elif name == "pattern":
        from nrun_core.packaging.fspack import pack_pattern as run
    else:
        from nrun_core.packaging.hybrid import pack as hybrid_pack

        run = partial(hybrid_pack, package=lambda part, source_dir: _package(part, source_dir, extra))
    digest, manifest, workdir = run(c, source, extra)
    if manifest["reused"]:
        store.touch(digest)  # in use again: `nrun gc` keeps what is this young
    log.info(
        "%s artifact %s (%d files, %.1f MB, %s) in %.2fs",
        "reused" if manifest["reused"] else "packed", digest[:12], manifest["file_count"],
        manifest["total_bytes"] / 1e6, name, time.perf_counter() - t0,
    )
    return Artifact(store.archive_path(digest), digest, manifest, workdir)


def unpack(
    archive: Path, dest: Path, *, max_files: int | None = None, max_bytes: int | None = None,
    max_file_bytes: int | None = None,
) -> Path:
    """Safely extract ``archive`` into ``dest`` (absent or empty); no-op if dest already holds it.

    Limits: keyword, else ``NRUN_UNPACK_MAX_FILES`` / ``_BYTES`` / ``_FILE_BYTES``, else
    200,000 members and 20 GiB (see ``unpack.Limits``); 0 means none.
    """
    from nrun_core.errors import PackagingError

    try:
        out = _unpack_module.unpack(
            Path(archive), Path(dest), max_files=max_files, max_bytes=max_bytes, max_file_bytes=max_file_bytes
        )
    except _unpack_module.UnpackError as e:
        raise PackagingError(str(e)) from e
    try:
        os.utime(out)  # in use again (an existing snapshot): `nrun gc` keeps what is this young
    except OSError:
        pass
    return out
