"""This machine as a transport: commands are subprocesses, files are files."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Optional, Sequence

from nrun_core.errors import BackendError
from nrun_core.transport import COMMAND_TIMEOUT_S


class LocalTransport:
    remote = False

    def run(self, argv: Sequence[str], *, input: Optional[str] = None,
            timeout: float = COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(list(argv), input=input, capture_output=True, text=True, timeout=timeout)
        except FileNotFoundError:
            raise BackendError(f"{argv[0]} is not installed on this machine") from None
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(list(argv), 124, "", f"no answer within {timeout:.0f} s")

    def put(self, local: str, remote: str) -> None:
        if os.path.abspath(local) != os.path.abspath(remote):
            self.makedirs(os.path.dirname(remote))
            tmp = f"{remote}.{os.getpid()}.part"
            shutil.copyfile(local, tmp)
            os.replace(tmp, remote)

    def get(self, remote: str, local: str) -> bool:
        if not os.path.exists(remote):
            return False
        self.put(remote, local)
        return True

    def read(self, path: str, offset: int, size: int) -> bytes:
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                return f.read(size)
        except FileNotFoundError:
            return b""

    def makedirs(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def close(self) -> None:
        pass
