"""nrun's helper on a host reached over SSH (``nrun_host.py``): start a point detached from the
SSH session, watch its end, signal every process it has. Standard library only: it is copied to
each host next to the point runtime and run by the host's Python.

    python nrun_host.py serve  < one JSON request per line; a reply line each, an event line per end
    python nrun_host.py start  < {"dir", "argv", "cwd", "env", "stdout", "stderr", "token"}
    python nrun_host.py signal < {"dir", "token", "sig": "TERM" | "KILL"}
    python nrun_host.py status < {"dirs": [...]}

Each attempt of a point has its own status DIR (under the point's job dir, named after the
sweep and the attempt), so two hosts sharing a filesystem never share a pid file. ``start``
forks a keeper in a new session; the keeper is a child subreaper, starts the point in its own
process group, waits for it, ends whatever the point left behind, and writes ``exit`` (JSON,
atomically). The SSH channel returns as soon as the pids are known, and the point survives the
launcher and the connection. Environment values (secrets included) arrive on stdin, never on a
command line.
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import signal
import sys
import time
from typing import Any, Dict, List, Optional

PR_SET_CHILD_SUBREAPER = 36
GRACE_S = 5.0


def _write_json(path: str, data: Dict[str, Any]) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def _read_json(path: str) -> Optional[Dict[str, Any]]:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def start_time(pid: int) -> Optional[str]:
    """The process's start time (clock ticks since boot): with the pid, it names one process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def alive(pid: int, started: Optional[str]) -> bool:
    now = start_time(pid)
    if now is None:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return False
    except OSError:
        return False
    return started is None or now == started


def tagged(token: str) -> List[int]:
    """Processes of this user carrying NRUN_TOKEN=token (torchrun workers in their own sessions too)."""
    needle = f"NRUN_TOKEN={token}".encode()
    me, found = os.getpid(), []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    found.append(int(name))
        except OSError:
            continue
    return found


# -- start ---------------------------------------------------------------------------------
def start(job: Dict[str, Any]) -> Dict[str, Any]:
    import base64

    for path, data in (job.get("files") or {}).items():  # the payload, when no filesystem is shared
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
            f.write(base64.b64decode(data))
        os.replace(tmp, path)
    status_dir = job["dir"]
    os.makedirs(status_dir, exist_ok=True)
    for name in ("exit", "pids"):
        try:
            os.unlink(os.path.join(status_dir, name))
        except FileNotFoundError:
            pass
    r, w = os.pipe()
    first = os.fork()
    if first:  # the SSH command: wait for the keeper's pids, print them, return
        os.close(w)
        data = b""
        while True:
            chunk = os.read(r, 4096)
            if not chunk:
                break
            data += chunk
        os.waitpid(first, 0)
        if not data:
            return {"error": "the point did not start (see its stderr.log)"}
        return json.loads(data)
    os.close(r)
    try:
        os.setsid()
        if os.fork():  # the keeper is not a child of the SSH session's shell
            os._exit(0)
        _keeper(job, w)
    except BaseException as exc:  # pragma: no cover - report and leave
        try:
            os.write(w, json.dumps({"error": f"keeper failed: {exc!r}"}).encode())
        finally:
            os._exit(70)
    os._exit(0)


def _keeper(job: Dict[str, Any], w: int) -> None:
    status_dir = job["dir"]
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass
    out = os.open(job["stdout"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    err = os.open(job["stderr"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    env = {**os.environ, **{str(k): str(v) for k, v in job["env"].items()}}  # the login env, then ours
    pid = os.fork()
    if pid == 0:
        try:
            os.setpgid(0, 0)
            signal.signal(signal.SIGHUP, signal.SIG_DFL)
            os.dup2(out, 1)
            os.dup2(err, 2)
            os.chdir(job["cwd"])
            os.execvpe(job["argv"][0], job["argv"], env)
        except BaseException as exc:
            os.write(2, f"nrun: could not start {job['argv'][0]!r} on {os.uname().nodename}: {exc}\n".encode())
        os._exit(127)
    os.close(out)
    os.close(err)
    pids = {"keeper": os.getpid(), "keeper_start": start_time(os.getpid()), "pid": pid,
            "start": start_time(pid), "host": os.uname().nodename, "time": time.time()}
    _write_json(os.path.join(status_dir, "pids"), pids)
    os.write(w, json.dumps(pids).encode())
    os.close(w)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # stopping goes through `signal`, at the point
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    left = _end_orphans(job["token"])
    if job.get("container"):  # `docker run --rm` normally removes it; a killed CLI does not
        _docker(job["container"], "rm", "-f")
    _write_json(os.path.join(status_dir, "exit"), {"code": code, "time": time.time(), "leftovers": left})


def _end_orphans(token: str) -> int:
    """What the point left (re-parented to this subreaper, or still tagged): TERM, wait, KILL."""
    victims = set(tagged(token))
    while True:
        try:
            child, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if child == 0:
            break
    try:
        with open(f"/proc/{os.getpid()}/task/{os.getpid()}/children") as f:
            victims |= {int(p) for p in f.read().split()}
    except OSError:
        pass
    if not victims:
        return 0
    for pid in victims:
        _kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_S
    while time.monotonic() < deadline and any(alive(p, None) for p in victims):
        _reap_some()
        time.sleep(0.05)
    for pid in victims:
        _kill(pid, signal.SIGKILL)
    _reap_some()
    return len(victims)


def _reap_some() -> None:
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                return
        except ChildProcessError:
            return


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# -- signal, status, watch -----------------------------------------------------------------
def send(job: Dict[str, Any]) -> Dict[str, Any]:
    """TERM (or KILL) the point's process group and every process tagged with its token."""
    sig = signal.SIGKILL if job.get("sig") == "KILL" else signal.SIGTERM
    pids = _read_json(os.path.join(job["dir"], "pids")) or {}
    hit = 0
    pid = pids.get("pid")
    if pid and alive(pid, pids.get("start")):
        try:
            os.killpg(pid, sig)
            hit += 1
        except (ProcessLookupError, PermissionError):
            pass
    for other in tagged(job["token"]):
        _kill(other, sig)
        hit += 1
    if job.get("container"):  # the CLI forwards TERM, but a KILLed CLI leaves the container running
        hit += _docker(job["container"], "kill", "--signal", f"SIG{job.get('sig', 'TERM')}") == 0
    return {"signalled": hit}


def _docker(container: Dict[str, Any], *words: str) -> int:
    import subprocess

    try:
        return subprocess.run([container.get("docker") or "docker", *words, container["name"]],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60).returncode
    except (OSError, subprocess.TimeoutExpired):
        return 1


def state(status_dir: str) -> Dict[str, Any]:
    """ended (with its exit), running, or lost (no keeper and no exit: the host restarted...)."""
    ended = _read_json(os.path.join(status_dir, "exit"))
    if ended is not None:
        return {"dir": status_dir, "state": "ended", **ended}
    pids = _read_json(os.path.join(status_dir, "pids"))
    if pids is None:
        return {"dir": status_dir, "state": "unknown"}
    if alive(pids["keeper"], pids.get("keeper_start")):
        return {"dir": status_dir, "state": "running"}
    ended = _read_json(os.path.join(status_dir, "exit"))  # it may have ended just now
    if ended is not None:
        return {"dir": status_dir, "state": "ended", **ended}
    return {"dir": status_dir, "state": "lost"}


def serve(interval: float = 0.1) -> None:
    """One long-lived helper per host and launcher: requests on stdin, one JSON line each
    ({"id", "op": start|signal|status|remove|watch, ...}); a reply line per request ({"id",
    "reply"}) and an event line as each started or watched point ends ({"event": state}). One
    SSH channel then carries a whole sweep: no remote command (and login shell) per point.
    Single-threaded (it forks keepers): requests and end checks take turns."""
    watched: Dict[str, None] = {}
    buf = b""
    stdin = sys.stdin.fileno()

    def emit(obj: Dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    while True:
        ready, _, _ = select.select([stdin], [], [], interval)
        if ready:
            chunk = os.read(stdin, 1 << 20)
            if not chunk:
                return  # the launcher went away; the points run on under their keepers
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if line.strip():
                    emit(_answer(json.loads(line), watched))
        for d in list(watched):
            st = state(d)
            if st["state"] == "unknown":  # started, yet no record left (the host's /tmp wiped...)
                st["state"] = "lost"
            if st["state"] in ("ended", "lost"):
                watched.pop(d)
                emit({"event": st})


def _answer(req: Dict[str, Any], watched: Dict[str, None]) -> Dict[str, Any]:
    op = req.get("op")
    try:
        if op == "start":
            out = start(req["job"])
            if "error" not in out:
                watched[req["job"]["dir"]] = None
        elif op == "watch":
            watched[req["dir"]] = None
            out = {}
        elif op == "signal":
            out = send(req["job"])
        elif op == "status":
            out = {"states": [state(d) for d in req["dirs"]]}
        elif op == "remove":
            import shutil

            shutil.rmtree(req["path"], ignore_errors=True)
            out = {}
        else:
            out = {"error": f"unknown request {op!r}"}
    except Exception as exc:  # answer, never die: the other points depend on this channel
        out = {"error": f"{type(exc).__name__}: {exc}"}
    return {"id": req.get("id"), "reply": out}


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cmd = argv[0] if argv else ""
    if cmd == "serve":
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        serve()
        return 0
    job = json.load(sys.stdin)
    if cmd == "start":
        out = start(job)
    elif cmd == "signal":
        out = send(job)
    elif cmd == "status":
        out = {"states": [state(d) for d in job["dirs"]]}
    else:
        sys.stderr.write(f"usage: nrun_host.py serve|start|signal|status (got {cmd!r})\n")
        return 2
    sys.stdout.write(json.dumps(out) + "\n")
    return 0 if "error" not in out else 1


if __name__ == "__main__":
    sys.exit(main())
