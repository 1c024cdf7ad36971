"""Start, recognise and stop the daemons a sandbox owns, and lock its up/down against a second
caller (generic; any sandbox may use it).

A pid alone is not proof: pids are reused. Each daemon is recorded in a small JSON file with its
pid, its kernel start time and its program name, and counts as ours only while all three match
what /proc says. Daemons are started detached (own session, reparented away from the caller), so
they outlive the command or test session that started them; they run in the foreground of that
session (``-D``/``-F`` style flags) so the recorded pid is the daemon itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Record:
    """What we wrote down when we started a daemon."""

    pid: int
    start: int  # clock ticks since boot, field 22 of /proc/PID/stat
    program: str  # basename of the executable, e.g. "slurmctld"


def _stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time) of a live or zombie pid, None if there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # after "pid (comm) "
    return fields[0], int(fields[19])


def _program(pid: int) -> str:
    """Basename of the running executable ("" if unreadable)."""
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except PermissionError:  # another user's process: its argv[0] is still readable
        try:
            argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
        except (OSError, UnicodeDecodeError):
            return ""
        exe = os.path.realpath(shutil.which(argv0) or argv0)
    except OSError:
        return ""
    return os.path.basename(exe.removesuffix(" (deleted)"))


def is_alive(rec: Record) -> bool:
    """True while the recorded process runs, is not a zombie, and is still the same program."""
    st = _stat(rec.pid)
    if st is None or st[0] in "ZXx" or st[1] != rec.start:
        return False
    return _program(rec.pid) == rec.program


def read(path: Path) -> Record | None:
    """The record in PATH, or None if missing or unreadable (treated as not running)."""
    try:
        return Record(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def running(path: Path) -> Record | None:
    """The record in PATH if its process is alive, else None."""
    rec = read(path)
    return rec if rec is not None and is_alive(rec) else None


def spawn(
    argv: Sequence[str],
    *,
    record: Path,
    log: Path,
    env: Mapping[str, str],
    cwd: Path | None = None,
    exec_timeout: float = 5.0,
) -> Record:
    """Start ARGV detached (new session, stdin /dev/null, output appended to LOG) and record it.

    A throwaway ``sh`` forks the daemon and exits, so the daemon is never the caller's child
    (no zombie held by a long-lived caller such as a test session) and ``$!`` is its exact pid.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    script = 'log=$1; shift; "$@" >>"$log" 2>&1 </dev/null & echo $!'
    out = subprocess.run(
        ["/bin/sh", "-c", script, "sh", str(log), *argv],
        env=dict(env),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        check=True,
    )
    pid = int(out.stdout.strip())
    # The record names the real binary (/usr/sbin/slurmctld -> slurmctld-wlm), while argv[0] stays
    # as given: Slurm daemons decide what they are from their argv[0] name.
    exe = shutil.which(argv[0], path=env.get("PATH")) or argv[0]
    return adopt(pid, os.path.basename(os.path.realpath(exe)), record=record, exec_timeout=exec_timeout)


def adopt(pid: int, program: str, *, record: Path, exec_timeout: float = 5.0) -> Record:
    """Record the running PID as ours once it has exec'd PROGRAM (a daemon started by a wrapper,
    e.g. the init of a namespace that `unshare` forked), so that `stop` can end it by pid."""
    deadline = time.monotonic() + exec_timeout
    st = _stat(pid)
    while st is not None and _program(pid) != program and time.monotonic() < deadline:
        time.sleep(0.01)  # between fork and exec the process is still the shell
        st = _stat(pid)
    rec = Record(pid=pid, start=st[1] if st else 0, program=program)
    record.parent.mkdir(parents=True, exist_ok=True)
    tmp = record.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(rec)))
    tmp.replace(record)
    return rec


def children(pid: int) -> list[int]:
    """Pids of the direct children of PID (none if it has exited)."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return []
    found: list[int] = []
    for task in tasks:
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return found


def stop(path: Path, *, wait: float = 10.0) -> bool:
    """Stop the process recorded in PATH: TERM, wait up to WAIT s, then KILL. True if it ran."""
    rec = running(path)
    if rec is not None:
        _signal(rec, signal.SIGTERM)
        if not wait_until(lambda: not is_alive(rec), wait):
            _signal(rec, signal.SIGKILL)
            wait_until(lambda: not is_alive(rec), 5.0)
    path.unlink(missing_ok=True)
    return rec is not None


def _signal(rec: Record, sig: signal.Signals) -> None:
    if is_alive(rec):  # re-check right before signalling: never hit a reused pid
        try:
            os.kill(rec.pid, sig)
        except ProcessLookupError:
            pass


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    """Poll CHECK until it is true (returns True) or TIMEOUT seconds pass (returns False)."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def tcp_open(port: int, host: str = "127.0.0.1") -> bool:
    """True if something accepts TCP connections on HOST:PORT."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def unix_open(path: Path) -> bool:
    """True if something accepts connections on the unix socket PATH."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        try:
            s.connect(str(path))
            return True
        except OSError:
            return False


def tail(path: Path, lines: int = 15) -> str:
    """The last LINES lines of a log, for error messages ("" if it does not exist)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def show(argv: Sequence[str]) -> str:
    """ARGV as a shell line a user can copy."""
    return shlex.join(argv)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the file PATH (made, with its folder, if missing) for the block:
    one `up`/`down`/build at a time across processes (two shells, tests in parallel)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
