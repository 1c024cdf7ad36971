"""nrun's runtime (the result callback) as a small read-only tree to mount into containers.

The point's command adds nrun's Hydra callback, so ``nrun_core.runtime`` must import inside the
image. Only ``nrun_core/__init__.py`` and ``nrun_core/runtime/*.py`` are needed (stdlib + hydra);
they are copied once into ``NRUN_HOME/runtime/<hash>/nrun_core`` (content-addressed: an upgrade
of nrun never changes what a running sweep mounts) and that directory goes on PYTHONPATH.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import List, Tuple

import nrun_core
from nrun_core.paths import nrun_home


def _sources() -> List[Tuple[str, Path]]:
    pkg = Path(nrun_core.__file__).resolve().parent
    files = [("nrun_core/__init__.py", pkg / "__init__.py")]
    files += [(f"nrun_core/runtime/{p.name}", p) for p in sorted((pkg / "runtime").glob("*.py"))]
    return files


def lib_dir(create: bool = True) -> str:
    """Host directory holding ``nrun_core/runtime``; created (atomically) unless it exists."""
    files = _sources()
    h = hashlib.sha256()
    for rel, path in files:
        h.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    dest = nrun_home() / "runtime" / h.hexdigest()[:16]
    if not create or dest.is_dir():
        return str(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".runtime-", dir=dest.parent))
    try:
        for rel, path in files:
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            os.chmod(target, 0o644)
        for d in (tmp, tmp / "nrun_core", tmp / "nrun_core" / "runtime"):
            os.chmod(d, 0o755)  # any container user must read it
        try:
            os.rename(tmp, dest)
        except OSError:
            if not dest.is_dir():  # another launcher won the race: theirs is identical
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(dest)
