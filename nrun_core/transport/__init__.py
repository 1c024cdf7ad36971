"""File transport: where a point's files are, and how the launcher and the CLI reach them.

Points on this machine (or a shared filesystem) use ``LocalTransport``; points on hosts reached
over SSH use ``SshTransport`` (paramiko, host keys checked strictly). Both run commands, put and
get files and read byte ranges, so result files, logs and `nrun logs` work without a shared
filesystem. Backends build on them (the Slurm login node over SSH today, SSH hosts next).
"""

from __future__ import annotations

import subprocess
from typing import Optional, Protocol, Sequence

COMMAND_TIMEOUT_S = 60.0


class Transport(Protocol):
    remote: bool

    def run(self, argv: Sequence[str], *, input: Optional[str] = None,
            timeout: float = COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess: ...

    def put(self, local: str, remote: str) -> None: ...

    def get(self, remote: str, local: str) -> bool: ...

    def read(self, path: str, offset: int, size: int) -> bytes: ...

    def makedirs(self, path: str) -> None: ...

    def close(self) -> None: ...
