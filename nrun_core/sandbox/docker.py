"""`nrun sandbox docker`: a real Docker engine on this machine plus cached offline Python images.

No systemd here and apt does not start services, so ``up()`` installs Debian's docker.io if
``dockerd`` is missing and starts dockerd itself on a private socket under
``sandbox_dir("docker")``. Images live in the default data-root (/var/lib/docker), so they stay
cached across runs; the base image is rebuilt from a cached tarball in seconds if it is gone.
``NRUN_DOCKER_HOST`` points the sandbox at an engine someone else runs (never started or stopped).

Health checks talk to the engine's API with the standard library; docker-py is imported only to
import or build images.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

from nrun_core.errors import SandboxError
from nrun_core.paths import sandbox_dir
from nrun_core.sandbox import _proc, docker_image

NAME = "docker"
SANDBOX_LABEL = "nrun.sandbox=1"  # containers the sandbox (tests, image builds) may remove on down
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
DOCKERD_ARGS = ["--exec-opt", "native.cgroupdriver=cgroupfs", "--storage-driver=overlay2"]


def _dir() -> Path:
    path = sandbox_dir(NAME)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _log() -> Path:
    return sandbox_dir(NAME) / "dockerd.log"


def _state_file() -> Path:
    return sandbox_dir(NAME) / "dockerd.json"


def docker_host() -> str:
    """The engine nrun uses: ``$NRUN_DOCKER_HOST`` or our own socket under the sandbox dir."""
    return os.environ.get("NRUN_DOCKER_HOST") or f"unix://{sandbox_dir(NAME) / 'docker.sock'}"


def _socket_path(host: str) -> str:
    if not host.startswith("unix://"):
        raise SandboxError(f"NRUN_DOCKER_HOST={host!r} is not a unix:// socket; the docker "
                           "sandbox only talks to local engines. Fix: unset it or give unix://PATH.")
    path = host[len("unix://"):]
    if len(path.encode()) > 107:
        raise SandboxError(f"the docker socket path {path} is longer than 107 bytes (the unix "
                           "socket limit). Fix: set NRUN_SANDBOX_DIR to a shorter directory.")
    return path


# --------------------------------------------------------------------------- engine API


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over the engine's unix socket, so a health check costs no docker-py import."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def _api(host: str, method: str, path: str, timeout: float = 5.0) -> Any:
    """One engine API call; JSON body or None. Raises OSError when nothing answers."""
    conn = _UnixHTTPConnection(_socket_path(host), timeout)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        body = resp.read()
    except (http.client.HTTPException, ValueError) as exc:
        raise OSError(f"bad answer from {host}: {exc}") from exc
    finally:
        conn.close()
    if resp.status >= 400:
        raise OSError(f"{method} {path} on {host}: HTTP {resp.status} {body[:300]!r}")
    return json.loads(body) if body.strip() else None


def engine_version(host: str | None = None) -> dict[str, Any] | None:
    """The engine's /version answer, or None when no engine answers on HOST."""
    try:
        return _api(host or docker_host(), "GET", "/version", timeout=3.0)
    except OSError:
        return None


def _images(host: str) -> list[str]:
    """Tags of nrun's images held by the engine."""
    tags: list[str] = []
    for image in _api(host, "GET", "/images/json") or []:
        tags += [t for t in image.get("RepoTags") or [] if t.startswith("nrun-")]
    return sorted(tags)


def _labelled(host: str, kind: str) -> list[str]:
    """Ids of the containers or networks labelled nrun.sandbox=1."""
    query = urllib.parse.quote(json.dumps({"label": [SANDBOX_LABEL]}))
    listing = f"/containers/json?all=1&filters={query}" if kind == "containers" else \
        f"/networks?filters={query}"
    return [item["Id"] for item in _api(host, "GET", listing) or []]


# --------------------------------------------------------------------------- processes


def _start_time(pid: int) -> str | None:
    """The process's start time in ticks (guards against a recycled pid), None if gone/zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return None if fields[0] in "ZX" else fields[19]


def _dockerd_pids() -> list[int]:
    """Every live dockerd on the machine, ours or not."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == "dockerd" and _start_time(
                        int(entry.name)):
                    pids.append(int(entry.name))
    return pids


def _cmdline(pid: int) -> list[str]:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_text().rstrip("\0").split("\0")
    return []


def _listen_host(argv: list[str]) -> str:
    """The first unix socket a dockerd command line listens on (dockerd's default if none)."""
    for i, arg in enumerate(argv):
        value = argv[i + 1] if arg in ("-H", "--host") and i + 1 < len(argv) else \
            arg.split("=", 1)[1] if arg.startswith(("--host=", "-H=")) else None
        if value and value.startswith("unix://"):
            return value
    return "unix:///var/run/docker.sock"


def engine_pid() -> int | None:
    """Pid of the dockerd this sandbox started, if it still runs."""
    try:
        state = json.loads(_state_file().read_text())
    except (OSError, ValueError):
        return None
    pid, start = int(state["pid"]), state.get("start")
    return pid if start is not None and _start_time(pid) == start else None


def _tail(path: Path, lines: int = 15) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def _locked() -> contextlib.AbstractContextManager[None]:
    """One up/down at a time across processes."""
    return _proc.locked(_dir() / "up.lock")


def _dockerd_binary() -> str:
    found = shutil.which("dockerd") or ("/usr/sbin/dockerd" if Path("/usr/sbin/dockerd").exists()
                                        else None)
    if found is None:
        docker_image.apt_install(["docker.io"], _dir() / "apt.log")
        found = shutil.which("dockerd") or "/usr/sbin/dockerd"
    return found


def _wait_for_engine(host: str, pid: int | None) -> dict[str, Any]:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        version = engine_version(host)
        if version:
            return version
        if pid is not None and _start_time(pid) is None:
            raise SandboxError(f"dockerd (pid {pid}) exited while starting; see {_log()}:\n"
                               f"{_tail(_log())}\nFix: correct the cause above, then rerun "
                               "`nrun sandbox docker up`.")
        time.sleep(0.1)
    raise SandboxError(f"the Docker engine did not answer on {host} within {START_TIMEOUT_S:.0f}s;"
                       f" see {_log()}:\n{_tail(_log())}\nFix: `nrun sandbox docker down`, then up.")


def _start_engine(host: str) -> dict[str, Any]:
    """Start dockerd detached (re-parented to init, so no caller ever holds it as a zombie)."""
    others = [p for p in _dockerd_pids() if p != engine_pid()]
    if others:
        argv = _cmdline(others[0])
        raise SandboxError(
            f"another dockerd is running (pid {others[0]}: {' '.join(argv)}) but does not "
            f"answer on {host}; a second one would share /var/lib/docker. Fix: use it with "
            f"NRUN_DOCKER_HOST={_listen_host(argv)}, or stop it (or the nrun sandbox that "
            "started it: check NRUN_SANDBOX_DIR)."
        )
    if os.geteuid() != 0:
        raise SandboxError("starting the Docker engine needs root. Fix: run `nrun sandbox docker "
                           "up` as root once, or set NRUN_DOCKER_HOST to an engine you can use.")
    binary = _dockerd_binary()
    sock = Path(_socket_path(host))
    pidfile = _dir() / "dockerd.pid"
    with contextlib.suppress(FileNotFoundError):
        pidfile.unlink()  # stale: no live dockerd answers (checked above)
    cmd = [binary, "--host", host, "--pidfile", str(pidfile), *DOCKERD_ARGS]
    with open(_log(), "ab") as log:
        log.write(f"\n=== {time.strftime('%F %T')} $ {' '.join(cmd)}\n".encode())
    script = 'log=$1; shift; "$@" </dev/null >>"$log" 2>&1 & echo $!'
    out = subprocess.run(["sh", "-c", script, "sh", str(_log()), *cmd], capture_output=True,
                         text=True, check=True, start_new_session=True)
    pid = int(out.stdout.strip())
    start = _start_time(pid)
    _state_file().write_text(json.dumps({"pid": pid, "start": start, "host": host,
                                         "socket": str(sock)}))
    return _wait_for_engine(host, pid)


def _ensure_engine() -> tuple[str, dict[str, Any]]:
    host = docker_host()
    version = engine_version(host)
    if version:
        return host, version
    if os.environ.get("NRUN_DOCKER_HOST"):
        raise SandboxError(f"no Docker engine answers on NRUN_DOCKER_HOST={host}. Fix: start "
                           "that engine, or unset NRUN_DOCKER_HOST to let nrun run its own.")
    with _locked():
        version = engine_version(host)
        if version:
            return host, version
        pid = engine_pid()
        if pid is not None:  # started but not answering yet (another process's up())
            return host, _wait_for_engine(host, pid)
        return host, _start_engine(host)


# --------------------------------------------------------------------------- the contract


def up() -> dict[str, str]:
    """Engine running and base image present (torch image too if NRUN_SANDBOX_TORCH=1)."""
    _socket_path(docker_host())  # fail on a bad setting before installing anything
    host, _ = _ensure_engine()
    if docker_image.base_tag() not in _images(host):
        docker_image.ensure_base_image(host)
    if os.environ.get("NRUN_SANDBOX_TORCH") == "1" and docker_image.torch_tag() not in _images(
            host):
        docker_image.ensure_torch_image(host)
    return env()


def ensure_torch_image() -> str:
    """Build (once) the torch CPU image for distributed tests; return its tag."""
    host, _ = _ensure_engine()
    return docker_image.ensure_torch_image(host)


def env() -> dict[str, str]:
    """What a client exports: the engine's socket, its API version and the image tags."""
    host = docker_host()
    result = {"DOCKER_HOST": host, "NRUN_SANDBOX_IMAGE": docker_image.base_tag()}
    version = engine_version(host)
    if version:
        # docker-py negotiates by itself; the v28 CLI in /usr/local/bin needs to be told.
        result["DOCKER_API_VERSION"] = str(version.get("ApiVersion", ""))
        if docker_image.torch_tag() in _images(host):
            result["NRUN_SANDBOX_TORCH_IMAGE"] = docker_image.torch_tag()
    return result


def status() -> tuple[bool, str]:
    """(engine answers and base image present?, a report naming what is missing and the fix)."""
    host = docker_host()
    try:
        _socket_path(host)
    except SandboxError as exc:
        return False, str(exc)
    version = engine_version(host)
    pid = engine_pid()
    if os.environ.get("NRUN_DOCKER_HOST"):
        owner, fix = "NRUN_DOCKER_HOST, not managed by nrun", "start that engine, or unset " \
            "NRUN_DOCKER_HOST and run `nrun sandbox docker up`"
    else:
        owner = f"started by nrun, pid {pid}" if pid else \
            "not started by nrun" if version else "nrun's dockerd is not running"
        fix = "nrun sandbox docker up"
    if not version:
        return False, (f"Docker engine: not answering on {host} ({owner}); log {_log()}.\n"
                       f"Fix: {fix}")
    images = _images(host)
    base, torch = docker_image.base_tag(), docker_image.torch_tag()
    lines = [
        f"Docker engine {version.get('Version')} (API {version.get('ApiVersion')}) on {host} "
        f"({owner}); log {_log()}",
        f"base image {base}: {'present' if base in images else 'MISSING'}",
        f"torch image {torch}: {'present' if torch in images else 'not built'}",
        f"all nrun images: {', '.join(images) or 'none'}",
        f"image cache: {docker_image.image_cache()}",
    ]
    if base not in images:
        lines.append("Fix: nrun sandbox docker up")  # imports or builds the base image
    return base in images, "\n".join(lines)


def _remove_labelled(host: str) -> None:
    """Containers first (a network in use cannot go), then networks; best effort."""
    for cid in _labelled(host, "containers"):
        with contextlib.suppress(OSError):
            _api(host, "DELETE", f"/containers/{cid}?force=1&v=1", timeout=30.0)
    for nid in _labelled(host, "networks"):
        with contextlib.suppress(OSError):
            _api(host, "DELETE", f"/networks/{nid}", timeout=30.0)


def _child_containerd(pid: int) -> int | None:
    """The containerd our dockerd spawned (dies with it on TERM, orphaned by KILL)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                status = (entry / "status").read_text()
                if (entry / "comm").read_text().strip() == "containerd" and \
                        f"\nPPid:\t{pid}\n" in status:
                    return int(entry.name)
    return None


def _terminate(pid: int, timeout: float) -> None:
    """TERM, wait up to TIMEOUT, then KILL."""
    start = _start_time(pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and start and _start_time(pid) == start:
        time.sleep(0.1)
    if start and _start_time(pid) == start:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        while _start_time(pid) == start:
            time.sleep(0.05)


def down() -> None:
    """Remove sandbox-labelled containers, stop the dockerd we started; images stay cached."""
    host = docker_host()
    if engine_version(host):
        _remove_labelled(host)
    with _locked():
        pid = engine_pid()
        if pid is None:
            _state_file().unlink(missing_ok=True)
            return
        containerd = _child_containerd(pid)
        _terminate(pid, STOP_TIMEOUT_S)
        if containerd is not None:
            _terminate(containerd, 5.0)
        _state_file().unlink(missing_ok=True)


if __name__ == "__main__":  # the same as `nrun sandbox docker ...`
    from nrun_core.cli import main

    sys.exit(main(["sandbox", "docker", *sys.argv[1:]]))
