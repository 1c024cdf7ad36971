"""`nrun sandbox slurm up|down|status|env`: a real private Slurm cluster on this one host.

munged, a private MariaDB, slurmdbd, slurmctld and two slurmd nodes (n1, n2) run from files
under ``sandbox_dir("slurm")``, started by this module (no systemd needed) and recorded by pid
and start time, so ``up`` starts only what is not running and ``down`` stops only what ``up``
started. Clients need only ``SLURM_CONF`` (see ``env()``). Config choices: ``slurm_conf``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from nrun_core.errors import SandboxError
from nrun_core.paths import sandbox_dir
from nrun_core.sandbox import _proc
from nrun_core.sandbox import slurm_conf as conf
from nrun_core.sandbox.slurm_conf import Layout

PACKAGES = (
    "slurm-wlm",
    "slurmctld",
    "slurmd",
    "slurm-client",
    "slurmdbd",
    "slurm-wlm-mysql-plugin",
    "munge",
    "mariadb-server",
)
START_TIMEOUT = 60.0  # seconds for one daemon to accept connections (first slurmdbd creates tables)
NODES_TIMEOUT = 90.0  # seconds for both nodes to register and become usable
USABLE = {"idle", "mixed", "allocated", "completing"}
HOSTS = Path("/etc/hosts")
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Daemon:
    """One process of the cluster: how to start it and how to tell it is ready."""

    name: str
    argv: tuple[str, ...]
    log: Path  # where its own log goes (named in errors)
    ready: Callable[[], bool]
    busy: str  # what it listens on, for the "taken by another process" error
    env: tuple[tuple[str, str], ...] = ()


def layout() -> Layout:
    """The sandbox's paths (``$NRUN_SANDBOX_DIR/slurm``, default ~/.nrun/sandbox/slurm)."""
    return Layout(sandbox_dir("slurm"))


def env() -> dict[str, str]:
    """What a client (sbatch, sacct, submitit, a sweep) needs in its environment."""
    return {"SLURM_CONF": str(layout().slurm_conf)}


def _exe(name: str) -> str:
    """Absolute path of a program (not resolved: Slurm daemons read their role from argv[0])."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if found is None:
        raise SandboxError(
            f"{name} is not installed; run `nrun sandbox slurm up` as root to install "
            f"{' '.join(PACKAGES)}"
        )
    return found


def _daemons(lay: Layout) -> list[Daemon]:
    """The cluster's processes, in start order (down stops them in reverse)."""
    slurm_env = (("SLURM_CONF", str(lay.slurm_conf)),)
    found = [
        Daemon(
            "munged",
            (
                _exe("munged"),
                "-F",
                "--force",  # else it refuses sockets under a 700 home (/root); clients are root
                f"--socket={lay.munge_socket}",
                f"--key-file={lay.munge_key}",
                f"--pid-file={lay.run / 'munged.pid'}",
                f"--log-file={lay.log / 'munged.log'}",
                f"--seed-file={lay.key_dir / 'munged.seed'}",
            ),
            lay.log / "munged.log",
            lambda: _proc.unix_open(lay.munge_socket),
            f"unix socket {lay.munge_socket}",
        ),
        Daemon(
            "mariadbd",
            (_exe("mariadbd"), f"--defaults-file={lay.my_cnf}"),
            lay.log / "mariadb.log",
            lambda: _proc.unix_open(lay.db_socket),
            f"unix socket {lay.db_socket} / port 127.0.0.1:{conf.DB_PORT}",
        ),
        Daemon(
            "slurmdbd",
            (_exe("slurmdbd"), "-D"),
            lay.log / "slurmdbd.log",
            lambda: _proc.tcp_open(conf.DBD_PORT),
            f"port 127.0.0.1:{conf.DBD_PORT}",
            slurm_env + (("MYSQL_UNIX_PORT", str(lay.db_socket)),),
        ),
        Daemon(
            "slurmctld",
            (_exe("slurmctld"), "-D", "-i", "-f", str(lay.slurm_conf)),
            lay.log / "slurmctld.log",
            lambda: _proc.tcp_open(conf.CTLD_PORT),
            f"port 127.0.0.1:{conf.CTLD_PORT}",
            slurm_env,
        ),
    ]
    for node, port in zip(conf.NODES, conf.SLURMD_PORTS):
        found.append(
            Daemon(
                f"slurmd-{node}",
                (_exe("slurmd"), "-D", "-N", node, "-f", str(lay.slurm_conf)),
                lay.log / f"slurmd.{node}.log",
                lambda port=port: _proc.tcp_open(port),  # type: ignore[misc]
                f"port 127.0.0.1:{port}",
                slurm_env,
            )
        )
    return found


DAEMON_NAMES = ("munged", "mariadbd", "slurmdbd", "slurmctld", *(f"slurmd-{n}" for n in conf.NODES))


# ---------------------------------------------------------------------------------------------
# up


def up() -> dict[str, str]:
    """Install what is missing, start what is not running, wait until jobs can run; return env."""
    lay = layout()
    _check_paths(lay)
    if os.geteuid() != 0:
        raise SandboxError(
            "the Slurm sandbox must be brought up as root (it installs packages, edits /etc/hosts"
            " and runs slurmd as root); run `sudo nrun sandbox slurm up`"
        )
    lay.root.mkdir(parents=True, exist_ok=True)
    with _locked(lay):
        _install_packages(lay)
        _ensure_hosts()
        _prepare_dirs(lay)
        changed = _write_configs(lay)
        daemons = _daemons(lay)
        if changed:  # a daemon still running on the old config would disagree with clients
            for d in reversed(daemons[2:]):
                if _proc.stop(_record(lay, d.name)):
                    logger.info("stopped %s: its config changed", d.name)
        if not (lay.db_data / "mysql").is_dir():
            _install_db(lay)
        for d in daemons:
            if d.name == "slurmctld" and _proc.running(_record(lay, d.name)) is None:
                _add_cluster(lay)
            _start(lay, d)
        _wait_nodes(lay)
        _wait_sacct(lay)
    return env()


def _check_paths(lay: Layout) -> None:
    longest = max(len(str(lay.munge_socket)), len(str(lay.db_socket)))
    if longest >= 100:
        raise SandboxError(
            f"sandbox directory {lay.root} is too long for unix sockets ({longest} of 107 bytes);"
            " set NRUN_SANDBOX_DIR to a shorter directory, e.g. /tmp/nrun-sb"
        )


def _locked(lay: Layout) -> contextlib.AbstractContextManager[None]:
    """One up/down at a time on this machine (tests in parallel, two shells)."""
    return _proc.locked(lay.lock)


def _installed(packages: Sequence[str]) -> set[str]:
    """The PACKAGES dpkg knows as installed (all of them off Debian: then missing programs are
    reported by name when a daemon is started)."""
    if shutil.which("dpkg-query") is None:
        return set(packages)
    out = subprocess.run(
        ["dpkg-query", "-W", "-f=${Package} ${Status}\n", *packages],
        capture_output=True,
        text=True,
    ).stdout
    return {ln.split()[0] for ln in out.splitlines() if ln.endswith("install ok installed")}


def _install_packages(lay: Layout) -> None:
    """apt-get install the Debian packages that are missing (Debian 12's Slurm 22.05)."""
    missing = [p for p in PACKAGES if p not in _installed(PACKAGES)]
    if not missing:
        return
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise SandboxError(
            f"missing Debian packages: {' '.join(missing)}; install them as root with "
            f"`apt-get install --no-install-recommends {' '.join(missing)}` and run up again"
        )
    apt_log = lay.log / "apt.log"
    apt_log.parent.mkdir(parents=True, exist_ok=True)
    logger.info("installing %s (apt-get, log in %s)", " ".join(missing), apt_log)
    apt = ["apt-get", "-o", "DPkg::Lock::Timeout=900"]
    install = [*apt, "install", "-y", "--no-install-recommends", *missing]
    apt_env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for attempt in ("install", "update", "install"):
        argv = [*apt, "update"] if attempt == "update" else install
        with open(apt_log, "a") as fh:
            fh.write(f"$ {_proc.show(argv)}\n")
            fh.flush()
            rc = subprocess.run(argv, env=apt_env, stdout=fh, stderr=subprocess.STDOUT).returncode
        if attempt == "install" and rc == 0:
            return
    raise SandboxError(
        f"could not install {' '.join(missing)} with apt-get (exit {rc}); read {apt_log}:\n"
        + _proc.tail(apt_log)
    )


def _hosts_map(text: str) -> dict[str, str]:
    """name -> first address in an /etc/hosts text (what the resolver uses)."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        for name in words[1:]:
            found.setdefault(name, words[0])
    return found


def _ensure_hosts() -> None:
    """n1 and n2 must resolve to 127.0.0.1 (rendezvous, MASTER_ADDR); add marked lines if not."""
    text = HOSTS.read_text()
    names = _hosts_map(text)
    wrong = {n: names[n] for n in conf.NODES if names.get(n, "127.0.0.1") != "127.0.0.1"}
    if wrong:
        raise SandboxError(
            f"{HOSTS} maps {wrong} but the Slurm sandbox nodes must resolve to 127.0.0.1; "
            "remove or change those lines and run up again"
        )
    missing = [n for n in conf.NODES if n not in names]
    if missing:
        sep = "" if text.endswith("\n") or not text else "\n"
        with open(HOSTS, "a") as fh:  # append in place: /etc/hosts may be a bind mount
            fh.write(f"{sep}127.0.0.1 {' '.join(missing)} {conf.HOSTS_MARK}\n")


def _remove_hosts() -> None:
    text = HOSTS.read_text()
    lines = text.splitlines(keepends=True)
    kept = [ln for ln in lines if not ln.rstrip().endswith(conf.HOSTS_MARK)]
    if len(kept) != len(lines):
        with open(HOSTS, "r+") as fh:
            fh.write("".join(kept))
            fh.truncate()


def _prepare_dirs(lay: Layout) -> None:
    """Directories with the modes munged insists on; a fresh munge key on first use."""
    for d in (lay.etc, lay.log, lay.pids, lay.state, lay.db_data.parent):
        d.mkdir(parents=True, exist_ok=True)
    for d, mode in ((lay.run, 0o755), (lay.key_dir, 0o700)):
        d.mkdir(parents=True, exist_ok=True)
        d.chmod(mode)
    for node in conf.NODES:
        (lay.spool / node).mkdir(parents=True, exist_ok=True)
    if not lay.munge_key.exists():
        fd = os.open(lay.munge_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
        with os.fdopen(fd, "wb") as fh:
            fh.write(os.urandom(1024))


def _write_configs(lay: Layout) -> bool:
    """Write the three config files; True if slurm.conf or slurmdbd.conf changed."""
    host = socket.gethostname().split(".")[0]
    mem_mb = _mem_mb()
    changed = _write(lay.slurm_conf, conf.slurm_conf(lay, host=host, mem_mb=mem_mb), 0o644)
    changed |= _write(lay.dbd_conf, conf.slurmdbd_conf(lay, host=host), 0o600)
    _write(lay.my_cnf, conf.my_cnf(lay), 0o644)
    return changed


def _mem_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return 4096


def _write(path: Path, text: str, mode: int) -> bool:
    """Write TEXT to PATH with MODE unless it is already there; True if it changed."""
    if path.exists() and path.read_text() == text:
        path.chmod(mode)
        return False
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    tmp.chmod(mode)
    tmp.replace(path)
    return True


def _install_db(lay: Layout) -> None:
    """Create the MariaDB datadir once (kept by down, so later ups skip this 2-6 s step)."""
    tmp = lay.db_data.with_name("db.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    db_log = lay.log / "mariadb-install-db.log"
    logger.info("creating the MariaDB datadir %s", lay.db_data)
    installer = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db") or ""
    argv = [
        installer or "mariadb-install-db",
        f"--defaults-file={lay.my_cnf}",
        f"--datadir={tmp}",
        "--user=root",
        "--auth-root-authentication-method=socket",
        "--skip-test-db",
    ]
    with open(db_log, "w") as fh:
        rc = subprocess.run(argv, stdout=fh, stderr=subprocess.STDOUT, cwd=lay.root).returncode
    if rc != 0:
        raise SandboxError(
            f"MariaDB datadir creation failed (exit {rc}): {_proc.show(argv)}; read {db_log}:\n"
            + _proc.tail(db_log)
        )
    shutil.rmtree(lay.db_data, ignore_errors=True)
    tmp.replace(lay.db_data)


def _record(lay: Layout, name: str) -> Path:
    return lay.pids / f"{name}.json"


def _start(lay: Layout, d: Daemon) -> None:
    """Start D unless our recorded process runs; wait until it accepts connections."""
    rec_path = _record(lay, d.name)
    if _proc.running(rec_path) is not None:
        return
    if d.ready():
        raise SandboxError(
            f"{d.name} cannot start: {d.busy} is taken by a process this sandbox did not start;"
            " stop that process (find it with `ss -ltnxp`) and run `nrun sandbox slurm up` again"
        )
    if d.name == "munged":
        lay.munge_socket.unlink(missing_ok=True)  # stale socket of a killed munged
    daemon_env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "LANG": "C"}
    daemon_env.update({"HOME": str(lay.root), **dict(d.env)})
    out = lay.log / f"{d.name}.out"  # stdout/stderr: what a daemon says before its log is open
    logger.info("starting %s", d.name)
    with open(out, "a") as fh:
        fh.write(f"--- nrun sandbox: {time.strftime('%F %T')} $ {_proc.show(d.argv)}\n")
    rec = _proc.spawn(d.argv, record=rec_path, log=out, env=daemon_env, cwd=lay.root)
    gone = lambda: not _proc.is_alive(rec)  # noqa: E731
    _proc.wait_until(lambda: d.ready() or gone(), START_TIMEOUT)
    if not d.ready():
        why = "exited" if gone() else f"did not accept connections within {START_TIMEOUT:.0f} s"
        if not gone():
            _proc.stop(rec_path)
        rec_path.unlink(missing_ok=True)
        raise SandboxError(
            f"{d.name} {why} ({_proc.show(d.argv)}); read {d.log} and {out}:\n"
            + (_proc.tail(d.log) or _proc.tail(out))
        )


def _client(lay: Layout, argv: Sequence[str], timeout: float = 30.0) -> subprocess.CompletedProcess:
    """Run a Slurm client command against this sandbox; a hang reads as exit 124."""
    try:
        return subprocess.run(
            list(argv),
            env={**os.environ, "SLURM_CONF": str(lay.slurm_conf)},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(list(argv), 124, "", f"no answer within {timeout} s")


def _add_cluster(lay: Layout) -> None:
    """Register the cluster with slurmdbd (once per datadir), before slurmctld starts."""
    shown = _client(lay, ["sacctmgr", "-n", "-P", "list", "cluster", "format=Cluster"])
    if shown.returncode == 0 and conf.CLUSTER in shown.stdout.split():
        return
    added = _client(lay, ["sacctmgr", "-i", "add", "cluster", conf.CLUSTER])
    if added.returncode != 0:
        raise SandboxError(
            f"`sacctmgr -i add cluster {conf.CLUSTER}` failed (exit {added.returncode}): "
            f"{(added.stdout + added.stderr).strip()}; read {lay.log / 'slurmdbd.log'}"
        )


def node_states(lay: Layout | None = None) -> dict[str, str]:
    """Node -> state as sinfo shows it (e.g. "idle", "down*", "drained"); {} if sinfo fails."""
    lay = lay or layout()
    out = _client(lay, ["sinfo", "-h", "-N", "-p", conf.PARTITION, "-o", "%N %t"], 10.0)
    if out.returncode != 0:
        return {}
    words = (ln.split() for ln in out.stdout.splitlines())
    return {w[0]: _long_state(w[1]) for w in words if len(w) == 2}


def _long_state(short: str) -> str:
    """sinfo's compact %t state ("idle", "mix", "alloc", "comp", "down*") in long words."""
    names = {"mix": "mixed", "alloc": "allocated", "comp": "completing", "drng": "draining",
             "drain": "drained", "resv": "reserved", "maint": "maint"}
    base = short.rstrip("*~#!%$@^-")
    return names.get(base, base) + short[len(base):]


def _wait_nodes(lay: Layout) -> None:
    """Until both nodes are usable; resume a node that slurmctld remembers as down or drained."""
    resumed: set[str] = set()
    deadline = time.monotonic() + NODES_TIMEOUT
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        states = node_states(lay)
        if all(states.get(n) in USABLE for n in conf.NODES):
            return
        for node, state in states.items():
            if node not in resumed and state.rstrip("*") in {"down", "drained", "draining"}:
                _client(lay, ["scontrol", "update", f"NodeName={node}", "State=RESUME"])
                resumed.add(node)
        time.sleep(0.2)
    logs = ", ".join(str(lay.log / f"slurmd.{n}.log") for n in conf.NODES)
    raise SandboxError(
        f"Slurm nodes not usable within {NODES_TIMEOUT:.0f} s (sinfo: {states or 'no answer'});"
        f" read {lay.log / 'slurmctld.log'} and {logs}"
    )


def _wait_sacct(lay: Layout, timeout: float = 30.0) -> None:
    """Until sacct answers: without accounting submitit sees every job as UNKNOWN."""
    last: list[str] = [""]

    def works() -> bool:
        out = _client(lay, ["sacct", "-n", "-X", "-o", "JobID", "-S", "now"])
        last[0] = (out.stdout + out.stderr).strip()
        return out.returncode == 0

    if not _proc.wait_until(works, timeout, 0.5):
        raise SandboxError(
            f"sacct does not work within {timeout:.0f} s ({last[0]}); read "
            f"{lay.log / 'slurmdbd.log'} and {lay.log / 'mariadb.log'}"
        )


# ---------------------------------------------------------------------------------------------
# down, status


def down(purge: bool = False) -> None:
    """Cancel leftover jobs, stop the daemons this sandbox started, drop its /etc/hosts lines.

    The MariaDB datadir, Slurm state and munge key are kept (the next up skips creating them and
    job ids keep counting); PURGE deletes the whole sandbox directory as well.
    """
    lay = layout()
    if not lay.root.exists():
        _remove_hosts()
        return
    with _locked(lay):
        if _proc.running(_record(lay, "slurmctld")) is not None:
            _cancel_jobs(lay)
        for name in reversed(DAEMON_NAMES):
            if _proc.stop(_record(lay, name)):
                logger.info("stopped %s", name)
        _remove_hosts()
    if purge:
        shutil.rmtree(lay.root, ignore_errors=True)


def _cancel_jobs(lay: Layout, timeout: float = 20.0) -> None:
    def jobs() -> list[str]:
        out = _client(lay, ["squeue", "-h", "-o", "%A"], 10.0)
        return out.stdout.split() if out.returncode == 0 else []

    ids = jobs()
    if ids:
        _client(lay, ["scancel", *ids])
        _proc.wait_until(lambda: not jobs(), timeout, 0.5)


def pids() -> dict[str, int]:
    """Daemon name -> pid, for the daemons of this sandbox that are running now."""
    lay = layout()
    found = {}
    for name in DAEMON_NAMES:
        rec = _proc.running(_record(lay, name))
        if rec is not None:
            found[name] = rec.pid
    return found


def status() -> tuple[bool, str]:
    """(usable?, report): each daemon with pid and up/down, then each node's state."""
    lay = layout()
    running = pids()
    lines = [f"Slurm sandbox in {lay.root} (SLURM_CONF={lay.slurm_conf})"]
    for name in DAEMON_NAMES:
        pid = running.get(name)
        lines.append(f"  {name:<12} {'up' if pid else 'down':<5} {f'pid {pid}' if pid else ''}")
    states = node_states(lay) if "slurmctld" in running else {}
    for node in conf.NODES:
        lines.append(f"  node {node:<7} {states.get(node, 'unknown')}")
    ok = len(running) == len(DAEMON_NAMES) and all(
        states.get(n) in USABLE for n in conf.NODES
    )
    lines.append("usable" if ok else "not usable: run `nrun sandbox slurm up`")
    return ok, "\n".join(lines)


if __name__ == "__main__":  # the same as `nrun sandbox slurm ...`
    from nrun_core.cli import main

    sys.exit(main(["sandbox", "slurm", *sys.argv[1:]]))
