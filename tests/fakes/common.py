"""What both fakes share: a threaded stdlib HTTP server with a route table, bearer auth, a log
of every request (tests count calls per point) and a job runner on a real Docker engine.

A job of several replicas that may talk to each other gets a Docker network of its own
(internal: no route out; labelled, removed with the job), on which each replica answers to its
pod-like hostname and the DNS names the vendor's variables give it."""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Optional, Tuple
from urllib.parse import parse_qs, urlparse


@dataclass
class Call:
    method: str
    path: str
    query: Dict[str, List[str]]
    status: int
    time: float = field(default_factory=time.time)


class Reply(Exception):
    def __init__(self, status: int, body: Any = None) -> None:
        super().__init__(status)
        self.status, self.body = status, body


Route = Tuple[str, "re.Pattern[str]", Callable[..., Any]]


class FakeServer:
    """Routes are (method, regex on the path, handler(match, query, body) -> (status, body))."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.routes: List[Route] = []
        self.calls: List[Call] = []
        self.lock = threading.RLock()
        self.failures: List[List[Any]] = []   # [method, regex, status, count]
        self.server: Optional[ThreadingHTTPServer] = None
        self.peak_jobs = 0   # most jobs that existed at once (created, not yet deleted)

    # -- configuration ---------------------------------------------------------------------
    def route(self, method: str, pattern: str, fn: Callable[..., Any]) -> None:
        self.routes.append((method, re.compile(pattern + r"/?$"), fn))

    def fail_next(self, method: str, pattern: str, status: int, count: int = 1) -> None:
        """Answer the next ``count`` matching requests with ``status`` (retry tests)."""
        with self.lock:
            self.failures.append([method, re.compile(pattern), status, count])

    def authorized(self, headers: Any, path: str) -> bool:  # pragma: no cover - overridden
        return True

    def calls_matching(self, method: str, pattern: str) -> List[Call]:
        rx = re.compile(pattern)
        with self.lock:
            return [c for c in self.calls if c.method == method and rx.search(c.path)]

    # -- serving ---------------------------------------------------------------------------
    def start(self) -> str:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                fake._dispatch(self)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True, name=f"fake-{self.name}").start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def note_jobs(self, count: int) -> None:
        self.peak_jobs = max(self.peak_jobs, count)

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()

    def _dispatch(self, h: BaseHTTPRequestHandler) -> None:
        url = urlparse(h.path)
        query = parse_qs(url.query)
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        status, body = 404, {"message": f"no route {h.command} {url.path}"}
        try:
            body_in = json.loads(raw) if raw else None
            status, body = self._answer(h.command, url.path, query, body_in, h.headers)
        except Reply as r:
            status, body = r.status, r.body
        except Exception as exc:  # a fake's own bug shows as a 500 with its text
            status, body = 500, {"message": f"fake {self.name}: {type(exc).__name__}: {exc}"}
        with self.lock:
            self.calls.append(Call(h.command, url.path, query, status))
        data = body if isinstance(body, bytes) else json.dumps(body).encode() if body is not None else b""
        h.send_response(status)
        h.send_header("Content-Type", "text/plain" if isinstance(body, bytes) else "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _answer(self, method: str, path: str, query: Dict[str, List[str]], body: Any,
                headers: Any) -> Tuple[int, Any]:
        with self.lock:
            for f in self.failures:
                if f[0] == method and f[1].search(path) and f[3] > 0:
                    f[3] -= 1
                    return f[2], {"message": f"injected {f[2]}"}
        allowed = []
        for m, rx, fn in self.routes:
            match = rx.match(path)
            if match:
                if m != method:
                    allowed.append(m)
                    continue
                if not self.authorized(headers, path):
                    return 401, {"message": "unauthorized: bad or missing bearer token"}
                return fn(match, query, body)
        if allowed:
            return 405, {"message": f"method {method} not allowed; allowed: {', '.join(allowed)}"}
        return 404, {"message": f"not found: {path}"}


def new_id() -> str:
    return str(uuid.uuid4())


# ------------------------------------------------------------------------------ containers
@dataclass
class Replica:
    argv: List[str]
    env: Dict[str, str]
    binds: Dict[str, Dict[str, str]]     # host path -> {"bind": path, "mode": "rw"}
    workdir: Optional[str] = None
    hostname: Optional[str] = None       # the pod's hostname
    aliases: List[str] = field(default_factory=list)  # names it answers to on the job's network
    id: str = ""                         # container id once created
    exit_code: Optional[int] = None


class DockerJobs:
    """Runs a job's replicas as containers on the engine at ``docker_host``; one thread per job
    waits for them and reports the job's end through ``on_end(key, failed)``."""

    def __init__(self, docker_host: str, fake: str) -> None:
        import docker

        self.client = docker.DockerClient(base_url=docker_host, version="auto", timeout=120)
        self.fake = fake
        self.networks: Dict[str, str] = {}   # job key -> its network's name

    def run(self, key: str, image: str, replicas: List[Replica], labels: Dict[str, str],
            on_start: Callable[[], None], on_end: Callable[[bool, str], None], network: bool = False) -> None:
        """``network``: put the replicas on a network of their own, reachable by their names."""
        own = {**labels, "nrun-fake": self.fake, "nrun-fake.job": key}

        def body() -> None:
            try:
                net = self._network(key, own) if network else None
                for i, r in enumerate(replicas):
                    extra: Dict[str, Any] = {}
                    if net:
                        extra = {"network": net, "networking_config": {
                            net: self.client.api.create_endpoint_config(aliases=r.aliases or None)}}
                    c = self.client.containers.create(
                        image, command=r.argv, environment=r.env, volumes=r.binds, working_dir=r.workdir,
                        labels={**own, "nrun-fake.replica": str(i)}, hostname=r.hostname,
                        detach=True, init=True, **extra)
                    r.id = c.id
                for r in replicas:
                    self.client.api.start(r.id)
            except Exception as exc:
                self.remove(replicas, key)
                on_end(True, f"could not start: {exc}")
                return
            on_start()
            for r in replicas:
                r.exit_code = self._exit_code(r.id)
            failed = [r for r in replicas if r.exit_code != 0]
            on_end(bool(failed), self._why(failed[0]) if failed else "")

        threading.Thread(target=body, daemon=True, name=f"fake-{self.fake}-{key}").start()

    def _exit_code(self, cid: str) -> Optional[int]:
        """The container's exit code once it ended. A failed wait call (the engine busy, a
        dropped connection) is asked again through inspect, not taken for a failed job."""
        for _ in range(3600):
            try:
                return int(self.client.api.wait(cid, timeout=3600)["StatusCode"])
            except Exception:
                try:
                    state = self.client.api.inspect_container(cid)["State"]
                except Exception:
                    return None  # removed (a delete): nothing more to learn
                if not state.get("Running") and state.get("Status") in ("exited", "dead"):
                    return int(state.get("ExitCode", 1))
                time.sleep(1)
        return None

    def _why(self, r: "Replica") -> str:
        """The end of a failed replica's own log, as the vendor's UI would show it."""
        if r.id is None:
            return ""
        try:
            tail = self.client.api.logs(r.id, tail=5).decode(errors="replace").strip()
        except Exception:
            return f"exit code {r.exit_code}"
        return f"exit code {r.exit_code}" + (f": {tail}" if tail else "")

    def kill(self, replicas: List[Replica], signal: str = "SIGTERM") -> None:
        _each_container(replicas, lambda cid: self.client.api.kill(cid, signal=signal))

    def _network(self, key: str, labels: Dict[str, str]) -> str:
        """An internal bridge network for one job (the fake's own: nothing leaves it)."""
        name = f"nrun-fake-{self.fake}-{key}"[:60]
        self.client.api.create_network(name, driver="bridge", internal=True, labels=labels, check_duplicate=True)
        self.networks[key] = name
        return name

    def remove(self, replicas: List[Replica], key: str = "") -> None:
        """Remove the replicas' containers, then the job's network if it has one."""
        _each_container(replicas, lambda cid: self.client.api.remove_container(cid, force=True))
        net = self.networks.pop(key, None) if key else None
        if net:
            try:
                self.client.api.remove_network(net)
            except Exception:
                pass

    def logs(self, replica: Replica) -> bytes:
        if not replica.id:
            return b""
        try:
            return self.client.api.logs(replica.id, stdout=True, stderr=True)
        except Exception:
            return b""

    def cleanup(self) -> None:
        """Remove every container this fake started (end of the test session)."""
        for c in self.client.containers.list(all=True, filters={"label": f"nrun-fake={self.fake}"}):
            try:
                c.remove(force=True)
            except Exception:
                pass
        for n in self.client.api.networks(filters={"label": [f"nrun-fake={self.fake}"]}):
            try:
                self.client.api.remove_network(n["Id"])
            except Exception:
                pass
        self.client.close()

    def containers(self, sweep: str) -> List[Any]:
        return self.client.containers.list(all=True, filters={"label": f"nrun-fake.sweep={sweep}"})

    def sweep_networks(self, sweep: str) -> List[str]:
        """Names of the networks the fake still holds for a sweep's jobs."""
        return [n["Name"] for n in self.client.api.networks(filters={"label": [f"nrun-fake.sweep={sweep}"]})]


def _each_container(replicas: List[Replica], call: Callable[[str], Any]) -> None:
    """CALL(container id) for each replica that has a container; one already gone is no error."""
    for r in replicas:
        if r.id:
            try:
                call(r.id)
            except Exception:
                pass


def stop_then_kill(jobs: DockerJobs, replicas: List[Replica], grace_s: float = 3.0) -> None:
    """SIGTERM now, SIGKILL after the grace (in the background), as a pod's termination does."""
    jobs.kill(replicas, "SIGTERM")

    def later() -> None:
        time.sleep(grace_s)
        jobs.kill(replicas, "SIGKILL")

    threading.Thread(target=later, daemon=True).start()
