r"""nrun_docker: each point in its own container(s) on a Docker engine; ``nodes=N`` is N containers.

    python train.py -m hydra/launcher=nrun_docker hydra.launcher.image=my/train:1 lr=0.1,0.01
    python train.py -m hydra/launcher=nrun_docker hydra.launcher.image=my/train:1 \
        nrun/launcher=torchrun hydra.launcher.nodes=2 hydra.launcher.gpus_per_node=8

Decisions (the container layout itself is described in ``docker_spec``):
- Code: ``hydra/launcher=nrun_docker`` packs the launch dir with the ``workdir`` packager (honours
  .gitignore); the sweep unpacks it once on the host (NRUN_HOME/snapshots/<digest>, safe unpack)
  and every container mounts that snapshot read-only: no per-container copy or unpack, points
  cannot change each other's code, and editing the tree during a sweep changes nothing.
  ``nrun/packager=passthrough`` mounts the launch dir (and the app's dir) read-only at the same
  paths instead. Bind mounts mean the engine must run on this machine (as the job dir needs too).
- Logs: the container appends its stdout/stderr straight to the job dir's stdout.log/stderr.log
  (node k of a multi-node point: stdout.node<k>.log), so they are live for `nrun logs -f`, cost
  the launcher nothing, and survive a launcher that dies.
- Ownership: by default a non-root caller's containers run as its uid:gid, so what they write
  in the job dir is the caller's; ``hydra.launcher.user`` overrides (root launching for a numeric
  uid hands that uid the job dir first). A root container writing for a non-root caller would
  leave root-owned files: set ``user`` rather than ``user=root``.
- Secrets (``secret_env``) are passed as container environment at create time only: they are not
  in the store, the dry run or any file, but ``docker inspect`` shows them while the container
  exists, to whoever can talk to the engine (root-equivalent anyway); containers are removed
  right after they end.

Mechanics: one thread per point creates and starts its containers (several points start at
once; the runner's loop never blocks on the engine), one thread per container blocks in the
engine's `wait`, and a finalising step reads each exit code and OOM flag *before* removing the
container (auto-remove would lose OOMKilled). What the threads learn goes through one queue that
``poll`` drains on the runner's thread, so the bookkeeping is single-threaded. Cancel and
timeouts send SIGTERM (docker-init forwards it), then SIGKILL after GRACE_S; a node that fails
stops its peers. Nothing is left behind after success, failure, cancel or Ctrl-C (an atexit hook
removes what a crashing launcher still holds), and ``nrun cancel``/``nrun status`` from another
shell find a sweep's containers by their labels (nrun.sweep, nrun.point, nrun.node).
"""

from __future__ import annotations

import atexit
import collections
import os
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Deque, Dict, List, Mapping, Optional, Sequence, Tuple

from nrun_core.command import AppRef
from nrun_core.errors import ConfigError, NrunError
from nrun_core.executors import docker_runtime
from nrun_core.executors import docker_spec as ds
from nrun_core.executors.base import Ended, Event, Executor, Request, Started, split_queue
from nrun_core.executors.local import default_parallelism
from nrun_core.paths import nrun_home
from nrun_core.spec import JobSpec

GRACE_S = 5.0          # SIGTERM → SIGKILL
ENGINE_LOST_S = 60.0   # a wait that cannot reach the engine this long reports the point lost


@dataclass
class _Point:
    spec: JobSpec
    attempt: int
    containers: List[ds.ContainerSpec]
    network: Optional[str]                       # created (and removed) by nrun
    ids: Dict[int, str] = field(default_factory=dict)
    exits: Dict[int, Optional[int]] = field(default_factory=dict)
    first_failed: Optional[int] = None
    started: bool = False
    reason: Optional[str] = None                 # cancelled | timeout, once decided
    deadline: Optional[float] = None
    kill_at: Optional[float] = None
    stopping: bool = False

    @property
    def ended(self) -> bool:
        return len(self.exits) == len(self.containers)


class DockerExecutor(Executor):
    name = "docker"

    def __init__(self, conf: Mapping[str, Any]) -> None:
        super().__init__(conf)
        self.max_parallel = int(conf.get("max_parallel") or default_parallelism())
        self._passthrough = _passthrough_dirs()
        self._queue: Deque[JobSpec] = collections.deque()
        self._points: Dict[int, _Point] = {}
        self._slots = 0
        self._attempts: Dict[int, int] = collections.Counter()
        self._cancelled_queued: List[int] = []
        self._msgs: "queue.Queue[Tuple[Any, ...]]" = queue.Queue()
        self._engine: Any = None
        self._engine_error: Optional[str] = None
        self._pool: Optional[ThreadPoolExecutor] = None
        self._lib: Optional[str] = None
        self._pid: Optional[int] = None

    # -- contract ----------------------------------------------------------------------
    def validate(self, specs: Sequence[JobSpec]) -> None:
        from nrun_core.executors.docker_engine import Engine

        ds.check_options(self.conf)
        app = AppRef.detect()
        for spec in specs:
            if spec.artifact and app.script and app.script in spec.command:
                raise ConfigError(
                    f"the app {app.script} lies outside the packaged directory, so the container would "
                    "not have it. Fix: launch from the app's directory (or a parent of it), set "
                    "hydra.launcher.packager.base_dir to include it, or use nrun/packager=passthrough")
        for i, vol in enumerate(self.conf.get("volumes") or []):
            ds.parse_volume(i, str(vol))
        if self.conf.get("dry_run"):
            return  # a dry run needs no engine
        engine = Engine(self.conf.get("docker_host"))
        try:
            engine.ensure_image(str(self.conf["image"]), self.conf.get("pull", "missing"))
            runtime = self.conf.get("runtime")
            if runtime and runtime not in engine.runtimes():
                raise ConfigError(f"hydra.launcher.runtime={runtime} is not a runtime of the engine at "
                                  f"{engine.address} (it has: {', '.join(engine.runtimes())}). Fix: "
                                  "choose one of those, or configure it in the engine's daemon.json")
            net = self.conf.get("network")
            if net and net not in ("bridge", "host", "none", "default") and not engine.network_exists(net):
                raise ConfigError(f"hydra.launcher.network={net}: no such network on the engine. Fix: "
                                  f"`docker network create {net}`, or leave it unset")
            if specs and ds.device_requests(self.conf, specs[0]):
                probe = ds.build(self.conf, specs[0], 0, code=self._code(specs[0]), lib_dir="/")
                try:
                    engine.probe_gpus(probe, ds.gpu_setting(self.conf))
                except NrunError as exc:
                    raise ConfigError(str(exc)) from None
        finally:
            engine.close()

    def render(self, specs: Sequence[JobSpec]) -> List[Request]:
        lib = docker_runtime.lib_dir(create=False)
        out = []
        for s in specs:
            lines = [f"# image pull: {self.conf.get('pull', 'missing')}; container removal: "
                     f"{self.conf.get('remove', 'always')}; timeout_s: {s.timeout_s}"]
            if s.nodes > 1 and not self.conf.get("network"):
                lines.append(ds.render_network(self.conf, s, ds.network_name(s)))
            for node in range(s.nodes):
                cs = ds.build(self.conf, s, node, code=self._code(s), lib_dir=lib)
                lines.append(ds.render_run(cs))
            out.append(Request(title=f"point {s.index}: {s.nodes} container(s)", text="\n".join(lines) + "\n"))
        return out

    def start(self, specs: Sequence[JobSpec]) -> None:
        self._queue.extend(specs)

    def busy(self) -> bool:
        return bool(self._queue or self._points or self._cancelled_queued)

    def poll(self, timeout: float) -> List[Event]:
        events = self._start_queued()
        if self._points:
            now = time.monotonic()
            wake = [p.deadline for p in self._points.values() if p.deadline and not p.reason]
            wake += [p.kill_at for p in self._points.values() if p.kill_at]
            try:
                msgs = [self._msgs.get(timeout=max(0.0, min([timeout] + [t - now for t in wake])))]
            except queue.Empty:
                msgs = []
            while True:
                try:
                    msgs.append(self._msgs.get_nowait())
                except queue.Empty:
                    break
            for msg in msgs:
                events += self._handle(msg)
            self._enforce_deadlines()
        return events + self._start_queued()

    def cancel(self, indices: Optional[Sequence[int]] = None) -> None:
        wanted = None if indices is None else set(indices)
        kept, cancelled = split_queue(self._queue, wanted)
        self._queue = collections.deque(kept)
        self._cancelled_queued += cancelled
        for p in self._points.values():
            if (wanted is None or p.spec.index in wanted) and not p.ended:
                if p.started:
                    self._stop(p, "cancelled")
                else:  # still being created: stopped as soon as its start is reported
                    p.reason = p.reason or "cancelled"

    # -- starting ------------------------------------------------------------------------
    def _ensure_engine(self) -> None:
        """Engine client, thread pool and runtime dir, made in the process that runs the points
        (a detached supervisor is a fork: nothing of this may cross it)."""
        if self._pid == os.getpid():
            return
        from nrun_core.executors.docker_engine import Engine

        self._pid = os.getpid()
        self._lib = docker_runtime.lib_dir()
        nodes = max(1, int(self.conf.get("nodes", 1)))
        try:
            self._engine = Engine(self.conf.get("docker_host"), pool=2 * self.max_parallel * nodes + 8)
        except NrunError as exc:
            self._engine_error = str(exc)
        self._pool = ThreadPoolExecutor(max_workers=max(2, min(8, self.max_parallel * nodes)),
                                        thread_name_prefix="nrun-docker")
        atexit.register(self._abandon)

    def _start_queued(self) -> List[Event]:
        events: List[Event] = [Ended(idx=i, reason="cancelled", detail="cancelled before it started")
                               for i in self._cancelled_queued]
        self._cancelled_queued = []
        while self._queue and self._slots < self.max_parallel:
            spec = self._queue.popleft()
            self._ensure_engine()
            self._attempts[spec.index] += 1
            attempt = self._attempts[spec.index]
            try:
                if self._engine_error:
                    raise NrunError(self._engine_error)
                containers = [ds.build(self.conf, spec, n, code=self._code(spec), lib_dir=self._lib or "",
                                       attempt=attempt) for n in range(spec.nodes)]
            except NrunError as exc:
                events += _not_started(spec.index, ds.container_name(spec, 0, attempt), None, str(exc))
                continue
            network = ds.network_name(spec, attempt) if spec.nodes > 1 and not self.conf.get("network") else None
            point = _Point(spec=spec, attempt=attempt, containers=containers, network=network)
            self._points[spec.index] = point
            self._slots += 1
            assert self._pool is not None
            self._pool.submit(self._launch, point)
        return events

    def _launch(self, p: _Point) -> None:
        """Thread: create the network and containers, start them, then wait on each."""
        engine = self._engine
        try:
            self._prepare_host(p)
            if p.network:
                engine.create_network(p.network, ds.labels_for(self.conf, p.spec))
            secrets = {n: os.environ[n] for n in p.spec.secret_env if n in os.environ}
            setting = ds.gpu_setting(self.conf)
            for node, cs in enumerate(p.containers):
                p.ids[node] = engine.create(cs, secrets, setting=setting)
            for node, cs in enumerate(p.containers):
                engine.start(p.ids[node], cs, setting=setting)
        except Exception as exc:  # report it as the point's failure; leave nothing behind
            for cid in p.ids.values():
                _quietly(engine.remove, cid)
            if p.network:
                _quietly(engine.remove_network, p.network)
            self._msgs.put(("failed", p, str(exc)))
            return
        self._msgs.put(("started", p))
        for node, cid in p.ids.items():
            threading.Thread(target=self._wait, args=(p, node, cid), daemon=True,
                             name=f"nrun-docker-wait-{p.containers[node].name}").start()

    def _prepare_host(self, p: _Point) -> None:
        """Job dir on the host, writable by the container's user; snapshot readable by it."""
        spec = p.spec
        os.makedirs(spec.nrun_dir, exist_ok=True)
        user = p.containers[0].user
        uid = ds.numeric_uid(user)
        if os.geteuid() == 0 and uid not in (None, 0):  # root launches for another uid: hand it the dir
            parts = (user or "").split(":")
            gid = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else -1
            for path in [spec.job_dir, str(spec.nrun_dir), spec.stdout, spec.stderr,
                         *[ds.node_log(spec, n, s) for n in range(1, spec.nodes) for s in ("stdout", "stderr")]]:
                if os.path.exists(path):
                    os.chown(path, uid, gid)
        root = self._code(spec).snapshot_root
        if root and os.path.isdir(root):
            st = os.stat(root)
            if st.st_mode & 0o055 != 0o055 and st.st_uid == os.geteuid():
                os.chmod(root, st.st_mode | 0o755)  # a fresh snapshot is 0700: any container uid reads it

    def _wait(self, p: _Point, node: int, cid: str) -> None:
        """Thread: block until the container ends; survive read timeouts and engine hiccups."""
        engine, lost_since = self._engine, None
        while True:
            try:
                code = engine.wait(cid)
                break
            except Exception:
                try:
                    st = engine.state(cid)
                except Exception:
                    st = {"Running": True, "unreachable": True}
                if st is None:
                    code = None
                    break
                if not st.get("Running") and not st.get("unreachable"):
                    code = int(st.get("ExitCode", -1))
                    break
                if st.get("unreachable"):
                    lost_since = lost_since or time.monotonic()
                    if time.monotonic() - lost_since > ENGINE_LOST_S:
                        code = None
                        break
                    time.sleep(1.0)
                else:  # a read timeout on a long point (or a refused wait): ask again, gently
                    lost_since = None
                    time.sleep(0.2)
        self._msgs.put(("exited", p, node, code))

    # -- events --------------------------------------------------------------------------
    def _handle(self, msg: Tuple[Any, ...]) -> List[Event]:
        kind, p = msg[0], msg[1]
        if kind == "started":
            p.started = True
            if p.spec.timeout_s:
                p.deadline = time.monotonic() + float(p.spec.timeout_s)
            if p.reason:
                self._stop(p, p.reason)
            return [Started(idx=p.spec.index, backend_id=p.containers[0].name)]
        if kind == "failed":
            self._points.pop(p.spec.index, None)
            self._slots -= 1
            return _not_started(p.spec.index, p.containers[0].name, p.reason, msg[2])
        if kind == "exited":
            node, code = msg[2], msg[3]
            p.exits[node] = code
            if code != 0 and p.first_failed is None:
                p.first_failed = node
            if p.ended:
                self._slots -= 1
                assert self._pool is not None
                self._pool.submit(self._finalize, p)
            elif code != 0:
                self._stop(p, None)  # one node failed: its peers cannot finish; stop them
            return []
        if kind == "finalized":
            self._points.pop(p.spec.index, None)
            return [msg[2]]
        raise AssertionError(kind)  # pragma: no cover

    def _stop(self, p: _Point, reason: Optional[str]) -> None:
        if reason and not p.reason:
            p.reason = reason
        if p.stopping:
            return
        p.stopping = True
        p.kill_at = time.monotonic() + GRACE_S
        self._signal(p, "SIGTERM")

    def _signal(self, p: _Point, sig: str) -> None:
        assert self._pool is not None
        for node, cid in p.ids.items():
            if node not in p.exits:
                self._pool.submit(_quietly, self._engine.kill, cid, sig)

    def _enforce_deadlines(self) -> None:
        now = time.monotonic()
        for p in self._points.values():
            if p.ended:
                continue
            if p.deadline and not p.reason and now >= p.deadline:
                self._stop(p, "timeout")
            elif p.kill_at and now >= p.kill_at:
                p.kill_at = None
                self._signal(p, "SIGKILL")

    def _finalize(self, p: _Point) -> None:
        """Thread: read exit state (OOM!) first, then remove per policy; report the end."""
        engine, states, tail = self._engine, {}, ""
        try:
            for node, cid in p.ids.items():
                states[node] = _quietly(engine.state, cid) or {}
            if p.first_failed is not None and not p.reason:
                tail = _quietly(engine.logs_tail, p.ids[p.first_failed]) or ""
            policy = self.conf.get("remove", "always")
            failed = p.first_failed is not None or p.reason is not None
            if policy == "always" or (policy == "on_success" and not failed) or \
                    (policy != "never" and p.reason == "cancelled"):
                for cid in p.ids.values():
                    _quietly(engine.remove, cid)
                if p.network:
                    _quietly(engine.remove_network, p.network)
            ended = self._ended(p, states, tail)
        except Exception as exc:  # never lose the point's end
            ended = Ended(idx=p.spec.index, reason=p.reason or "exited", exit_code=p.exits.get(0),
                          detail=f"ended, but nrun could not read its state: {exc}")
        self._msgs.put(("finalized", p, ended))

    def _ended(self, p: _Point, states: Dict[int, Dict[str, Any]], tail: str) -> Ended:
        idx = p.spec.index
        node = p.first_failed if p.first_failed is not None else 0
        code = p.exits.get(node)
        where = f"container {p.containers[node].name}" + (f" (node {node})" if len(p.containers) > 1 else "")
        if p.reason:
            return Ended(idx=idx, reason=p.reason, exit_code=code)
        if code is None:
            return Ended(idx=idx, reason="lost", detail=f"{where} vanished before nrun read its exit code "
                         "(removed outside nrun, or the engine stopped answering)")
        oom = [n for n, st in states.items() if st.get("OOMKilled")]
        mem = self.conf.get("mem_limit")
        if oom:
            n = oom[0]
            return Ended(idx=idx, reason="exited", exit_code=137, detail=(
                f"out of memory (OOM): container {p.containers[n].name} was killed at its memory limit "
                f"(hydra.launcher.mem_limit={mem}), exit 137. Fix: raise hydra.launcher.mem_limit or "
                "make the point use less memory"))
        detail = f"{where} exited with code {code}"
        if code == 137:
            detail += " (SIGKILL" + (f"; with hydra.launcher.mem_limit={mem}, likely out of memory)" if mem else ")")
        elif code in (126, 127):
            detail += (f": the command could not run in hydra.launcher.image={self.conf.get('image')} "
                       f"(is hydra.launcher.python={self.conf.get('python', 'python3')} there?)")
        if tail:
            detail += f"; container output: {tail[-500:]}"
        return Ended(idx=idx, reason="exited", exit_code=code, detail=detail)

    def _abandon(self) -> None:
        """atexit: the launcher is leaving with containers still held: remove them."""
        if self._pid != os.getpid() or not self._points or self._engine is None:
            return
        for p in list(self._points.values()):
            for cid in list(p.ids.values()):
                _quietly(self._engine.remove, cid)
            if p.network:
                _quietly(self._engine.remove_network, p.network)

    def _code(self, spec: JobSpec) -> ds.CodeLayout:
        if spec.artifact:
            return ds.CodeLayout(snapshot_root=str(nrun_home() / "snapshots" / spec.artifact))
        return ds.CodeLayout(snapshot_root=None, passthrough_dirs=self._passthrough)

    # -- from another shell --------------------------------------------------------------
    @classmethod
    def cancel_recorded(cls, sweep: Dict[str, Any], points: List[Dict[str, Any]]) -> List[int]:
        from nrun_core.executors.docker_recorded import cancel

        return cancel(sweep, points, grace_s=GRACE_S)

    @classmethod
    def probe_recorded(cls, sweep: Dict[str, Any], point: Dict[str, Any]) -> Optional[bool]:
        from nrun_core.executors.docker_recorded import probe

        return probe(sweep, point)


def _not_started(idx: int, name: str, reason: Optional[str], error: str) -> List[Event]:
    """A point the engine refused: Started then Ended, so the runner counts the attempt (its
    retry budget is spent per Started) and the store shows which container it was."""
    return [Started(idx=idx, backend_id=name),
            Ended(idx=idx, reason=reason or "exited", detail=f"could not start: {error}")]


def _passthrough_dirs() -> Tuple[str, ...]:
    """Passthrough: the launch dir, plus the app's own dir when it lies elsewhere (same paths)."""
    cwd = os.getcwd()
    dirs = [cwd]
    script = AppRef.detect().script
    if script:
        app_dir = os.path.dirname(script)
        if not (app_dir == cwd or app_dir.startswith(cwd.rstrip("/") + "/")):
            dirs.append(app_dir)
    return tuple(dirs)


def _quietly(fn: Any, *args: Any) -> Any:
    """Best-effort engine call (cleanup paths): errors must not hide the point's real outcome."""
    try:
        return fn(*args)
    except Exception:
        return None
