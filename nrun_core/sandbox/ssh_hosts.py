"""The SSH "hosts" of `nrun sandbox ssh`: N real sshds that an executor can treat as a cluster.

Host k (1..N, N = $NRUN_SANDBOX_SSH_HOSTS, default 2) is ``nrun-host<k>`` on 127.0.0.(10+k):22.
Each runs in its own UTS + mount + PID namespace (no network namespace: loopback addresses only,
so nothing can leave the machine), with its own hostname, an /etc/hosts in which every host name
resolves to its own address (gloo needs that), its own /tmp (a per-host directory under the
sandbox dir, emptied when the host starts, like a boot) and its own pids. Everything else (the
venv, /root, the Docker socket) is the real machine's. sshd itself is the namespace's init: its
pid is what we record, and stopping it ends every process of that host.

``hosts.yaml`` (``NRUN_SSH_HOSTS_FILE``) describes the hosts for the executor.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from nrun_core.errors import SandboxError
from nrun_core.paths import sandbox_dir
from nrun_core.sandbox import _proc

COUNT_ENV = "NRUN_SANDBOX_SSH_HOSTS"
DEFAULT_COUNT = 2
MAX_COUNT = 64
PORT = 22
SLOTS = 2  # points a host runs at once
REMOTE_DIR = "/tmp/nrun"
START_TIMEOUT = 20.0
PATH_ENV = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
logger = logging.getLogger(__name__)

# Runs as pid 1 of the new namespaces (unshare already made every mount private; done again so
# the script is safe on its own). Arguments: name, hosts file, private tmp dir, sshd, its config,
# then the paths under /tmp that the host must still see (bound into its private /tmp).
SETUP = r"""set -eu
name=$1 hosts=$2 tmp=$3 sshd=$4 config=$5
shift 5
mount --make-rprivate /
hostname "$name"
mount --bind "$hosts" /etc/hosts
for path in "$@"; do
    mkdir -p "$tmp${path#/tmp}"
    mount --bind "$path" "$tmp${path#/tmp}"
done
mount --rbind "$tmp" /tmp
exec "$sshd" -D -e -f "$config"
"""


@dataclass(frozen=True)
class Host:
    """One sandbox host; everything about it follows from its number."""

    index: int

    @property
    def name(self) -> str:
        return f"nrun-host{self.index}"

    @property
    def address(self) -> str:
        return f"127.0.0.{10 + self.index}"

    @property
    def dir(self) -> Path:
        return hosts_dir() / self.name

    @property
    def host_key(self) -> Path:
        return self.dir / "host_ed25519"

    @property
    def config(self) -> Path:
        return self.dir / "sshd_config"

    @property
    def log(self) -> Path:
        return self.dir / "sshd.log"

    @property
    def record(self) -> Path:
        return self.dir / "sshd.json"  # the namespace init (sshd)

    @property
    def wrapper_record(self) -> Path:
        return self.dir / "unshare.json"  # the unshare process waiting for it

    @property
    def tmp(self) -> Path:
        return self.dir / "tmp"  # the host's /tmp


def hosts_dir() -> Path:
    return sandbox_dir("ssh") / "hosts"


def hosts_file() -> Path:
    return sandbox_dir("ssh") / "hosts.yaml"


def etc_hosts() -> Path:
    return hosts_dir() / "etc_hosts"  # one file, bound as /etc/hosts in every host


def count() -> int:
    """N from $NRUN_SANDBOX_SSH_HOSTS, checked before anything starts."""
    raw = os.environ.get(COUNT_ENV, "").strip() or str(DEFAULT_COUNT)
    try:
        n = int(raw)
    except ValueError:
        n = -1
    if not 0 <= n <= MAX_COUNT:
        raise SandboxError(f"{COUNT_ENV}={raw!r} is not a number of hosts from 0 to {MAX_COUNT}; "
                           f"set it to e.g. {DEFAULT_COUNT} (or unset it) and run `nrun sandbox ssh up` again")
    return n


def configured() -> list[Host]:
    return [Host(k) for k in range(1, count() + 1)]


def recorded() -> list[Host]:
    """Every host this sandbox ever set up (also those beyond the current N)."""
    try:
        names = [p.name for p in hosts_dir().iterdir() if p.is_dir()]
    except OSError:
        return []
    found = [int(n.removeprefix("nrun-host")) for n in names
             if n.startswith("nrun-host") and n.removeprefix("nrun-host").isdigit()]
    return [Host(k) for k in sorted(found)]


def running(host: Host) -> _proc.Record | None:
    return _proc.running(host.record)


def ensure_keys(hosts: list[Host]) -> None:
    """A host key per host, made once and kept (known_hosts stays valid across restarts)."""
    for host in hosts:
        host.dir.mkdir(parents=True, exist_ok=True)
        if not host.host_key.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"nrun-sandbox-{host.name}",
                            "-f", str(host.host_key)], check=True, capture_output=True)


def known_hosts_lines(hosts: list[Host]) -> list[str]:
    """`ADDRESS ssh-ed25519 KEY` per host (port 22 is written without brackets)."""
    lines = []
    for host in hosts:
        kind, key = Path(f"{host.host_key}.pub").read_text().split()[:2]
        lines.append(f"{host.address} {kind} {key}")
    return lines


def sshd_config(address: str, port: int, host_key: Path, authorized_keys: Path, pid_file: str) -> str:
    """The settings of every sandbox sshd (login node and hosts)."""
    return f"""\
# Written by nrun_core.sandbox.ssh; rewritten at every `up`.
Port {port}
ListenAddress {address}
HostKey {host_key}
PidFile {pid_file}
AuthorizedKeysFile {authorized_keys}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
X11Forwarding no
AllowTcpForwarding no
PrintMotd no
Subsystem sftp internal-sftp
MaxSessions 50
MaxStartups 100:30:200
ClientAliveInterval 5
ClientAliveCountMax 3
"""


def write(path: Path, text: str, mode: int) -> None:
    """Replace PATH atomically with TEXT (unchanged files are left alone)."""
    if path.exists() and path.read_text() == text:
        return
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    tmp.replace(path)


def docker_host() -> str:
    from nrun_core.sandbox import docker  # lazy: only its address is needed

    return docker.docker_host()


def check_free(hosts: list[Host]) -> None:
    """Fail, before anything starts, if hosts cannot start here or a host's port is taken."""
    if hosts and os.geteuid() != 0 and any(running(h) is None for h in hosts):
        raise SandboxError(f"the SSH sandbox hosts need root (namespaces, port {PORT}); run "
                           f"`nrun sandbox ssh up` as root, or set {COUNT_ENV}=0 for the login node only")
    for host in hosts:
        if running(host) is None and _proc.tcp_open(PORT, host.address):
            raise SandboxError(
                f"port {host.address}:{PORT} (SSH sandbox host {host.name}) is taken by a process this "
                f"sandbox did not start; stop it (`ss -ltnp 'sport = :{PORT}'`), or set {COUNT_ENV} "
                f"to fewer hosts, and run `nrun sandbox ssh up` again")


def up(hosts: list[Host], *, sshd: str, authorized_keys: Path, client_key: Path) -> None:
    """Stop recorded hosts beyond N, write the shared files, start every host not running."""
    for extra in recorded():
        if extra not in hosts and running(extra) is not None:
            logger.info("stopping %s: %s asks for %d hosts", extra.name, COUNT_ENV, len(hosts))
            stop(extra)
    check_free(hosts)
    hosts_dir().mkdir(parents=True, exist_ok=True)
    _write_etc_hosts(hosts)
    write(hosts_file(), _hosts_yaml(hosts, client_key), 0o600)
    binds = _binds_under_tmp()
    for host in hosts:
        write(host.config, sshd_config(host.address, PORT, host.host_key, authorized_keys, "none"), 0o600)
        unseen = _unseen(host, binds)
        if running(host) is not None and unseen:
            # started by another nrun (a venv under /tmp, or one since re-created): it cannot see
            # this Python
            logger.info("restarting %s: it must also see %s", host.name, ", ".join(unseen))
            stop(host)
        if running(host) is None:
            _start(host, sshd, binds)


def down() -> None:
    for host in recorded():
        stop(host)


def stop(host: Host) -> None:
    """TERM the namespace init (sshd): when it exits the kernel kills every process of the host."""
    _proc.stop(host.record)
    _proc.stop(host.wrapper_record, wait=5.0)


def status_lines(hosts: list[Host]) -> tuple[bool, list[str]]:
    ok, lines = True, []
    for host in sorted(set(hosts) | {h for h in recorded() if running(h)}, key=lambda h: h.index):
        rec = running(host)
        usable = rec is not None and _proc.tcp_open(PORT, host.address)
        extra = "" if host in hosts else f"  (beyond {COUNT_ENV}={len(hosts)}; the next `up` stops it)"
        ok = ok and (usable or host not in hosts)
        lines.append(f"  {host.name}  {'up' if rec else 'down'}  {f'pid {rec.pid}' if rec else ''}  "
                     f"{host.address}:{PORT}{extra}")
    lines.append(f"  hosts file {hosts_file()} ({len(hosts)} hosts, {COUNT_ENV})")
    return ok, lines


def _start(host: Host, sshd: str, binds: list[str]) -> None:
    if host.tmp.exists():
        shutil.rmtree(host.tmp)  # a fresh boot: nothing of an earlier run (its ns is gone) is left
    host.tmp.mkdir(parents=True)
    os.chmod(host.tmp, 0o1777)
    check = _run([sshd, "-t", "-f", str(host.config)])
    if check is not None:
        raise SandboxError(f"sshd rejects {host.config}: {check}")
    write(host.dir / "binds.json", json.dumps({b: _identity(b) for b in binds}), 0o600)
    argv = ["unshare", "--uts", "--mount", "--pid", "--fork", "--mount-proc", "--kill-child",
            "/bin/sh", "-c", SETUP, "nrun-host-setup", host.name, str(etc_hosts()), str(host.tmp),
            sshd, str(host.config), *binds]
    wrapper = _proc.spawn(argv, record=host.wrapper_record, log=host.log, env={"PATH": PATH_ENV})
    _proc.wait_until(lambda: bool(_proc.children(wrapper.pid)) or not _proc.is_alive(wrapper), START_TIMEOUT)
    init = _proc.children(wrapper.pid)  # the namespace's pid 1: the setup script, then sshd
    rec = _proc.adopt(init[0], "sshd", record=host.record, exec_timeout=START_TIMEOUT) if init else None
    if rec is None or not _proc.wait_until(
            lambda: _proc.tcp_open(PORT, host.address) or not _proc.is_alive(rec), START_TIMEOUT) \
            or not _proc.tcp_open(PORT, host.address):
        stop(host)
        raise SandboxError(f"SSH sandbox host {host.name} did not start on {host.address}:{PORT}; "
                           f"read {host.log}:\n{_proc.tail(host.log)}")


def _identity(path: str) -> str:
    """Which directory a path is (a bind mount keeps the directory it was made of, not the name)."""
    try:
        st = os.stat(path)
    except OSError:
        return ""
    return f"{st.st_dev}:{st.st_ino}"


def _unseen(host: Host, binds: list[str]) -> list[str]:
    """Paths under /tmp this nrun needs that the running host was not started to see."""
    try:
        seen = json.loads((host.dir / "binds.json").read_text())
    except (OSError, ValueError):
        seen = {}
    if not isinstance(seen, dict):
        seen = {}
    return [b for b in binds if seen.get(b) != _identity(b)]


def _run(argv: list[str]) -> str | None:
    """None if ARGV succeeds, else its error output."""
    out = subprocess.run(argv, capture_output=True, text=True, check=False)
    return None if out.returncode == 0 else (out.stderr.strip() or f"exit {out.returncode}")


def _write_etc_hosts(hosts: list[Host]) -> None:
    """The real machine's /etc/hosts plus every host's name -> its address.

    Written in place (same inode), never replaced: running hosts have it bound as /etc/hosts, so
    they see hosts added later.
    """
    names = {h.name for h in hosts} | {h.name for h in recorded()}
    try:
        real = Path("/etc/hosts").read_text().splitlines()
    except OSError:
        real = ["127.0.0.1 localhost"]
    kept = [line for line in real if not names & set(line.split("#")[0].split()[1:])]
    text = "\n".join([*kept, "# nrun sandbox ssh hosts", *(f"{h.address} {h.name}" for h in hosts)]) + "\n"
    path = etc_hosts()
    if path.exists() and path.read_text() == text:
        return
    with open(path, "a+") as fh:
        fh.seek(0)
        fh.truncate()
        fh.write(text)


def _binds_under_tmp() -> list[str]:
    """Paths under /tmp a host must still see above its private /tmp: the sandbox dir (keys,
    configs, the Slurm and Docker sandboxes), the Docker socket's directory, this Python's prefix."""
    wanted = [sandbox_dir("ssh").parent, Path(sys.prefix)]
    host = docker_host()
    if host.startswith("unix://"):
        wanted.append(Path(host[len("unix://"):]).parent)
    tmp = Path("/tmp").resolve()
    found: list[Path] = []
    for path in wanted:
        real = Path(os.path.realpath(path))
        if real == tmp:
            raise SandboxError(f"{path} is /tmp itself, which every SSH sandbox host replaces with its "
                               "own; set NRUN_SANDBOX_DIR (or use a venv) outside /tmp or in a directory below it")
        if tmp in real.parents:
            real.mkdir(parents=True, exist_ok=True)  # e.g. the Docker sandbox dir before its first `up`
            found.append(real)
    found.sort(key=lambda p: len(p.parts))
    kept: list[Path] = []
    for path in found:
        if not any(k == path or k in path.parents for k in kept):
            kept.append(path)
    return [str(p) for p in kept]


def _hosts_yaml(hosts: list[Host], client_key: Path) -> str:
    """The file the nrun_ssh executor reads (strings JSON-quoted: valid YAML whatever they hold)."""
    q = json.dumps
    lines = ["# written by `nrun sandbox ssh up`", "hosts:" if hosts else "hosts: []"]
    for host in hosts:
        lines += [f"  - name: {host.name}",
                  f"    address: {host.address}",
                  f"    port: {PORT}",
                  f"    user: {q(getpass.getuser())}",
                  f"    key_file: {q(str(client_key))}",
                  f"    slots: {SLOTS}            # points it runs at once",
                  "    gpus: 0",
                  f"    python: {q(sys.executable)}   # sys.executable of the nrun that ran `up`",
                  f"    remote_dir: {REMOTE_DIR}                 # private per host (its own /tmp)",
                  f"    env: {{DOCKER_HOST: {q(docker_host())}}}",
                  # the engine is this machine's: it sees the host's private /tmp at its real path
                  f"    docker_paths: {{/tmp: {q(str(host.tmp))}}}"]
    return "\n".join(lines) + "\n"
