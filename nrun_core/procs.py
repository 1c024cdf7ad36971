"""Process identity and group signalling, shared by the launcher, the supervisor and the CLI.

A pid alone is not an identity (pids are reused), so nrun records the process start time beside
it and only signals a pid whose start time still matches.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Optional


def start_time(pid: int) -> Optional[str]:
    """The kernel's start time of ``pid`` (field 22 of /proc/pid/stat), or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields and fields[0] == "Z":  # a zombie has finished
        return None
    return fields[19] if len(fields) > 19 else None


def alive(pid: Optional[int], started: Optional[str]) -> bool:
    if not pid:
        return False
    now = start_time(pid)
    return now is not None and (started is None or now == started)


def kill_group(pgid: int, grace_s: float = 5.0) -> None:
    """TERM the group, give it ``grace_s`` to exit, then KILL what is left."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def tagged_pids(token: str) -> list[int]:
    """Processes carrying the point's token: ``NRUN_TOKEN=<token>`` in their environment, or
    the point's process name (``comm_tag``) for processes forked without exec.

    torchrun starts each worker in its own session and daemons start their own, so a
    process-group kill misses them; every process of a point inherits the token, which finds
    them wherever they moved. A fork-mode point sets the token in os.environ, which
    /proc/PID/environ does not show, hence the name, which fork inherits.
    """
    needle = f"NRUN_TOKEN={token}\0".encode()
    name = comm_tag(token).encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/comm", "rb") as f:
                if f.read().strip() == name:
                    found.append(int(entry))
                    continue
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle in f.read() + b"\0":
                    found.append(int(entry))
        except OSError:
            continue
    return found


def comm_tag(token: str) -> str:
    """A 15-character process name derived from the token (the kernel keeps 15)."""
    import hashlib

    return "nrun-" + hashlib.sha256(token.encode()).hexdigest()[:10]


def set_comm(name: str) -> None:
    """Name this process (/proc/PID/comm); children forked without exec inherit it."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass


def snapshot(pids: list[int]) -> list[tuple[int, Optional[str]]]:
    """(pid, start time) pairs: an identity that survives pid reuse."""
    return [(p, start_time(p)) for p in pids]


def kill_snapshot(procs: list[tuple[int, Optional[str]]], sig: int = signal.SIGKILL) -> None:
    for pid, started in procs:
        if started is not None and alive(pid, started):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass


def kill_tagged(token: str) -> int:
    """SIGKILL every process still carrying the token; returns how many were signalled."""
    pids = tagged_pids(token)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(pids)


def describe_exit(code: Optional[int], oom_hint: bool = False) -> str:
    """An exit status as a user reads it: "exited with code 3", "killed by SIGSEGV"."""
    if code is None:
        return "ended"
    if code >= 0:
        return f"exited with code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    hint = " (out of memory? the kernel's OOM killer sends SIGKILL)" if oom_hint and -code == signal.SIGKILL else ""
    return f"killed by {name}{hint}"
