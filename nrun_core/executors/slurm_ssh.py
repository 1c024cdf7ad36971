"""Submitting from a machine that is not the login node: nrun_slurm over SSH (paramiko).

The launcher keeps composing, packaging and watching locally; the login node gets:
- the packed code, once per artifact (``<remote_dir>/artifacts/<digest>.tar.gz``), unpacked
  safely by nrun's own unpacker into ``<remote_dir>/code/<digest>``;
- each point's job dir under ``<remote_dir>/sweeps/<sweep id>/`` (the local sweep dir's layout),
  with the point's command rewritten to those paths;
- the submission itself: the plan as JSON on the stdin of ``python -m
  nrun_core.executors.slurm_submit`` there, so submitit and sbatch run on the login node, and
  ``secret_env`` values travel in that same encrypted stdin (never on a command line or a disk).
squeue/sacct/scancel run over the same connection; result files and logs are copied back into
the local job dirs, so everything downstream (the runner, ``nrun logs``) reads local files.

Host keys are checked strictly: an unknown or changed key stops the submission. The login
node's Python needs hydra-nrun and submitit (``hydra.launcher.python``, default python3).
"""

from __future__ import annotations

import json
import os
import posixpath
import shlex
import stat
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from nrun_core.errors import BackendError, ConfigError
from nrun_core.spec import JobSpec

DEFAULT_PYTHON = "python3"
FINAL_GLOBS = (".log", ".yaml")


class SshSite:
    remote = True

    def __init__(self, conf: Mapping[str, Any], python: Optional[str]) -> None:
        self.host = str(conf["host"])
        self.port = int(conf.get("port") or 22)
        self.user = conf.get("user") or None
        self.key_file = os.path.expanduser(conf["key_file"]) if conf.get("key_file") else None
        self.known_hosts = os.path.expanduser(conf.get("known_hosts") or "~/.ssh/known_hosts")
        self.remote_dir = str(conf.get("remote_dir") or "nrun")
        self.timeout = float(conf.get("connect_timeout_s") or 15.0)
        self.env = {str(k): str(v) for k, v in (conf.get("env") or {}).items()}
        self.python = python or DEFAULT_PYTHON
        self._client: Any = None
        self._sftp: Any = None
        self._pid: Optional[int] = None
        self._root: Optional[str] = None
        self._shipped: set = set()
        self._remote: Dict[Tuple[str, int], JobSpec] = {}
        self._offsets: Dict[str, int] = {}

    # -- connection -------------------------------------------------------------------
    def _connect(self) -> Any:
        if self._client is not None and self._pid == os.getpid():
            transport = self._client.get_transport()
            if transport is not None and transport.is_active():
                return self._client
        import logging

        import paramiko

        logging.getLogger("paramiko").setLevel(logging.WARNING)  # not "Connected ..." in the app's log
        # After a fork (the detached supervisor) the parent's transport thread is gone: reconnect.
        self._client = self._sftp = None
        where = f"{self.user + '@' if self.user else ''}{self.host}:{self.port}"
        if not os.path.exists(self.known_hosts):
            raise ConfigError(f"hydra.launcher.ssh.known_hosts={self.known_hosts} does not exist; nrun checks "
                              f"host keys strictly. Add the login node's key (verify its fingerprint): "
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
            raise BackendError(f"SSH login to {where} refused ({exc}); check hydra.launcher.ssh.user and "
                               "hydra.launcher.ssh.key_file") from None
        except paramiko.SSHException as exc:
            if "not found in known_hosts" in str(exc):
                raise ConfigError(f"{where} is not in {self.known_hosts}; nrun checks host keys strictly. "
                                  f"Verify its fingerprint, then: ssh-keyscan -p {self.port} {self.host} >> "
                                  f"{self.known_hosts}") from None
            raise BackendError(f"SSH to {where} failed: {exc}") from None
        except OSError as exc:
            raise BackendError(f"cannot reach {where} (hydra.launcher.ssh.host/port): {exc}") from None
        self._client, self._pid = client, os.getpid()
        return client

    def _sftp_client(self) -> Any:
        self._connect()
        if self._sftp is None:
            self._sftp = self._client.open_sftp()
        return self._sftp

    def close(self) -> None:
        if self._client is not None and self._pid == os.getpid():
            self._client.close()
        self._client = self._sftp = None

    # -- commands ---------------------------------------------------------------------
    def run(self, argv: Sequence[str], *, input: Optional[str] = None,
            timeout: float = 60.0) -> subprocess.CompletedProcess:
        """ARGV on the login node (every word quoted), with hydra.launcher.ssh.env exported."""
        client = self._connect()
        from nrun_core.shell import exports

        line = shlex.join([str(a) for a in argv])
        if self.env:
            line = exports(self.env).replace("\n", "; ") + "; " + line
        stdin, stdout, stderr = client.exec_command(line, timeout=timeout)
        if input is not None:
            stdin.write(input)
        stdin.channel.shutdown_write()
        out = stdout.read().decode(errors="replace")
        err = stderr.read().decode(errors="replace")
        return subprocess.CompletedProcess(list(argv), stdout.channel.recv_exit_status(), out, err)

    def submit(self, plan: Any, secrets: Mapping[str, str]) -> List[str]:
        payload = json.dumps({"plan": plan.to_json(), "env": dict(secrets)})
        out = self.run([self.python, "-m", "nrun_core.executors.slurm_submit"], input=payload, timeout=300)
        try:
            answer = json.loads(out.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise BackendError(f"the submit helper on {self.host} did not answer (exit {out.returncode}): "
                               f"{(out.stderr or out.stdout).strip()[-2000:]}; hydra.launcher.python must be "
                               "a Python with hydra-nrun and submitit installed on the login node") from None
        if "error" in answer:
            raise BackendError(f"on {self.host}: {answer['error']}")
        return [str(i) for i in answer["ids"]]

    # -- files ------------------------------------------------------------------------
    def root(self, connect: bool = True) -> str:
        """The absolute remote_dir on the login node (shown unresolved in a dry run)."""
        if self._root is None:
            if posixpath.isabs(self.remote_dir):
                self._root = self.remote_dir
            elif not connect:
                return posixpath.join("$HOME", self.remote_dir)
            else:
                self.run(["mkdir", "-p", self.remote_dir])
                self._root = self._sftp_client().normalize(self.remote_dir)
        return self._root

    def prepare(self, specs: Sequence[JobSpec], ship: bool = True) -> List[JobSpec]:
        """The points as the login node sees them; ships their code first (once per artifact)."""
        root = self.root(connect=ship)
        local_root = _common_dir([s.job_dir for s in specs])
        out = []
        for spec in specs:
            if not spec.artifact:
                raise ConfigError("nrun_slurm over SSH ships the code to the login node: choose a packager, "
                                  "e.g. nrun/packager=workdir (or git); passthrough would run nothing")
            if ship:
                self._ship(spec.artifact, root)
            code_local = str(_snapshot_root(spec.artifact))
            code_remote = posixpath.join(root, "code", spec.artifact)
            job_dir = posixpath.join(root, "sweeps", spec.sweep_id, os.path.relpath(spec.job_dir, local_root))
            remote = replace(spec, job_dir=job_dir, workdir=_moved(spec.workdir, code_local, code_remote),
                             command=[_arg(a, code_local, code_remote, job_dir) for a in spec.command])
            self._remote[(spec.sweep_id, spec.index)] = remote
            out.append(remote)
        return out

    def _ship(self, digest: str, root: str) -> None:
        if digest in self._shipped:
            return
        from nrun_core.packaging import store

        archive = store.archive_path(digest)
        remote_archive = posixpath.join(root, "artifacts", archive.name)
        dest = posixpath.join(root, "code", digest)
        sftp = self._sftp_client()
        self.run(["mkdir", "-p", posixpath.dirname(remote_archive)])
        try:
            have = sftp.stat(remote_archive).st_size == archive.stat().st_size
        except OSError:
            have = False
        if not have:
            tmp = f"{remote_archive}.{os.getpid()}.part"
            sftp.put(str(archive), tmp)
            sftp.posix_rename(tmp, remote_archive)
        out = self.run([self.python, "-m", "nrun_core.packaging.unpack", remote_archive, dest], timeout=300)
        if out.returncode != 0:
            raise BackendError(f"unpacking the code on {self.host} failed: {(out.stderr or out.stdout).strip()}")
        self._shipped.add(digest)

    def collect(self, spec: JobSpec, final: bool) -> None:
        """Copy the point's result (when final) and new log bytes into its local job dir."""
        remote = self._remote.get((spec.sweep_id, spec.index))
        if remote is None:
            return
        sftp = self._sftp_client()
        os.makedirs(spec.nrun_dir, exist_ok=True)
        names = ["stdout.log", "stderr.log"]
        if final:
            try:
                names = sorted({*names, *(e.filename for e in sftp.listdir_attr(remote.job_dir)
                                          if stat.S_ISREG(e.st_mode or 0) and e.filename.endswith(FINAL_GLOBS))})
            except OSError:
                pass
            _get(sftp, remote.result_file, spec.result_file)
        for name in names:
            self._append(sftp, posixpath.join(remote.job_dir, name), os.path.join(spec.job_dir, name))

    def _append(self, sftp: Any, remote: str, local: str) -> None:
        offset = self._offsets.get(local, 0)
        try:
            with sftp.open(remote, "rb") as f:
                f.seek(offset)
                data = f.read()
        except OSError:
            return
        if data:
            with open(local, "ab") as out:
                out.write(data)
            self._offsets[local] = offset + len(data)


def _get(sftp: Any, remote: str, local: str) -> None:
    try:
        tmp = f"{local}.part"
        sftp.get(remote, tmp)
        os.replace(tmp, local)
    except OSError:
        pass


def _snapshot_root(digest: str) -> Path:
    from nrun_core.paths import nrun_home

    return nrun_home() / "snapshots" / digest


def _moved(path: str, old_root: str, new_root: str) -> str:
    rel = os.path.relpath(path, old_root)
    return path if rel.startswith("..") else posixpath.normpath(posixpath.join(new_root, rel))


def _arg(arg: str, code_local: str, code_remote: str, job_dir: str) -> str:
    from nrun_core.command import _hydra_quote

    if arg.startswith("hydra.run.dir="):
        return f"hydra.run.dir={_hydra_quote(job_dir)}"
    if os.path.isabs(arg):
        return _moved(arg, code_local, code_remote)
    return arg


def _common_dir(job_dirs: Sequence[str]) -> str:
    parents = [os.path.dirname(d.rstrip("/")) for d in job_dirs]
    return os.path.commonpath(parents) if len(set(parents)) > 1 else parents[0]
