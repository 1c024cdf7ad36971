"""Where nrun keeps its state: NRUN_HOME for sweeps and artifacts, a sandbox dir per backend."""

from __future__ import annotations

import os
from pathlib import Path


def nrun_home() -> Path:
    """The store, artifacts and detached supervisors live here (``$NRUN_HOME``, default ~/.nrun)."""
    return Path(os.environ.get("NRUN_HOME") or Path.home() / ".nrun").expanduser()


def sandbox_dir(name: str) -> Path:
    """State of ``nrun sandbox NAME`` (``$NRUN_SANDBOX_DIR/NAME``, default ~/.nrun/sandbox/NAME).

    Independent of NRUN_HOME so that tests with a private store still share one sandbox cluster.
    Kept short: unix socket paths (munge, docker) must stay under 108 bytes.
    """
    root = os.environ.get("NRUN_SANDBOX_DIR") or Path.home() / ".nrun" / "sandbox"
    return Path(root).expanduser() / name


def cache_dir() -> Path:
    """Slow-to-build things (base images, package downloads) cached across runs on this machine."""
    return Path(os.environ.get("NRUN_CACHE_DIR") or Path.home() / ".cache" / "nrun").expanduser()
