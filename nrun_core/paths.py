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


# What nrun itself keeps in NRUN_HOME: a directory holding only these is nrun's alone.
_OURS = {"nrun.db", "artifacts", "snapshots", "supervisors", "runtime", "sandbox"}


def private_home(home: Path) -> None:
    """Make NRUN_HOME 0700, whatever the umask: it holds every sweep's commands, env and code.

    An existing one is tightened only if it is ours alone (owned by us, nothing but nrun's files in
    it), so pointing NRUN_HOME at a shared directory never changes who else can read that.
    """
    from nrun_core.errors import StoreError

    created = False
    try:
        home.parent.mkdir(parents=True, exist_ok=True)
        os.mkdir(home, 0o700)
        created = True
    except FileExistsError:
        pass
    except OSError as exc:
        raise StoreError(f"cannot create NRUN_HOME {home}: {exc.strerror}; set NRUN_HOME to a "
                         "directory you can write (default ~/.nrun)") from None
    try:
        st = home.stat()
        if created or (st.st_mode & 0o077 and st.st_uid == os.geteuid() and _ours_alone(home, st)):
            os.chmod(home, 0o700)
    except OSError:
        pass  # a directory we cannot stat or chmod: the store file itself is still 0600


def _ours_alone(home: Path, st: os.stat_result) -> bool:
    if st.st_mode & 0o1000 or home.resolve() in (Path.home().resolve(), Path("/")):
        return False  # sticky (/tmp-like) or someone's home: never ours alone
    return all(n.split("-")[0].split(".corrupt")[0] in _OURS for n in os.listdir(home))
