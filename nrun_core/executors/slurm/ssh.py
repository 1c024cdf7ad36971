"""Submitting from a machine that is not the login node: nrun_slurm over SSH (paramiko).

The launcher keeps composing, packaging and watching locally; the login node gets:
- the packed code, once per artifact (``<remote_dir>/artifacts/<digest>.tar.gz``), unpacked
  safely by nrun's own unpacker into ``<remote_dir>/code/<digest>``;
- each point's job dir under ``<remote_dir>/sweeps/<sweep id>/`` (the local sweep dir's layout),
  with its payload; the point runtime there reads the code and job dir from its environment;
- the submission itself: the plan as JSON on the stdin of ``python -m
  nrun_core.executors.slurm.submit`` there, so submitit and sbatch run on the login node, and
  ``secret_env`` values travel in that same encrypted stdin (never on a command line or a disk).
squeue/sacct/scancel run over the same connection (``nrun_core.transport.ssh``); result files
and logs are copied back into the local job dirs, so everything downstream (the runner, ``nrun
logs``) reads local files.

Host keys are checked strictly: an unknown or changed key stops the submission. The login
node's Python needs hydra-nrun and submitit (``hydra.launcher.python``, default python3).
"""

from __future__ import annotations

import json
import os
import posixpath
import stat
import subprocess
from dataclasses import replace
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from nrun_core.errors import BackendError, ConfigError
from nrun_core.spec import JobSpec

DEFAULT_PYTHON = "python3"
FINAL_GLOBS = (".log", ".yaml")


class SshSite:
    remote = True

    def __init__(self, conf: Any, python: Optional[str]) -> None:
        from nrun_core.transport.ssh import SshTransport

        self.transport = SshTransport.from_conf(conf)
        self.host = self.transport.host
        self.remote_dir = str(conf.remote_dir or "nrun")
        self.python = python or DEFAULT_PYTHON
        self._root: Optional[str] = None
        self._shipped: set = set()
        self._remote: Dict[Tuple[str, int], JobSpec] = {}
        self._offsets: Dict[str, int] = {}

    def close(self) -> None:
        self.transport.close()

    def run(self, argv: Sequence[str], *, input: Optional[str] = None,
            timeout: float = 60.0) -> subprocess.CompletedProcess:
        """ARGV on the login node (every word quoted), with hydra.launcher.ssh.env exported."""
        return self.transport.run(argv, input=input, timeout=timeout)

    def submit(self, plan: Any, secrets: Mapping[str, str]) -> List[str]:
        payload = json.dumps({"plan": plan.to_json(), "env": dict(secrets)})
        out = self.run([self.python, "-m", "nrun_core.executors.slurm.submit"], input=payload, timeout=300)
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
                self.transport.makedirs(self.remote_dir)
                self._root = self.transport.realpath(self.remote_dir)
        return self._root

    def prepare(self, specs: Sequence[JobSpec], ship: bool = True) -> List[JobSpec]:
        """The points as the login node sees them; ships their code (once per artifact) and their
        payloads first."""
        root = self.root(connect=ship)
        local_root = _common_dir([s.job_dir for s in specs])
        out = []
        for spec in specs:
            if not spec.artifact:
                raise ConfigError("nrun_slurm over SSH ships the code to the login node: choose a packager, "
                                  "e.g. nrun/packager=workdir (or git); passthrough would run nothing")
            job_dir = posixpath.join(root, "sweeps", spec.sweep_id, os.path.relpath(spec.job_dir, local_root))
            remote = replace(spec, job_dir=job_dir)
            if ship:
                self._ship(spec.artifact, root)
                if os.path.exists(spec.payload_file):
                    self.transport.put(spec.payload_file, remote.payload_file)
            self._remote[(spec.sweep_id, spec.index)] = remote
            out.append(remote)
        return out

    def code_dir(self, spec: JobSpec) -> str:
        """Where the point's artifact is unpacked on the login node's filesystem."""
        return posixpath.join(self.root(connect=False), "code", spec.artifact or "")

    def _ship(self, digest: str, root: str) -> None:
        if digest in self._shipped:
            return
        from nrun_core.packaging import store

        archive = store.archive_path(digest)
        remote_archive = posixpath.join(root, "artifacts", archive.name)
        dest = posixpath.join(root, "code", digest)
        sftp = self.transport.sftp()
        try:
            have = sftp.stat(remote_archive).st_size == archive.stat().st_size
        except OSError:
            have = False
        if not have:
            self.transport.put(str(archive), remote_archive)
        limits = [f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("NRUN_UNPACK_MAX_")]
        out = self.run(["env", *limits, self.python, "-m", "nrun_core.packaging.unpack", remote_archive, dest],
                       timeout=300)
        if out.returncode != 0:
            raise BackendError(f"unpacking the code on {self.host} failed: {(out.stderr or out.stdout).strip()}")
        self._shipped.add(digest)

    def collect(self, spec: JobSpec, final: bool) -> None:
        """Copy the point's result (when final) and new log bytes into its local job dir."""
        remote = self._remote.get((spec.sweep_id, spec.index))
        if remote is None:
            return
        sftp = self.transport.sftp()
        os.makedirs(spec.nrun_dir, exist_ok=True)
        names = ["stdout.log", "stderr.log"]
        if final:
            try:
                names = sorted({*names, *(e.filename for e in sftp.listdir_attr(remote.job_dir)
                                          if stat.S_ISREG(e.st_mode or 0) and e.filename.endswith(FINAL_GLOBS))})
            except OSError:
                pass
            self.transport.get(remote.result_file, spec.result_file)
        for name in names:
            self._append(posixpath.join(remote.job_dir, name), os.path.join(spec.job_dir, name))

    def nrun_file(self, spec: JobSpec, name: str) -> str:
        """A file of the point's nrun dir on the login node (pack record, cancel marker)."""
        remote = self._remote.get((spec.sweep_id, spec.index), spec)
        return str(remote.nrun_dir / name)

    def touch(self, path: str) -> None:
        self.transport.makedirs(posixpath.dirname(path))
        with self.transport.sftp().open(path, "a"):
            pass

    def _append(self, remote: str, local: str) -> None:
        offset = self._offsets.get(local, 0)
        data = self.transport.read(remote, offset, 1 << 62)
        if data:
            with open(local, "ab") as out:
                out.write(data)
            self._offsets[local] = offset + len(data)


def _common_dir(job_dirs: Sequence[str]) -> str:
    parents = [os.path.dirname(d.rstrip("/")) for d in job_dirs]
    return os.path.commonpath(parents) if len(set(parents)) > 1 else parents[0]
