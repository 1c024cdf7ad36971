"""A host reached over SSH (paramiko) as a transport: commands, files, byte ranges.

Host keys are checked strictly against a known_hosts file: an unknown or changed key stops
before anything is sent. Every command word is quoted. One connection per process: after a fork
(the detached supervisor) the parent's transport thread is gone, so the child reconnects.
"""

from __future__ import annotations

import os
import posixpath
import shlex
import subprocess
import time
from typing import Any, Dict, Mapping, Optional, Sequence

from nrun_core.errors import BackendError, ConfigError
from nrun_core.transport import COMMAND_TIMEOUT_S


class SshTransport:
    remote = True

    def __init__(self, host: str, *, port: int = 22, user: Optional[str] = None,
                 key_file: Optional[str] = None, known_hosts: Optional[str] = None,
                 connect_timeout_s: float = 15.0, env: Optional[Mapping[str, str]] = None,
                 setting: str = "hydra.launcher.ssh") -> None:
        self.host, self.port, self.user = str(host), int(port or 22), user or None
        self.key_file = os.path.expanduser(key_file) if key_file else None
        self.known_hosts = os.path.expanduser(known_hosts or "~/.ssh/known_hosts")
        self.timeout = float(connect_timeout_s or 15.0)
        self.env: Dict[str, str] = {str(k): str(v) for k, v in (env or {}).items()}
        self.setting = setting
        self._client: Any = None
        self._sftp: Any = None
        self._pid: Optional[int] = None
        import threading

        self._lock = threading.RLock()  # executors call from several threads
        self._sftp_lock = threading.RLock()

    @classmethod
    def from_conf(cls, conf: Any, setting: str = "hydra.launcher.ssh") -> "SshTransport":
        """From an SSH settings dataclass (host, port, user, key_file, known_hosts, ...)."""
        return cls(conf.host, port=conf.port, user=conf.user, key_file=conf.key_file,
                   known_hosts=conf.known_hosts, connect_timeout_s=conf.connect_timeout_s,
                   env=conf.env, setting=setting)

    @property
    def where(self) -> str:
        return f"{self.user + '@' if self.user else ''}{self.host}:{self.port}"

    # -- connection -------------------------------------------------------------------
    def connect(self) -> Any:
        with self._lock:
            return self._connect()

    def _connect(self) -> Any:
        if self._client is not None and self._pid == os.getpid():
            transport = self._client.get_transport()
            if transport is not None and transport.is_active():
                return self._client
        import logging

        import paramiko

        logging.getLogger("paramiko").setLevel(logging.WARNING)  # not "Connected ..." in the app's log
        self._client = self._sftp = None
        s, where = self.setting, self.where
        if not os.path.exists(self.known_hosts):
            raise ConfigError(f"{s}.known_hosts={self.known_hosts} does not exist; nrun checks host keys "
                              f"strictly. Add the host's key (verify its fingerprint): "
                              f"ssh-keyscan -p {self.port} {self.host} >> {self.known_hosts}")
        client = paramiko.SSHClient()
        client.load_host_keys(self.known_hosts)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(self.host, port=self.port, username=self.user, key_filename=self.key_file,
                           timeout=self.timeout, banner_timeout=self.timeout, auth_timeout=self.timeout,
                           allow_agent=self.key_file is None, look_for_keys=self.key_file is None)
        except paramiko.BadHostKeyException as exc:
            raise BackendError(f"the host key of {where} does not match {self.known_hosts} (it changed, or "
                               f"this is not the machine you think): {exc}. Nothing was sent.") from None
        except paramiko.AuthenticationException as exc:
            raise BackendError(f"SSH login to {where} refused ({exc}); check {s}.user and {s}.key_file") from None
        except paramiko.SSHException as exc:
            if "not found in known_hosts" in str(exc):
                raise ConfigError(f"{where} is not in {self.known_hosts}; nrun checks host keys strictly. "
                                  f"Verify its fingerprint, then: ssh-keyscan -p {self.port} {self.host} >> "
                                  f"{self.known_hosts}") from None
            raise BackendError(f"SSH to {where} failed: {exc}") from None
        except OSError as exc:
            raise BackendError(f"cannot reach {where} ({s}.host/port): {exc}") from None
        self._client, self._pid = client, os.getpid()
        return client

    def sftp(self) -> Any:
        with self._lock:
            self.connect()
            if self._sftp is None:
                self._sftp = self._client.open_sftp()
            return self._sftp

    def close(self) -> None:
        if self._client is not None and self._pid == os.getpid():
            self._client.close()
        self._client = self._sftp = None

    # -- commands and files ------------------------------------------------------------
    def run(self, argv: Sequence[str], *, input: Optional[str] = None,
            timeout: float = COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess:
        """ARGV on the host (every word quoted), with the transport's env exported first."""
        from nrun_core.shell import exports

        line = shlex.join([str(a) for a in argv])
        if self.env:
            line = exports(self.env).replace("\n", "; ") + "; " + line
        stdin, stdout, stderr = self._exec(line, timeout)
        if input is not None:
            stdin.write(input)
        stdin.channel.shutdown_write()
        out = stdout.read().decode(errors="replace")
        err = stderr.read().decode(errors="replace")
        return subprocess.CompletedProcess(list(argv), stdout.channel.recv_exit_status(), out, err)

    def _exec(self, line: str, timeout: float) -> Any:
        """Open a channel for LINE. A host slow to answer (a loaded machine, sshd busy) or a
        connection that died gets a new connection and another try, twice, before the error:
        opening a channel runs nothing, so trying again cannot run a command twice."""
        import paramiko

        for attempt in range(3):
            client = self.connect()
            try:
                return client.exec_command(line, timeout=timeout)
            except (paramiko.SSHException, EOFError, OSError) as exc:
                if attempt == 2:
                    raise BackendError(f"SSH to {self.where}: could not open a session after 3 tries "
                                       f"({exc or type(exc).__name__})") from None
                with self._lock:
                    self.close()
                time.sleep(1.0 + attempt)
        raise AssertionError("unreachable")

    # SFTP calls hold one lock per connection: paramiko's SFTP client is not safe for requests
    # from several threads at once (one thread can read another's reply and both then wait).
    def put(self, local: str, remote: str) -> None:
        """Atomically: a partial upload never has the final name."""
        self.makedirs(posixpath.dirname(remote))
        with self._sftp_lock:
            sftp = self.sftp()
            tmp = f"{remote}.{os.getpid()}.part"
            sftp.put(local, tmp)
            sftp.posix_rename(tmp, remote)

    def get(self, remote: str, local: str) -> bool:
        tmp = f"{local}.{os.getpid()}.part"
        try:
            with self._sftp_lock:
                self.sftp().get(remote, tmp)
        except OSError:
            return False
        os.replace(tmp, local)
        return True

    def read(self, path: str, offset: int, size: int) -> bytes:
        try:
            with self._sftp_lock, self.sftp().open(path, "rb") as f:
                f.seek(offset)
                return f.read(size)
        except OSError:
            return b""

    def stat(self, path: str) -> Any:
        """The remote file's attributes (st_size, st_mode, ...), or None if it does not exist;
        other errors raise."""
        try:
            with self._sftp_lock:
                return self.sftp().stat(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if getattr(exc, "errno", None) == 2:
                return None
            raise

    def listdir_attr(self, path: str) -> list:
        with self._sftp_lock:
            return self.sftp().listdir_attr(path)

    def makedirs(self, path: str) -> None:
        out = self.run(["mkdir", "-p", path])
        if out.returncode != 0:
            raise BackendError(f"mkdir -p {path} on {self.host} failed: {(out.stderr or out.stdout).strip()}")

    def realpath(self, path: str) -> str:
        with self._sftp_lock:
            return self.sftp().normalize(path)
