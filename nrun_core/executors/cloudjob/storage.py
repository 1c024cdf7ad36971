"""The shared storage a cloud job and the launcher both see (a Lepton NFS mount, a Run:ai PVC).

Nothing reaches a cloud job but through it: the launcher sees the storage at ``storage_dir`` (an
NFS/PVC mount on the launching machine), the job sees the same storage at ``mount_path``
(default: the same path, so job dirs, logs and results keep their names on both sides). The
sweep's code snapshot and the point runtime are copied once, content-addressed, under
``<storage_dir>/.nrun/``; every point's job dir must lie under ``storage_dir`` (the job writes its
logs and result there, the launcher reads them there). No step downloads anything at run time.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import tempfile
from typing import Optional

from nrun_core.errors import ConfigError
from nrun_core.executors import runtime_copy
from nrun_core.paths import nrun_home
from nrun_core.placement import Placement, runtime_file
from nrun_core.spec import JobSpec


class SharedStorage:
    def __init__(self, option: str, storage_dir: Optional[str], mount_path: Optional[str]) -> None:
        self.option = option  # hydra/launcher=<option>, for messages
        if not storage_dir:
            raise ConfigError(
                f"hydra.launcher.storage_dir is not set: {option} jobs reach their code and write their "
                "logs and results only through shared storage. Fix: set hydra.launcher.storage_dir to "
                "where this machine sees that storage (its NFS or PVC mount), and keep hydra.sweep.dir "
                "under it")
        self.local = os.path.abspath(os.path.expanduser(str(storage_dir)))
        self.remote = posixpath.normpath(str(mount_path or self.local))
        if not self.remote.startswith("/"):
            raise ConfigError(f"hydra.launcher.mount_path={mount_path!r}: must be an absolute path in the job")

    # -- paths -----------------------------------------------------------------------------
    def inside(self, path: str) -> bool:
        p = os.path.abspath(path)
        return p == self.local or p.startswith(self.local.rstrip("/") + "/")

    def to_job(self, path: str) -> str:
        """A launcher path under storage_dir → the same file as the job sees it."""
        rel = os.path.relpath(os.path.abspath(path), self.local)
        return self.remote if rel == "." else posixpath.join(self.remote, rel.replace(os.sep, "/"))

    def check_job_dir(self, spec: JobSpec) -> None:
        if not self.inside(spec.job_dir):
            raise ConfigError(
                f"the job dir {spec.job_dir} of point {spec.index} is not under hydra.launcher.storage_dir="
                f"{self.local}: a {self.option} job could not write its logs and result where nrun reads "
                f"them. Fix: hydra.sweep.dir={self.local}/multirun/${{now:%Y-%m-%d}}/${{now:%H-%M-%S}} "
                "(or any dir under storage_dir)")
        if not spec.artifact and not self.inside(spec.code_dir or os.getcwd()):
            raise ConfigError(
                f"nrun/packager=passthrough runs the tree {spec.code_dir or os.getcwd()} in place, but a "
                f"{self.option} job sees only hydra.launcher.storage_dir={self.local}. Fix: use the default "
                "packager (nrun/packager=workdir ships a snapshot through the storage), or launch from a "
                "tree under storage_dir")

    def code_dir(self, spec: JobSpec) -> str:
        """The code root the job runs from (launcher path)."""
        if spec.artifact:
            return os.path.join(self.local, ".nrun", "code", spec.artifact)
        return os.path.abspath(spec.code_dir or os.getcwd())

    def runtime_dir(self) -> str:
        return os.path.join(self.local, ".nrun", "runtime", runtime_copy.digest())

    def placement(self, spec: JobSpec, python: str) -> Placement:
        return Placement(python=python, runtime=self.to_job(os.path.join(self.runtime_dir(), runtime_copy.FILE)),
                         code_dir=self.to_job(self.code_dir(spec)), job_dir=self.to_job)

    # -- staging ---------------------------------------------------------------------------
    def stage(self, spec: JobSpec) -> None:
        """Copy the point runtime and the sweep's code snapshot onto the storage (once each,
        atomically: a concurrent sweep of the same code finds the copy complete or absent)."""
        rt = self.runtime_dir()
        if not os.path.isfile(os.path.join(rt, runtime_copy.FILE)):
            _copy_atomically(rt, lambda tmp: shutil.copyfile(runtime_file(), os.path.join(tmp, runtime_copy.FILE)))
        if spec.artifact:
            dest = self.code_dir(spec)
            if not os.path.isdir(dest):
                src = str(nrun_home() / "snapshots" / spec.artifact)
                if not os.path.isdir(src):
                    raise ConfigError(f"the code snapshot {src} is missing; run the sweep again")
                _copy_atomically(dest, lambda tmp: shutil.copytree(src, tmp, dirs_exist_ok=True, symlinks=True))
        os.makedirs(spec.nrun_dir, exist_ok=True)


def _copy_atomically(dest: str, fill) -> None:
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".stage-", dir=os.path.dirname(dest))
    try:
        fill(tmp)
        os.chmod(tmp, 0o755)
        try:
            os.rename(tmp, dest)
        except OSError:
            if not os.path.isdir(dest):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
