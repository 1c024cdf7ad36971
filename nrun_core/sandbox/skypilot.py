"""`nrun sandbox skypilot up|down|status|env`: a real SkyPilot API server on loopback whose one
infra is the Slurm sandbox, so `hydra/launcher=nrun_skypilot` runs for real on this machine.

What `up` sets up (all under ``sandbox_dir("skypilot")``, nothing in ~/.sky or ~/.ssh):
- a dedicated Unix user ``nrun-sky`` whose passwd home is ``home/`` here: SkyPilot writes into
  the SSH user's passwd home (authorized_keys, host keys, .bashrc), so that user is never root.
  The Slurm sandbox lives under /root (0700): the user gets a traversal-only ACL (``--x``, no
  read) on the directories above it, removed again by ``down``.
- a login-node sshd on 127.0.0.1:16923 for that user only, which sets SLURM_CONF for its sessions;
  SkyPilot's ``~/.slurm/config`` (in the server's own HOME) points at it;
- the API server (``python -m sky.server.server``) on 127.0.0.1:46611, HOME and SKY_RUNTIME_DIR
  here; clients reach it through SKYPILOT_API_SERVER_ENDPOINT + SKY_RUNTIME_DIR (``env()``);
- what SkyPilot would download, placed in advance: uv (from its PyPI wheel) as a wrapper that
  turns on native TLS and never downloads a Python, and a Python 3.10 it finds on its PATH.
  ``prepare CLUSTER`` (run by the executor through NRUN_SKYPILOT_PREPARE before it launches a
  cluster) puts that uv where the cluster's runtime setup looks for it.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import pwd
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from nrun_core.errors import SandboxError
from nrun_core.paths import sandbox_dir
from nrun_core.sandbox import _proc

HOST = "127.0.0.1"
SSH_PORT = 16923
API_PORT = 46611  # not SkyPilot's 46580: a TIME_WAIT there cannot be bound over under gVisor
USER = "nrun-sky"
INFRA = "slurm/nrun-sandbox"
SLURM_ALIAS = "nrun-sandbox"
UV_VERSION = "0.9.5"
START_TIMEOUT = 120.0
logger = logging.getLogger(__name__)


def root() -> Path:
    return sandbox_dir("skypilot")


def _paths() -> dict[str, Path]:
    r = root()
    return {"home": r / "home", "server": r / "server", "runtime": r / "runtime", "bin": r / "bin",
            "sshd": r / "sshd", "api_log": r / "api-server.log", "api_record": r / "api-server.json",
            "sshd_record": r / "sshd" / "sshd.json", "sshd_log": r / "sshd" / "sshd.log",
            "acl": r / "acl-dirs.txt"}


def endpoint() -> str:
    return f"http://{HOST}:{API_PORT}"


def env() -> dict[str, str]:
    """What a client (the executor, `sky status`) needs; the user's HOME is left alone."""
    p = _paths()
    return {"SKYPILOT_API_SERVER_ENDPOINT": endpoint(), "SKYPILOT_API_SERVER_LOCAL_PORT": str(API_PORT),
            "SKY_RUNTIME_DIR": str(p["runtime"]), "SKYPILOT_CONFIG": str(p["server"] / ".sky" / "config.yaml"),
            "NRUN_SKYPILOT_INFRA": INFRA, "NRUN_SKYPILOT_PYTHON": _point_python(),
            "NRUN_SKYPILOT_PREPARE": f"{sys.executable} -m nrun_core.sandbox.skypilot prepare {{cluster}}"}


def _point_python() -> str:
    """The Python points run with on the sandbox cluster: this venv's (hydra, omegaconf)."""
    return str(Path(sys.prefix) / "bin" / "python")


def _server_env() -> dict[str, str]:
    p = _paths()
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "SSL_CERT_FILE", "TZ")}
    return {**keep, "HOME": str(p["server"]), "SKY_RUNTIME_DIR": str(p["runtime"]),
            "SKYPILOT_API_SERVER_LOCAL_PORT": str(API_PORT), "SKYPILOT_CONFIG": env()["SKYPILOT_CONFIG"],
            "IS_SKYPILOT_SERVER": "true", "SKYPILOT_DISABLE_USAGE_COLLECTION": "1",
            "SSL_CERT_FILE": os.environ.get("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt")}


def up() -> dict[str, str]:
    """Create the user, keys, configs and placed downloads once; start sshd and the API server
    unless ours run; return env()."""
    if os.geteuid() != 0:
        raise SandboxError("`nrun sandbox skypilot up` must run as root (it creates the user nrun-sky)")
    from nrun_core.sandbox import slurm

    ok, report = slurm.status()
    if not ok:
        raise SandboxError("the SkyPilot sandbox runs on the Slurm sandbox, which is not usable: "
                           f"run `nrun sandbox slurm up` first\n{report}")
    p = _paths()
    with _locked():
        for d in ("server", "runtime", "bin", "sshd"):
            p[d].mkdir(parents=True, exist_ok=True)
        os.chmod(root(), 0o755)  # nrun-sky reaches its home and bin/ through it
        os.chmod(p["server"], 0o700)
        _user(p)
        _grant_traversal(p, Path(slurm.env()["SLURM_CONF"]))
        _place_downloads(p)
        _keys(p)
        _configs(p)
        _start_sshd(p)
        _start_api_server(p)
        _enable_slurm(p)
    return env()


def down() -> None:
    """`sky down` every cluster of this sandbox, stop the API server and sshd it started, cancel
    what is left of nrun-sky's Slurm jobs, take back the traversal ACLs."""
    p = _paths()
    with _locked():
        if _proc.running(p["api_record"]) is not None and _health():  # clusters first, while sky can
            subprocess.run([str(Path(sys.executable).parent / "sky"), "down", "--all", "--yes"], capture_output=True,
                           timeout=600, env={**os.environ, **env(), "HOME": str(p["server"])})
        _stop_tree(p["api_record"], wait=20.0)
        _stop_tree(p["sshd_record"])
        if _user_exists():
            subprocess.run(["scancel", "-u", USER], capture_output=True, env={**os.environ, **_slurm_env()})
        _revoke_traversal(p)


def status() -> tuple[bool, str]:
    p = _paths()
    api = _proc.running(p["api_record"])
    sshd = _proc.running(p["sshd_record"])
    api_ok = api is not None and _health()
    ok = api_ok and sshd is not None and _proc.tcp_open(SSH_PORT, HOST)
    lines = [f"SkyPilot sandbox in {root()} (infra {INFRA}, user {USER})",
             f"  api-server  {'up' if api_ok else 'down'}  {f'pid {api.pid}' if api else ''}  {endpoint()}",
             f"  sshd        {'up' if sshd else 'down'}  {f'pid {sshd.pid}' if sshd else ''}  {HOST}:{SSH_PORT}  "
             "(Slurm login node for SkyPilot)",
             "usable" if ok else "not usable: run `nrun sandbox skypilot up`"]
    return ok, "\n".join(lines)


def prepare(cluster: str) -> str:
    """Put the placed uv where runtime setup of CLUSTER looks for it (its cluster home is removed
    by `sky down`, so this runs before every launch). Returns that directory."""
    from sky.clouds.slurm import Slurm
    from sky.utils import common_utils

    on_cloud = common_utils.make_cluster_name_on_cloud(cluster, Slurm._max_cluster_name_length())
    p = _paths()
    dest = p["home"] / ".sky_clusters" / on_cloud / ".local" / "bin"
    _as_user(["sh", "-c", 'cd "$1" && mkdir -p "$2" && cp "$3" "$2/uv"', "sh", str(p["home"]),
              str(dest.relative_to(p["home"])), str(p["bin"] / "uv")])
    return str(dest)


# -- pieces of up ----------------------------------------------------------------------------
def _user_exists() -> bool:
    try:
        pwd.getpwnam(USER)
        return True
    except KeyError:
        return False


def _user(p: dict[str, Path]) -> None:
    home = p["home"]
    if not _user_exists():
        subprocess.run(["useradd", "--home-dir", str(home), "--create-home", "--shell", "/bin/bash",
                        "--comment", "nrun SkyPilot sandbox", USER], check=True, capture_output=True, text=True)
    elif pwd.getpwnam(USER).pw_dir != str(home):
        subprocess.run(["usermod", "--home", str(home), USER], check=True, capture_output=True)
    # sshd (UsePAM no) refuses a locked account ("!"); "*" allows keys only, never a password.
    subprocess.run(["usermod", "--password", "*", USER], check=True, capture_output=True)
    pw = pwd.getpwnam(USER)
    home.mkdir(parents=True, exist_ok=True)
    os.chown(home, pw.pw_uid, pw.pw_gid)
    os.chmod(home, 0o700)


MARK = "SHARED-WITH-nrun-sky.txt"


def _grant_traversal(p: dict[str, Path], slurm_conf: Path) -> None:
    """Directories above the Slurm sandbox (and this one) that nrun-sky cannot enter get a
    traversal-only ACL for it (re-applied at every `up`); each is recorded so that `down` removes
    exactly those. An nrun home among them gets a note saying it is shared: nrun tightens its
    home to 0700 (which would reset the ACL's mask) only while nothing but its own files is in it."""
    if shutil.which("setfacl") is None:
        _apt("acl")
    need: list[str] = []
    for target in (slurm_conf, p["home"], Path(sys.prefix).resolve(), Path(os.path.realpath(sys.executable))):
        for d in reversed(target.parents):
            if not d.stat().st_mode & 0o001 and str(d) not in need:
                need.append(str(d))
    done = set(p["acl"].read_text().split("\n")) if p["acl"].exists() else set()
    for d in need:
        if (Path(d) / "nrun.db").exists() or Path(d).name == ".nrun":
            (Path(d) / MARK).write_text(
                f"nrun sandbox skypilot: user {USER} may traverse (not list) this directory to reach the Slurm "
                "sandbox; `nrun sandbox skypilot down` takes that back and removes this file.\n")
        subprocess.run(["setfacl", "-m", f"u:{USER}:x,m::x", d], check=True, capture_output=True)
        done.add(d)
    p["acl"].write_text("\n".join(sorted(x for x in done if x)))


def _revoke_traversal(p: dict[str, Path]) -> None:
    if not p["acl"].exists():
        return
    for d in p["acl"].read_text().split("\n"):
        if d and os.path.isdir(d):
            subprocess.run(["setfacl", "-x", f"u:{USER}", d], capture_output=True)
            subprocess.run(["setfacl", "-b", d], capture_output=True)  # no mask left behind either
            (Path(d) / MARK).unlink(missing_ok=True)
    p["acl"].unlink()


def _apt(package: str) -> None:
    apt = ["apt-get", "-o", "DPkg::Lock::Timeout=900"]
    apt_env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    log = root() / "apt.log"
    with open(log, "a") as fh:
        for argv in ([*apt, "install", "-y", "--no-install-recommends", package], [*apt, "update"],
                     [*apt, "install", "-y", "--no-install-recommends", package]):
            if subprocess.run(argv, env=apt_env, stdout=fh, stderr=subprocess.STDOUT).returncode == 0 \
                    and "install" in argv:
                return
    raise SandboxError(f"could not install {package}; read {log}")


def _place_downloads(p: dict[str, Path]) -> None:
    """uv from its PyPI wheel, behind a wrapper (native TLS, no Python downloads, Python 3.10 on
    PATH); the runtime's Python 3.10 found on this machine."""
    real = p["bin"] / "uv-real"
    if not real.exists():
        wheels = root() / "wheels"
        wheels.mkdir(exist_ok=True)
        out = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                              "-d", str(wheels), f"uv=={UV_VERSION}"], capture_output=True, text=True)
        found = sorted(wheels.glob(f"uv-{UV_VERSION}-*.whl"))
        if out.returncode != 0 or not found:
            raise SandboxError(f"could not fetch uv {UV_VERSION} from PyPI (SkyPilot's runtime setup needs "
                               f"it and this machine cannot reach astral.sh): {out.stderr.strip()[-500:]}")
        with zipfile.ZipFile(found[0]) as z:
            name = next(n for n in z.namelist() if n.endswith(".data/scripts/uv"))
            tmp = real.with_suffix(".tmp")
            tmp.write_bytes(z.read(name))
            os.chmod(tmp, 0o755)
            tmp.replace(real)
    py310 = _python310()
    link = p["bin"] / "python3.10"
    if not link.is_symlink() or os.readlink(link) != py310:
        link.unlink(missing_ok=True)
        link.symlink_to(py310)
    wrapper = (f'#!/bin/sh\n# nrun sandbox: SkyPilot\'s uv, offline-safe (see nrun_core/sandbox/skypilot.py)\n'
               f'export UV_NATIVE_TLS=true UV_PYTHON_DOWNLOADS=never PATH="{p["bin"]}:$PATH"\n'
               f'export SSL_CERT_FILE="${{SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}"\n'
               f'exec "{real}" "$@"\n')
    _write(p["bin"] / "uv", wrapper, 0o755)


def _python310() -> str:
    """A CPython 3.10 (SkyPilot's runtime venv asks uv for exactly 3.10)."""
    for cand in [shutil.which("python3.10") or "", *sorted(glob.glob("/root/.pyenv/versions/3.10*/bin/python3.10")),
                 *sorted(glob.glob("/usr/local/bin/python3.10")), "/usr/bin/python3.10"]:
        real = os.path.realpath(cand) if cand else ""
        if real and "/shims/" not in real and os.access(real, os.X_OK):  # not pyenv's shim script
            return real
    raise SandboxError("SkyPilot's runtime needs a Python 3.10 and none was found (python3.10 on PATH, "
                       "pyenv 3.10.x); install one (e.g. `pyenv install 3.10`) and run up again")


def _keys(p: dict[str, Path]) -> None:
    """The server's key for the login node (authorized for nrun-sky), the login sshd's host key."""
    ssh = p["server"] / ".ssh"
    ssh.mkdir(mode=0o700, exist_ok=True)
    for key in (ssh / "nrun_sky_login", p["sshd"] / "host_ed25519"):
        if not key.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "nrun-sandbox-skypilot",
                            "-f", str(key)], check=True, capture_output=True)
    pub = Path(f"{ssh / 'nrun_sky_login'}.pub").read_text().strip()
    _as_user(["sh", "-c", 'cd "$1" && mkdir -p -m 700 .ssh', "sh", str(p["home"])])
    auth = p["home"] / ".ssh" / "authorized_keys"
    have = auth.read_text() if auth.exists() else ""
    if pub not in have:
        _as_user(["sh", "-c", 'printf "%s\\n" "$1" >> "$2"; chmod 600 "$2"', "sh", pub, str(auth)])
    host = Path(f"{p['sshd'] / 'host_ed25519'}.pub").read_text().split()
    _write(ssh / "known_hosts", f"[{HOST}]:{SSH_PORT} {host[0]} {host[1]}\n", 0o600)


def _slurm_env() -> dict[str, str]:
    from nrun_core.sandbox import slurm

    return slurm.env()


def _configs(p: dict[str, Path]) -> None:
    key = p["server"] / ".ssh" / "nrun_sky_login"
    slurm_dir = p["server"] / ".slurm"
    slurm_dir.mkdir(mode=0o700, exist_ok=True)
    _write(slurm_dir / "config", f"""\
# Written by nrun_core.sandbox.skypilot: the Slurm sandbox's login node, for SkyPilot.
Host {SLURM_ALIAS}
    HostName {HOST}
    Port {SSH_PORT}
    User {USER}
    IdentityFile {key}
    IdentitiesOnly yes
    UserKnownHostsFile {p['server'] / '.ssh' / 'known_hosts'}
    StrictHostKeyChecking yes
""", 0o600)
    sky_dir = p["server"] / ".sky"
    sky_dir.mkdir(mode=0o700, exist_ok=True)
    _write(sky_dir / "config.yaml", f"""\
# Written by nrun_core.sandbox.skypilot.
allowed_clouds: [slurm]
slurm:
  allowed_clusters: [{SLURM_ALIAS}]
""", 0o644)
    # Catalog that validate() would download: a small one, so nothing is fetched.
    cat = p["runtime"] / ".sky" / "catalogs"
    for d in sorted(cat.glob("v*/common")) or [cat / "v8" / "common"]:
        d.mkdir(parents=True, exist_ok=True)
        if not (d / "accelerators.csv").exists():
            _write(d / "accelerators.csv", "AcceleratorName,Clouds\nA100,AWS\nH100,AWS\nT4,AWS\n", 0o644)
    conf = _slurm_env()["SLURM_CONF"]
    _write(p["sshd"] / "sshd_config", f"""\
# Written by nrun_core.sandbox.skypilot; rewritten at every `up`.
Port {SSH_PORT}
ListenAddress {HOST}
HostKey {p['sshd'] / 'host_ed25519'}
PidFile {p['sshd'] / 'sshd.pid'}
AllowUsers {USER}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
StrictModes no
UsePAM no
X11Forwarding no
AllowTcpForwarding yes
PrintMotd no
Subsystem sftp internal-sftp
MaxSessions 100
MaxStartups 100:30:200
SetEnv SLURM_CONF={conf} UV_NATIVE_TLS=true
""", 0o600)


def _start_sshd(p: dict[str, Path]) -> None:
    from nrun_core.sandbox.ssh import PRIVSEP_DIR, _sshd

    if _proc.running(p["sshd_record"]) is not None:
        return
    if _proc.tcp_open(SSH_PORT, HOST):
        raise SandboxError(f"port {HOST}:{SSH_PORT} is taken by a process this sandbox did not start; "
                           "stop it (`ss -ltnp`) and run `nrun sandbox skypilot up` again")
    PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    sshd = _sshd()
    rec = _proc.spawn([sshd, "-D", "-e", "-f", str(p["sshd"] / "sshd_config")], record=p["sshd_record"],
                      log=p["sshd_log"], env={"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")})
    if not _proc.wait_until(lambda: _proc.tcp_open(SSH_PORT, HOST) or not _proc.is_alive(rec), 20.0) \
            or not _proc.tcp_open(SSH_PORT, HOST):
        _proc.stop(p["sshd_record"])
        raise SandboxError(f"sshd did not start on {HOST}:{SSH_PORT}; read {p['sshd_log']}:\n"
                           f"{_proc.tail(p['sshd_log'])}")


def _health() -> bool:
    import json
    import urllib.request

    try:
        with urllib.request.urlopen(f"{endpoint()}/api/health", timeout=5) as r:
            return json.loads(r.read()).get("status") == "healthy"
    except Exception:
        return False


def _start_api_server(p: dict[str, Path]) -> None:
    if _proc.running(p["api_record"]) is not None and _health():
        return
    _stop_tree(p["api_record"])
    if _proc.tcp_open(API_PORT, HOST):
        raise SandboxError(f"port {HOST}:{API_PORT} is taken by a process this sandbox did not start; "
                           "stop it (`ss -ltnp`) and run `nrun sandbox skypilot up` again")
    argv = [sys.executable, "-m", "sky.server.server", f"--host={HOST}", f"--port={API_PORT}"]
    rec = _proc.spawn(argv, record=p["api_record"], log=p["api_log"], env=_server_env(), cwd=p["server"])
    if not _proc.wait_until(lambda: _health() or not _proc.is_alive(rec), START_TIMEOUT, interval=0.5) \
            or not _health():
        _proc.stop(p["api_record"])
        raise SandboxError(f"the SkyPilot API server did not answer on {endpoint()} within {START_TIMEOUT:.0f} s; "
                           f"read {p['api_log']}:\n{_proc.tail(p['api_log'])}")


def _enable_slurm(p: dict[str, Path]) -> None:
    """`sky check slurm` once: until then the server refuses launches ("Cloud access is not set up")."""
    mark = p["runtime"] / "slurm-enabled"
    if mark.exists():
        return
    sky_cli = Path(sys.executable).parent / "sky"
    out = subprocess.run([str(sky_cli), "check", "slurm"], capture_output=True, text=True, timeout=300,
                         env={**os.environ, **env(), "HOME": str(p["server"])})
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", out.stdout)
    if out.returncode != 0 or f"{SLURM_ALIAS}: enabled" not in text:
        raise SandboxError(f"`sky check slurm` did not enable the Slurm sandbox as SkyPilot infra:\n"
                           f"{(out.stdout + out.stderr).strip()[-2000:]}")
    mark.write_text("ok\n")


def _stop_tree(record: Path, wait: float = 10.0) -> None:
    """Stop a recorded daemon and every process it started: the API server's queue server and
    request workers, sshd's per-connection processes (which outlive sshd itself otherwise).
    Found by parentage and by the daemon's session before anything is signalled; each is
    signalled only while its start time still matches (no reused pid is hit)."""
    import signal

    rec = _proc.running(record)
    if rec is None:
        record.unlink(missing_ok=True)
        return
    try:
        sid = os.getsid(rec.pid)
    except OSError:
        sid = -1
    found, todo = [], [rec.pid]
    while todo:
        pid = todo.pop()
        todo += [c for c in _proc.children(pid) if c not in found]
        found.append(pid)
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) not in found:
            try:
                if os.getsid(int(entry)) == sid and sid > 1:
                    found.append(int(entry))
            except OSError:
                continue
    tree = []
    for pid in found[1:]:
        st = _proc._stat(pid)
        if st is not None:
            tree.append(_proc.Record(pid=pid, start=st[1], program=_proc._program(pid)))
    _proc.stop(record, wait=wait)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for r in tree:
            _proc._signal(r, sig)
        if not _proc.wait_until(lambda: not any(_proc.is_alive(r) for r in tree), 5.0 if sig == signal.SIGTERM else 2.0):
            continue
        break


# -- helpers -----------------------------------------------------------------------------------
def _as_user(argv: list[str]) -> None:
    """Run ARGV as nrun-sky (files in its home stay its own)."""
    out = subprocess.run(["runuser", "-u", USER, "--", *argv], capture_output=True, text=True)
    if out.returncode != 0:
        raise SandboxError(f"as {USER}: {_proc.show(argv)} failed: {out.stderr.strip()}")


def _write(path: Path, text: str, mode: int) -> None:
    if not (path.exists() and path.read_text() == text):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.chmod(tmp, mode)
        tmp.replace(path)
    os.chmod(path, mode)


def _locked() -> contextlib.AbstractContextManager[None]:
    return _proc.locked(root() / "up.lock")


def _main(argv: list[str]) -> int:
    if argv[:1] == ["prepare"] and len(argv) == 2:
        print(prepare(argv[1]))
        return 0
    from nrun_core.cli import main

    return main(["sandbox", "skypilot", *argv])


if __name__ == "__main__":  # `prepare CLUSTER`, or the same as `nrun sandbox skypilot ...`
    sys.exit(_main(sys.argv[1:]))
