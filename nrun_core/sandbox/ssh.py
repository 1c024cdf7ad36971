"""`nrun sandbox ssh up|down|status|env`: a real sshd on 127.0.0.1, a "login node" on this host.

Its own host key, client key, authorized_keys and known_hosts live under ``sandbox_dir("ssh")``;
nothing in ~/.ssh or /etc/ssh is touched. Clients connect as the current user with the sandbox's
key and check the host key strictly against the sandbox's known_hosts (``env()`` names them).
sshd listens on loopback only, so nothing here is reachable from outside the machine.
"""

from __future__ import annotations

import getpass
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

from nrun_core.errors import SandboxError
from nrun_core.paths import sandbox_dir
from nrun_core.sandbox import _proc

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
            "NRUN_SSH_KEY": str(p["client_key"]), "NRUN_SSH_KNOWN_HOSTS": str(p["known_hosts"])}


def up() -> dict[str, str]:
    """Install sshd if missing, create keys once, start sshd unless ours runs; return env()."""
    p = _paths()
    root().mkdir(parents=True, exist_ok=True)
    os.chmod(root(), 0o700)
    sshd = _sshd()
    _keys(p)
    _write_config(p)
    if _proc.running(p["record"]) is None:
        if _proc.tcp_open(PORT, HOST):
            raise SandboxError(f"port {HOST}:{PORT} is taken by a process this sandbox did not start; "
                               "stop it (`ss -ltnp`) and run `nrun sandbox ssh up` again")
        PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        check = subprocess.run([sshd, "-t", "-f", str(p["config"])], capture_output=True, text=True)
        if check.returncode != 0:
            raise SandboxError(f"sshd rejects {p['config']}: {check.stderr.strip()}")
        rec = _proc.spawn([sshd, "-D", "-e", "-f", str(p["config"])], record=p["record"], log=p["log"],
                          env={"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")})
        if not _proc.wait_until(lambda: _proc.tcp_open(PORT, HOST) or not _proc.is_alive(rec), START_TIMEOUT) \
                or not _proc.tcp_open(PORT, HOST):
            _proc.stop(p["record"])
            raise SandboxError(f"sshd did not start on {HOST}:{PORT}; read {p['log']}:\n{_proc.tail(p['log'])}")
    return env()


def down() -> None:
    """Stop the sshd this sandbox started (keys and known_hosts are kept)."""
    _proc.stop(_paths()["record"])


def status() -> tuple[bool, str]:
    p = _paths()
    rec = _proc.running(p["record"])
    ok = rec is not None and _proc.tcp_open(PORT, HOST)
    lines = [f"SSH sandbox in {root()}",
             f"  sshd  {'up' if rec else 'down'}  {f'pid {rec.pid}' if rec else ''}  {HOST}:{PORT}",
             "usable" if ok else "not usable: run `nrun sandbox ssh up`"]
    return ok, "\n".join(lines)


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


def _keys(p: dict[str, Path]) -> None:
    """Host and client keys once; authorized_keys and known_hosts always match them."""
    for key in ("host_key", "client_key"):
        if not p[key].exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"nrun-sandbox-{key}",
                            "-f", str(p[key])], check=True, capture_output=True)
    client_pub = Path(f"{p['client_key']}.pub").read_text().strip()
    host_pub = Path(f"{p['host_key']}.pub").read_text().split()
    _write(p["authorized_keys"], client_pub + "\n", 0o600)
    _write(p["known_hosts"], f"[{HOST}]:{PORT} {host_pub[0]} {host_pub[1]}\n", 0o600)


def _write_config(p: dict[str, Path]) -> None:
    text = f"""\
# Written by nrun_core.sandbox.ssh; rewritten at every `up`.
Port {PORT}
ListenAddress {HOST}
HostKey {p['host_key']}
PidFile {p['pid']}
AuthorizedKeysFile {p['authorized_keys']}
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
"""
    _write(p["config"], text, 0o600)


def _write(path: Path, text: str, mode: int) -> None:
    if path.exists() and path.read_text() == text:
        return
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    tmp.replace(path)


if __name__ == "__main__":  # the same as `nrun sandbox ssh ...`
    from nrun_core.cli import main

    sys.exit(main(["sandbox", "ssh", *sys.argv[1:]]))
