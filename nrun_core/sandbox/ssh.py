"""`nrun sandbox ssh up|down|status|env`: a real sshd on 127.0.0.1 (a "login node" on this host)
and N SSH "hosts" in their own namespaces for the nrun_ssh executor (ssh_hosts.py).

Its own host keys, client key, authorized_keys and known_hosts live under ``sandbox_dir("ssh")``;
nothing in ~/.ssh or /etc/ssh is touched. Clients connect as the current user with the sandbox's
key and check host keys strictly against the sandbox's known_hosts, which holds the login node and
every host (``env()`` names them). Every sshd listens on loopback only, so nothing here is
reachable from outside the machine.
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

from nrun_core.errors import SandboxError
from nrun_core.paths import sandbox_dir
from nrun_core.sandbox import _proc, ssh_hosts

HOST = "127.0.0.1"
PORT = 16922
PACKAGES = ("openssh-server",)
START_TIMEOUT = 20.0
PRIVSEP_DIR = Path("/run/sshd")  # sshd refuses to start without it (mode 755, root-owned)
logger = logging.getLogger(__name__)


def root() -> Path:
    return sandbox_dir("ssh")


def _paths() -> dict[str, Path]:
    r = root()
    return {"config": r / "sshd_config", "host_key": r / "host_ed25519", "client_key": r / "id_ed25519",
            "authorized_keys": r / "authorized_keys", "known_hosts": r / "known_hosts",
            "log": r / "sshd.log", "record": r / "sshd.json", "pid": r / "sshd.pid"}


def env() -> dict[str, str]:
    """What a client needs: where to connect, as whom, with which key, checked against what."""
    p = _paths()
    return {"NRUN_SSH_HOST": HOST, "NRUN_SSH_PORT": str(PORT), "NRUN_SSH_USER": getpass.getuser(),
            "NRUN_SSH_KEY": str(p["client_key"]), "NRUN_SSH_KNOWN_HOSTS": str(p["known_hosts"]),
            "NRUN_SSH_HOSTS_FILE": str(ssh_hosts.hosts_file())}


def up() -> dict[str, str]:
    """Install sshd if missing, create keys once, start the login node and the hosts unless ours
    run; return env()."""
    p = _paths()
    hosts = ssh_hosts.configured()  # a bad NRUN_SANDBOX_SSH_HOSTS fails before anything starts
    root().mkdir(parents=True, exist_ok=True)
    os.chmod(root(), 0o700)
    sshd = _sshd()
    with _locked():
        ssh_hosts.check_free(hosts)  # nothing is written or started if a host's port is taken
        _keys(p, hosts)
        _write_config(p)
        _start_login_node(p, sshd)
        ssh_hosts.up(hosts, sshd=sshd, authorized_keys=p["authorized_keys"], client_key=p["client_key"])
    return env()


def _start_login_node(p: dict[str, Path], sshd: str) -> None:
    PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    if _proc.running(p["record"]) is None:
        if _proc.tcp_open(PORT, HOST):
            raise SandboxError(f"port {HOST}:{PORT} is taken by a process this sandbox did not start; "
                               "stop it (`ss -ltnp`) and run `nrun sandbox ssh up` again")
        check = subprocess.run([sshd, "-t", "-f", str(p["config"])], capture_output=True, text=True)
        if check.returncode != 0:
            raise SandboxError(f"sshd rejects {p['config']}: {check.stderr.strip()}")
        rec = _proc.spawn([sshd, "-D", "-e", "-f", str(p["config"])], record=p["record"], log=p["log"],
                          env={"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")})
        if not _proc.wait_until(lambda: _proc.tcp_open(PORT, HOST) or not _proc.is_alive(rec), START_TIMEOUT) \
                or not _proc.tcp_open(PORT, HOST):
            _proc.stop(p["record"])
            raise SandboxError(f"sshd did not start on {HOST}:{PORT}; read {p['log']}:\n{_proc.tail(p['log'])}")


def down() -> None:
    """Stop the hosts and the login node this sandbox started (keys and known_hosts are kept)."""
    with _locked():
        ssh_hosts.down()
        _proc.stop(_paths()["record"])


def status() -> tuple[bool, str]:
    p = _paths()
    rec = _proc.running(p["record"])
    ok = rec is not None and _proc.tcp_open(PORT, HOST)
    try:
        hosts = ssh_hosts.configured()
    except SandboxError as exc:
        return False, str(exc)
    hosts_ok, host_lines = ssh_hosts.status_lines(hosts)
    ok = ok and hosts_ok
    lines = [f"SSH sandbox in {root()}",
             f"  sshd  {'up' if rec else 'down'}  {f'pid {rec.pid}' if rec else ''}  {HOST}:{PORT}  (login node)",
             *host_lines,
             "usable" if ok else "not usable: run `nrun sandbox ssh up`"]
    return ok, "\n".join(lines)


def _locked() -> contextlib.AbstractContextManager[None]:
    """One up/down at a time across processes (two `up`s would race for the same ports)."""
    return _proc.locked(root() / "up.lock")


def _sshd() -> str:
    found = shutil.which("sshd") or shutil.which("sshd", path="/usr/sbin:/sbin")
    if found:
        return found
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise SandboxError("sshd is not installed; install it as root with "
                           "`apt-get install --no-install-recommends openssh-server` and run up again")
    log = root() / "apt.log"
    logger.info("installing openssh-server (apt-get, log in %s)", log)
    apt = ["apt-get", "-o", "DPkg::Lock::Timeout=900"]
    apt_env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    rc = 1
    for argv in ([*apt, "install", "-y", "--no-install-recommends", *PACKAGES], [*apt, "update"],
                 [*apt, "install", "-y", "--no-install-recommends", *PACKAGES]):
        with open(log, "a") as fh:
            rc = subprocess.run(argv, env=apt_env, stdout=fh, stderr=subprocess.STDOUT).returncode
        if rc == 0 and "install" in argv:
            break
    found = shutil.which("sshd") or shutil.which("sshd", path="/usr/sbin:/sbin")
    if not found:
        raise SandboxError(f"could not install openssh-server (exit {rc}); read {log}:\n{_proc.tail(log)}")
    return found


def _keys(p: dict[str, Path], hosts: list[ssh_hosts.Host]) -> None:
    """Host and client keys once; authorized_keys and known_hosts (login node and every host)
    always match them."""
    for key in ("host_key", "client_key"):
        if not p[key].exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"nrun-sandbox-{key}",
                            "-f", str(p[key])], check=True, capture_output=True)
    client_pub = Path(f"{p['client_key']}.pub").read_text().strip()
    host_pub = Path(f"{p['host_key']}.pub").read_text().split()
    _write(p["authorized_keys"], client_pub + "\n", 0o600)
    ssh_hosts.ensure_keys(hosts)
    lines = [f"[{HOST}]:{PORT} {host_pub[0]} {host_pub[1]}", *ssh_hosts.known_hosts_lines(hosts)]
    _write(p["known_hosts"], "\n".join(lines) + "\n", 0o600)


def _write_config(p: dict[str, Path]) -> None:
    _write(p["config"], ssh_hosts.sshd_config(HOST, PORT, p["host_key"], p["authorized_keys"], str(p["pid"])), 0o600)


_write = ssh_hosts.write


if __name__ == "__main__":  # the same as `nrun sandbox ssh ...`
    from nrun_core.cli import main

    sys.exit(main(["sandbox", "ssh", *sys.argv[1:]]))
