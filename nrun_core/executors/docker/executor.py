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

Mechanics: the launcher-side queue (max_parallel, timeout_s, cancel, TERM → grace → KILL) is
the one local processes use (``executors.queue``). One thread per point creates and starts its
containers (several points start at once; the runner's loop never blocks on the engine), one
thread per container blocks in the engine's `wait`, and a finalising step reads each exit code
and OOM flag *before* removing the container (auto-remove would lose OOMKilled). What the threads
learn goes through one queue that ``wait`` drains on the runner's thread, so the bookkeeping is
single-threaded. SIGTERM reaches the point through docker-init; a node that fails stops its
peers. Nothing is left behind after success, failure, cancel or Ctrl-C (an atexit hook
removes what a crashing launcher still holds), and ``nrun cancel``/``nrun status`` from another
shell find a sweep's containers by their labels (nrun.sweep, nrun.point, nrun.node).
"""

from __future__ import annotations

import atexit
import os
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from nrun_core.errors import ConfigError, NrunError
from nrun_core.executors.docker import spec as ds
from nrun_core.executors import runtime_copy
from nrun_core.executors.base import Ended, Event, Request, Started
from nrun_core.executors.docker.control import DockerControl
from nrun_core.executors.queue import GRACE_S, QueuedExecutor, Slot, drain
from nrun_core.paths import nrun_home
from nrun_core.placement import secret_values
from nrun_core.spec import JobSpec

ENGINE_LOST_S = 60.0   # a wait that cannot reach the engine this long reports the point lost


@dataclass
class _Point:
    """The containers of one attempt of one point (``Slot.handle``)."""

    slot: Slot
    containers: List[ds.ContainerSpec]
    network: Optional[str]                       # created (and removed) by nrun
    ids: Dict[int, str] = field(default_factory=dict)
    exits: Dict[int, Optional[int]] = field(default_factory=dict)
    first_failed: Optional[int] = None

    @property
    def spec(self) -> JobSpec:
        return self.slot.spec

    @property
    def ended(self) -> bool:
        return len(self.exits) == len(self.containers)


class DockerExecutor(QueuedExecutor):
    name = "docker"
    sees_launcher_files = False  # only what is mounted: the code, the job dir, the runtime

    control_class = DockerControl

    def __init__(self, options: Any, ctx: Any) -> None:
        super().__init__(options, ctx)
        self._passthrough: Optional[Tuple[str, ...]] = None
        self._msgs: "queue.Queue[Tuple[Any, ...]]" = queue.Queue()
        self._engine: Any = None
        self._engine_error: Optional[str] = None
        self._pool: Optional[ThreadPoolExecutor] = None
        self._runtime: Optional[str] = None
        self._pid: Optional[int] = None

    # -- contract ----------------------------------------------------------------------
    def check_options(self) -> None:
        ds.check_options(self.opts)
        for i, vol in enumerate(self.opts.volumes or []):
            ds.parse_volume(i, str(vol))

    def validate(self, specs: Sequence[JobSpec]) -> None:
        from nrun_core.executors.docker.engine import Engine

        if self.opts.dry_run:
            return  # a dry run needs no engine
        engine = Engine(self.opts.docker_host)
        try:
            engine.ensure_image(str(self.opts.image), self.opts.pull)
            runtime = self.opts.runtime
            if runtime and runtime not in engine.runtimes():
                raise ConfigError(f"hydra.launcher.runtime={runtime} is not a runtime of the engine at "
                                  f"{engine.address} (it has: {', '.join(engine.runtimes())}). Fix: "
                                  "choose one of those, or configure it in the engine's daemon.json")
            net = self.opts.network
            if net and net not in ("bridge", "host", "none", "default") and not engine.network_exists(net):
                raise ConfigError(f"hydra.launcher.network={net}: no such network on the engine. Fix: "
                                  f"`docker network create {net}`, or leave it unset")
            if specs and ds.device_requests(self.opts, specs[0]):
                probe = ds.build(self.opts, specs[0], 0, code=self._code(specs[0]), runtime_dir="/")
                try:
                    engine.probe_gpus(probe, ds.gpu_setting(self.opts))
                except NrunError as exc:
                    raise ConfigError(str(exc)) from None
        finally:
            engine.close()

    def record(self) -> Dict[str, Any]:
        """The engine the containers went to: `nrun status` from a shell without this DOCKER_HOST
        asks that one, not its own default socket."""
        from nrun_core.executors.docker.engine import engine_address

        return {"docker_host": engine_address(self.opts.docker_host)[0]}

    def render(self, specs: Sequence[JobSpec]) -> List[Request]:
        runtime = runtime_copy.runtime_dir(create=False)
        out = []
        for s in specs:
            lines = [f"# image pull: {self.opts.pull}; container removal: {self.opts.remove}; "
                     f"timeout_s: {s.timeout_s}"]
            if s.nodes > 1 and not self.opts.network:
                lines.append(ds.render_network(self.opts, s, ds.network_name(s)))
            for node in range(s.nodes):
                cs = ds.build(self.opts, s, node, code=self._code(s), runtime_dir=runtime)
                lines.append(ds.render_run(cs))
            out.append(Request(title=f"point {s.index}: {s.nodes} container(s)", text="\n".join(lines) + "\n"))
        return out

    # -- QueuedExecutor --------------------------------------------------------------------
    def launch(self, slot: Slot) -> List[Event]:
        self._ensure_engine()
        if self._engine_error:
            raise NrunError(self._engine_error)
        spec = slot.spec
        containers = [ds.build(self.opts, spec, n, code=self._code(spec), runtime_dir=self._runtime or "",
                               attempt=slot.attempt) for n in range(spec.nodes)]
        network = ds.network_name(spec, slot.attempt) if spec.nodes > 1 and not self.opts.network else None
        slot.handle = _Point(slot=slot, containers=containers, network=network)
        assert self._pool is not None
        self._pool.submit(self._launch, slot.handle)
        return []

    def signal(self, slot: Slot, kill: bool) -> None:
        p = slot.handle
        if p is None:
            return
        assert self._pool is not None
        for node, cid in p.ids.items():
            if node not in p.exits:
                self._pool.submit(_quietly, self._engine.kill, cid, "SIGKILL" if kill else "SIGTERM")

    def wait(self, timeout: float) -> List[Event]:
        return [ev for msg in drain(self._msgs, timeout) for ev in self._handle(msg)]

    # -- starting ------------------------------------------------------------------------
    def _ensure_engine(self) -> None:
        """Engine client, thread pool and runtime dir, made in the process that runs the points
        (a detached supervisor is a fork: nothing of this may cross it)."""
        if self._pid == os.getpid():
            return
        from nrun_core.executors.docker.engine import Engine

        self._pid = os.getpid()
        self._runtime = runtime_copy.runtime_dir()
        nodes = max(1, int(self.opts.nodes))
        try:
            self._engine = Engine(self.opts.docker_host, pool=2 * self.max_parallel * nodes + 8)
        except NrunError as exc:
            self._engine_error = str(exc)
        self._pool = ThreadPoolExecutor(max_workers=max(2, min(8, self.max_parallel * nodes)),
                                        thread_name_prefix="nrun-docker")
        atexit.register(self._abandon)

    def _launch(self, p: _Point) -> None:
        """Thread: create the network and containers, start them, then wait on each."""
        engine = self._engine
        try:
            self._prepare_host(p)
            if p.network:
                engine.create_network(p.network, ds.labels_for(self.opts, p.spec))
            secrets = secret_values(p.spec.secret_env)
            setting = ds.gpu_setting(self.opts)
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
            for path in [spec.job_dir, os.path.dirname(str(spec.nrun_dir)), str(spec.nrun_dir),
                         spec.payload_file, spec.stdout, spec.stderr,
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
        idx = p.spec.index
        if kind == "started":
            return [Started(idx=idx, backend_id=p.containers[0].name)]
        if kind == "failed":  # Started then Ended: the attempt counts, the store names the container
            return [Started(idx=idx, backend_id=p.containers[0].name),
                    Ended(idx=idx, reason="exited", detail=f"could not start: {msg[2]}")]
        if kind == "exited":
            node, code = msg[2], msg[3]
            p.exits[node] = code
            if code != 0 and p.first_failed is None:
                p.first_failed = node
            if p.ended:
                assert self._pool is not None
                self._pool.submit(self._finalize, p)
            elif code != 0 and p.slot.kill_at is None:  # one node failed: its peers cannot finish
                p.slot.kill_at = time.monotonic() + self.grace_s
                self.signal(p.slot, kill=False)
            return []
        if kind == "finalized":
            return [msg[2]]
        raise AssertionError(kind)  # pragma: no cover

    def _finalize(self, p: _Point) -> None:
        """Thread: read exit state (OOM!) first, then remove per policy; report the end."""
        engine, states, tail = self._engine, {}, ""
        reason = p.slot.reason
        try:
            for node, cid in p.ids.items():
                states[node] = _quietly(engine.state, cid) or {}
            if p.first_failed is not None and not reason:
                tail = _quietly(engine.logs_tail, p.ids[p.first_failed]) or ""
            policy = self.opts.remove
            failed = p.first_failed is not None or reason is not None
            if policy == "always" or (policy == "on_success" and not failed) or \
                    (policy != "never" and reason == "cancelled"):
                for cid in p.ids.values():
                    _quietly(engine.remove, cid)
                if p.network:
                    _quietly(engine.remove_network, p.network)
            ended = self._ended(p, states, tail)
            ended.usage = _engine_usage(states)  # read before removal; the point's own account wins
        except Exception as exc:  # never lose the point's end
            ended = Ended(idx=p.spec.index, reason="exited", exit_code=p.exits.get(0),
                          detail=f"ended, but nrun could not read its state: {exc}")
        self._msgs.put(("finalized", p, ended))

    def _ended(self, p: _Point, states: Dict[int, Dict[str, Any]], tail: str) -> Ended:
        idx = p.spec.index
        node = p.first_failed if p.first_failed is not None else 0
        code = p.exits.get(node)
        where = f"container {p.containers[node].name}" + (f" (node {node})" if len(p.containers) > 1 else "")
        if p.slot.reason:
            return Ended(idx=idx, reason="exited", exit_code=code)  # the queue names the reason
        if code is None:
            return Ended(idx=idx, reason="lost", detail=f"{where} vanished before nrun read its exit code "
                         "(removed outside nrun, or the engine stopped answering)")
        oom = [n for n, st in states.items() if st.get("OOMKilled")]
        mem = self.opts.mem_limit
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
            detail += (f": the command could not run in hydra.launcher.image={self.opts.image} "
                       f"(is hydra.launcher.python={self.opts.python} there?)")
        if tail:
            detail += f"; container output: {tail[-500:]}"
        return Ended(idx=idx, reason="exited", exit_code=code, detail=detail)

    def _abandon(self) -> None:
        """atexit: the launcher is leaving with containers still held: remove them."""
        if self._pid != os.getpid() or not self._live or self._engine is None:
            return
        for slot in list(self._live.values()):
            p = slot.handle
            if p is None:
                continue
            for cid in list(p.ids.values()):
                _quietly(self._engine.remove, cid)
            if p.network:
                _quietly(self._engine.remove_network, p.network)

    def _code(self, spec: JobSpec) -> ds.CodeLayout:
        if spec.artifact:
            return ds.CodeLayout(snapshot_root=str(nrun_home() / "snapshots" / spec.artifact))
        if self._passthrough is None:
            self._passthrough = _passthrough_dirs(self.ctx.host_dirs)
        return ds.CodeLayout(snapshot_root=None, passthrough_dirs=self._passthrough)


def _passthrough_dirs(extra: Sequence[str]) -> Tuple[str, ...]:
    """Passthrough: the launch dir, plus the task's own dirs where they lie elsewhere (mounted
    read-only at the same paths)."""
    cwd = os.getcwd()
    dirs = [cwd]
    for d in extra:
        if not any(d == k or d.startswith(k.rstrip("/") + "/") for k in dirs):
            dirs.append(d)
    return tuple(dirs)


def _engine_usage(states: Dict[int, Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """What the engine still knows of an exited point's containers: the longest wall time and
    whether any was OOM-killed (CPU and memory counters end with the container's cgroup)."""
    from datetime import datetime

    walls = []
    for st in states.values():
        try:
            start, end = (datetime.fromisoformat(str(st[k]).replace("Z", "+00:00")) for k in ("StartedAt", "FinishedAt"))
        except (KeyError, ValueError):
            continue
        if end >= start:
            walls.append((end - start).total_seconds())
    if not walls:
        return None
    return {"wall_s": round(max(walls), 3), "oom_killed": any(bool(st.get("OOMKilled")) for st in states.values()),
            "source": "docker"}


def _quietly(fn: Any, *args: Any) -> Any:
    """Best-effort engine call (cleanup paths): errors must not hide the point's real outcome."""
    try:
        return fn(*args)
    except Exception:
        return None


__all__ = ["DockerExecutor", "GRACE_S"]
