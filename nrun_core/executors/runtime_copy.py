"""The point runtime as a small read-only directory to mount into containers or copy to hosts.

Only ``nrun_point.py`` (nrun_core/runtime/point.py: stdlib + hydra + omegaconf) is needed where
a point runs; it is copied once into ``NRUN_HOME/runtime/<hash>/`` (content-addressed: an upgrade
of nrun never changes what a running sweep mounts) and nothing goes on PYTHONPATH, so an nrun
installed in the image is never shadowed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from nrun_core.paths import nrun_home
from nrun_core.placement import runtime_file

FILE = "nrun_point.py"


def digest() -> str:
    return hashlib.sha256(Path(runtime_file()).read_bytes()).hexdigest()[:16]


def runtime_dir(create: bool = True) -> str:
    """Host directory holding ``nrun_point.py``; created (atomically) unless it exists."""
    dest = nrun_home() / "runtime" / digest()
    if not create or dest.is_dir():
        return str(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".runtime-", dir=dest.parent))
    try:
        shutil.copyfile(runtime_file(), tmp / FILE)
        os.chmod(tmp / FILE, 0o644)
        os.chmod(tmp, 0o755)  # any container user must read it
        try:
            os.rename(tmp, dest)
        except OSError:
            if not dest.is_dir():  # another launcher won the race: theirs is identical
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(dest)
