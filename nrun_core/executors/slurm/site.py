"""Where Slurm is reached from: this machine (the login node) or a login node over SSH.

A site runs Slurm's client commands, submits a plan, and maps the points' files between the
launcher and the cluster. On the login node every path is shared and nothing moves; the SSH site
(``slurm_ssh``) ships the code, runs the commands remotely and copies results and logs back.
"""

from __future__ import annotations

import subprocess
from typing import Any, List, Mapping, Optional, Protocol, Sequence

from nrun_core.errors import BackendError
from nrun_core.spec import JobSpec

COMMAND_TIMEOUT_S = 60.0


class Site(Protocol):
    remote: bool

    def run(self, argv: Sequence[str], *, input: Optional[str] = None,
            timeout: float = COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess: ...

    def submit(self, plan: Any, secrets: Mapping[str, str]) -> List[str]: ...

    def prepare(self, specs: Sequence[JobSpec], ship: bool = True) -> List[JobSpec]: ...

    def code_dir(self, spec: JobSpec) -> str: ...

    def collect(self, spec: JobSpec, final: bool) -> None: ...

    def nrun_file(self, spec: JobSpec, name: str) -> str: ...

    def touch(self, path: str) -> None: ...

    def close(self) -> None: ...


class LocalSite:
    """sbatch, squeue, sacct and scancel on this machine; the filesystem is the cluster's."""

    remote = False

    def __init__(self) -> None:
        from nrun_core.transport.local import LocalTransport

        self.transport = LocalTransport()

    def run(self, argv: Sequence[str], *, input: Optional[str] = None,
            timeout: float = COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess:
        try:
            return self.transport.run(argv, input=input, timeout=timeout)
        except BackendError:
            raise BackendError(f"{argv[0]} is not installed here: run the sweep on the cluster's login "
                               "node, or submit over SSH with hydra.launcher.ssh.host=LOGIN_NODE") from None

    def submit(self, plan: Any, secrets: Mapping[str, str]) -> List[str]:
        from nrun_core.executors.slurm.submit import submit

        # secret_env values are already in this process's environment (checked at launch), and
        # sbatch exports it to the job: nothing to write down.
        return submit(plan)

    def prepare(self, specs: Sequence[JobSpec], ship: bool = True) -> List[JobSpec]:
        return list(specs)

    def code_dir(self, spec: JobSpec) -> str:
        from nrun_core.placement import code_dir_here

        return code_dir_here(spec)

    def collect(self, spec: JobSpec, final: bool) -> None:
        """Results and logs are already where the launcher reads them."""

    def nrun_file(self, spec: JobSpec, name: str) -> str:
        """A file of the point's nrun dir as the cluster sees it (pack record, cancel marker)."""
        return str(spec.nrun_dir / name)

    def touch(self, path: str) -> None:
        import os

        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, "a").close()

    def close(self) -> None:
        pass


def site_for(conf: Any) -> Any:
    """The local site, or an SSH site when hydra.launcher.ssh.host is set."""
    if conf.ssh.host:
        from nrun_core.executors.slurm.ssh import SshSite

        return SshSite(conf.ssh, python=conf.python)
    return LocalSite()
