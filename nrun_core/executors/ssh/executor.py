r"""nrun_ssh: a list of SSH hosts as a cluster, with no scheduler.

    python train.py -m hydra/launcher=nrun_ssh hydra.launcher.hosts=[gpu1,gpu2] lr=0.1,0.01
    python train.py -m hydra/launcher=nrun_ssh nrun/launcher=torchrun hydra.launcher.nodes=2 \
        hydra.launcher.gpus_per_node=8

Decisions:
- Hosts are trusted only by key: known_hosts is checked strictly (an unknown or changed key stops
  the sweep before anything runs, naming the host); nothing is ever added to it.
- Before any point starts, every host is reached, its Python checked, and the sweep's code
  shipped (once per host, content-addressed: a later sweep of the same tree sends nothing).
- One-node points fill the hosts' free slots (most free host first); an N-node point takes one
  slot on N distinct hosts, node 0 on the first listed (rendezvous there): `direct` sets
  MASTER_ADDR/MASTER_PORT/WORLD_SIZE/NODE_RANK/RANK/LOCAL_WORLD_SIZE, `torchrun` its PET_* flags.
- A point runs under nrun_host.py's keeper on each host: own session, its orphans re-parented to
  the keeper and ended with it, every process tagged with the point's token; cancel TERMs the
  process group and everything tagged on every host, then KILLs. Ends arrive through one watch
  channel per host (no polling command per point); logs stream back into the local job dir while
  the point runs; at its end the job dir's files (`.hydra/`, outputs, the result) come back and
  the remote copy is removed (``keep_remote=true`` keeps it). Hosts that share the launcher's
  filesystem are detected (a probe file) and nothing is copied either way.
- A host that stops answering mid-point: its points end as lost (retried if ``retries``) after
  ``host_lost_s``, and no new point is sent there.
- ``container.image``: each node runs in `docker run` on its host (host network, the code, job
  dir and runtime mounted at the same paths); cancel also `docker kill`s it, and it is removed.
- Secrets travel only on the helper's stdin over SSH: never on a command line or a disk.
"""

from __future__ import annotations

import atexit
import base64
import os
import posixpath
import queue
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from nrun_core import gpus as gpulib, threads, wrappers
from nrun_core.errors import BackendError, ConfigError, NrunError
from nrun_core.executors.base import Ended, Event, Request, Started
from nrun_core.executors.queue import QueuedExecutor, Slot, drain
from nrun_core.executors.ssh import hosts as hostlib
from nrun_core.executors.ssh.control import SshControl, status_dir
from nrun_core.placement import Placement, secret_values
from nrun_core.spec import JobSpec

LOG_EVERY_S = 1.0
CHECK_EVERY_S = 5.0


@dataclass
class _Node:
    host: str
    status_dir: str
    gpus: List[str] = field(default_factory=list)
    pids: Optional[Dict[str, Any]] = None
    done: bool = False
    code: Optional[int] = None
    lost: str = ""


@dataclass
class _Point:
    slot: Slot
    nodes: List[_Node]
    shared: Dict[str, bool] = field(default_factory=dict)
    first_failed: Optional[int] = None
    started: bool = False
    offsets: Dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def spec(self) -> JobSpec:
        return self.slot.spec

    @property
    def ended(self) -> bool:
        return all(n.done for n in self.nodes)


class SshExecutor(QueuedExecutor):
    name = "ssh"
    sees_launcher_files = False  # only the shipped code and the job dir
    control_class = SshControl

    def __init__(self, options: Any, ctx: Any) -> None:
        super().__init__(options, ctx)
        self._hosts: Optional[List[hostlib.Host]] = None
        self._sites: Dict[str, Any] = {}
        self._slots: Optional[hostlib.Slots] = None
        self._gpus: Dict[str, gpulib.Pool] = {}  # with gpus_per_node: each host's GPUs, a few per node of a point
        self._msgs: "queue.Queue[Tuple[Any, ...]]" = queue.Queue()
        self._pool: Optional[ThreadPoolExecutor] = None
        self._pid: Optional[int] = None
        self._by_dir: Dict[Tuple[str, str], Tuple[_Point, int]] = {}
        self._points: Dict[int, _Point] = {}
        self._recovering: set = set()
        self._shared_dirs: Dict[Tuple[str, str], bool] = {}

    # -- contract ----------------------------------------------------------------------
    def check_options(self) -> None:
        o = self.opts
        if int(o.nodes) < 1:
            raise ConfigError(f"hydra.launcher.nodes={o.nodes}: must be at least 1")
        hosts = self.hosts()
        if int(o.nodes) > len(hosts):
            raise ConfigError(f"hydra.launcher.nodes={o.nodes} but only {len(hosts)} host(s) are listed "
                              f"({', '.join(h.name for h in hosts)}); each node of a point needs its own host")
        for key in ("host_lost_s", "connect_timeout_s"):
            if float(getattr(o, key)) <= 0:
                raise ConfigError(f"hydra.launcher.{key}={getattr(o, key)}: must be positive")
        c = o.container
        if c and c.get("image") is None and any(c.get(k) for k in ("mounts", "options", "shm_size", "gpus")):
            raise ConfigError("hydra.launcher.container options are set but container.image is not; "
                              "set hydra.launcher.container.image=IMAGE (or drop the container options)")
        if not o.max_parallel:
            self.max_parallel = max(1, sum(h.slots for h in hosts) // max(1, int(o.nodes)))

    def choose_mode(self, *, packaged: bool) -> None:
        if not packaged:
            raise ConfigError("nrun_ssh ships the code to the hosts: choose a packager that packs it, "
                              "e.g. nrun/packager=workdir (the default) or nrun/packager=git; "
                              "passthrough would send nothing to run")

    def header(self) -> str:
        hosts = self.hosts()
        return ("hosts: " + ", ".join(f"{h.name} ({h.slots} slot{'s' if h.slots != 1 else ''})" for h in hosts)
                + "; threads per point: the host's CPUs / its slots (unless set in hydra.launcher.env)")

    def hosts(self) -> List[hostlib.Host]:
        if self._hosts is None:
            self._hosts = hostlib.load(self.opts)
            self._slots = hostlib.Slots(self._hosts)
            gpn = int(self.opts.gpus_per_node or 0)
            self._gpus = {h.name: gpulib.Pool([str(i) for i in range(h.gpus)], gpn)
                          for h in self._hosts if gpn and h.gpus} if gpn else {}
        return self._hosts

    def validate(self, specs: Sequence[JobSpec]) -> None:
        """Reach every host, check its Python, ship the code: all before anything starts."""
        if self.opts.dry_run:
            return
        digests = sorted({s.artifact for s in specs if s.artifact})
        errors: Dict[str, str] = {}

        def prepare(h: hostlib.Host) -> None:
            try:
                site = self._site(h.name)
                site.check_python()
                for d in digests:
                    site.code(d)
            except Exception as exc:  # a paramiko error too: named here, not a thread's traceback
                errors[h.name] = str(exc) or type(exc).__name__

        threads = [threading.Thread(target=prepare, args=(h,)) for h in self.hosts()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise BackendError("nrun_ssh cannot use these hosts, so nothing was started:\n" + "\n".join(
                f"  {name}: {why}" for name, why in sorted(errors.items())))

    def record(self) -> Dict[str, Any]:
        """The hosts and known-hosts files this shell's variables named (paths, no secrets), for
        `nrun status` and `nrun cancel` from a shell without them."""
        from nrun_core.executors.ssh import hosts as hostlib

        out = {}
        if not self.opts.hosts and not self.opts.hosts_file and os.environ.get(hostlib.HOSTS_FILE_ENV):
            out["hosts_file"] = os.path.abspath(os.environ[hostlib.HOSTS_FILE_ENV])
        if not self.opts.known_hosts and os.environ.get(hostlib.KNOWN_HOSTS_ENV):
            out["known_hosts"] = os.path.abspath(os.environ[hostlib.KNOWN_HOSTS_ENV])
        return out

    def render(self, specs: Sequence[JobSpec]) -> List[Request]:
        from nrun_core.executors.ssh import site as sitelib
        from nrun_core.shell import join

        hosts = self.hosts()
        lib = sitelib.lib_digest()
        out = []
        for s in specs:
            nodes = hosts[: s.nodes]
            lines = [f"# on {'any free host' if s.nodes == 1 else f'{s.nodes} free hosts'} of: "
                     f"{', '.join(h.name for h in hosts)} (shown: the first); timeout_s: {s.timeout_s}"]
            for k, h in enumerate(nodes):
                root = h.remote_dir or self.opts.remote_dir
                place = self._placement(h, posixpath.join(root, "lib", lib),
                                        posixpath.join(root, "code", s.artifact or "?"))
                job = self._job(s, k, h, place, nodes[0], attempt=1, gpus=[], secrets=False)
                python = h.python or self.opts.python
                lines.append(f"ssh -p {h.port} {(h.user + '@') if h.user else ''}{h.address} "
                             f"{join([python, posixpath.join(root, 'lib', lib, 'nrun_host.py'), 'start'])} <<'JSON'")
                lines.append(_pretty(job))
                lines.append("JSON")
            out.append(Request(title=f"point {s.index}: {s.nodes} host(s)", text="\n".join(lines) + "\n"))
        return out

    # -- QueuedExecutor --------------------------------------------------------------------
    def can_launch(self, spec: JobSpec) -> bool:
        self.hosts()
        assert self._slots is not None
        # A point no host can ever take goes to launch(), which refuses it with the reason.
        return self._slots.fits(spec.nodes) or not self._slots.possible(spec.nodes)

    def launch(self, slot: Slot) -> List[Event]:
        self._ensure_threads()
        spec = slot.spec
        assert self._slots is not None
        if not self._slots.possible(spec.nodes):
            raise NrunError("no host can take it: " + "; ".join(
                f"{n}: {why}" for n, why in self._slots.down.items()))
        names = self._slots.take(spec.nodes)
        if names is None:  # pragma: no cover - can_launch said there was room
            raise NrunError("no free slot")
        nodes = []
        for k, name in enumerate(names):
            gpus = self._take_gpus(name, spec)
            nodes.append(_Node(host=name, status_dir=status_dir(spec, slot.attempt, k), gpus=gpus))
        p = _Point(slot=slot, nodes=nodes)
        slot.handle = p
        self._points[spec.index] = p
        for k, n in enumerate(nodes):
            self._by_dir[(n.host, n.status_dir)] = (p, k)
        assert self._pool is not None
        self._pool.submit(self._launch, p)
        return []

    def signal(self, slot: Slot, kill: bool) -> None:
        p: Optional[_Point] = slot.handle
        if p is None:
            return
        assert self._pool is not None
        for n in p.nodes:
            if not n.done and n.pids is not None:
                self._pool.submit(self._signal_node, p, n, "KILL" if kill else "TERM")

    def wait(self, timeout: float) -> List[Event]:
        return [ev for msg in drain(self._msgs, timeout) for ev in self._handle(msg)]

    # -- hosts -----------------------------------------------------------------------------
    def _site(self, name: str) -> Any:
        from nrun_core.executors.ssh.site import HostSite

        if name not in self._sites:
            host = next(h for h in self.hosts() if h.name == name)
            site = HostSite(host, known_hosts=hostlib.known_hosts(self.opts), python=self.opts.python,
                            remote_dir=self.opts.remote_dir, connect_timeout_s=float(self.opts.connect_timeout_s))
            site.events = self._msgs
            self._sites[name] = site
        return self._sites[name]

    def _take_gpus(self, name: str, spec: JobSpec) -> List[str]:
        pool = self._gpus.get(name)  # a host's slots are its GPUs / gpus_per_node: a slot taken has them free
        return pool.take() if pool is not None and pool.can_take() else []

    def _ensure_threads(self) -> None:
        """Pool and log thread in the process that runs the points (a detached supervisor is a
        fork: no thread crosses it)."""
        if self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self._pool = ThreadPoolExecutor(max_workers=max(4, min(16, 2 * self.max_parallel)),
                                        thread_name_prefix="nrun-ssh")
        threading.Thread(target=self._tend, daemon=True, name="nrun-ssh-tend").start()
        atexit.register(self._abandon)

    # -- starting (pool threads) -------------------------------------------------------------
    def _placement(self, host: hostlib.Host, lib: str, code: str) -> Placement:
        site = self._sites.get(host.name)
        cores = site.cores if site is not None else None  # the host's CPUs shared by its slots
        return Placement(python=host.python or self.opts.python, runtime=posixpath.join(lib, "nrun_point.py"),
                         code_dir=code, threads=threads.budget(cores, host.slots) if cores else None)

    def _job(self, spec: JobSpec, k: int, host: hostlib.Host, place: Placement, head: hostlib.Host,
             attempt: int, gpus: List[str], secrets: bool) -> Dict[str, Any]:
        """What nrun_host.py start receives on stdin for node k of the point."""
        token = spec.token(attempt)
        extra = self._rank_env(spec, k, host, head)
        if gpus:
            extra["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
        env = place.env(spec, token=token, extra=extra)
        if secrets:
            env.update(secret_values(spec.secret_env))
        else:
            env.update({n: "<from the launching shell>" for n in spec.secret_env})
        argv = place.argv(spec)
        job: Dict[str, Any] = {"dir": status_dir(spec, attempt, k), "cwd": place.workdir(spec), "token": token,
                               "stdout": _node_log(spec, k, "stdout"), "stderr": _node_log(spec, k, "stderr")}
        image = (self.opts.container or {}).get("image")
        if image:
            name = f"nrun-{spec.sweep_id}-{spec.index}-{k}-a{attempt}"
            argv = self._docker_argv(spec, place, env, name, host)
            job["container"] = {"docker": self.opts.container.get("docker") or "docker", "name": name}
        elif self.opts.setup:
            argv = ["bash", "-c", "\n".join(str(x) for x in self.opts.setup) + '\nexec "$@"', "nrun-setup", *argv]
        job["argv"], job["env"] = argv, env
        return job

    def _rank_env(self, spec: JobSpec, k: int, host: hostlib.Host, head: hostlib.Host) -> Dict[str, str]:
        if spec.nodes == 1:
            return {}
        lay = wrappers.layout(self.opts.launcher, nodes=spec.nodes, gpus_per_node=spec.gpus_per_node)
        port = lay.rdzv_port + spec.index % 1000
        if spec.launcher in wrappers.ELASTIC:  # torchrun, ft: the elastic agent reads PET_*
            env = {"PET_NODE_RANK": str(k), "PET_RDZV_ENDPOINT": f"{head.address}:{port}",
                   "PET_RDZV_CONF": f"is_host={'true' if k == 0 else 'false'}"}
            if (self.opts.container or {}).get("image"):
                # Containers on the host network can share a hostname and (in their own PID
                # namespaces) the agent's pid: the rendezvous would take two nodes for one and
                # wait at the exit barrier. The host's address tells them apart.
                env["PET_LOCAL_ADDR"] = host.address
            return env
        return {"MASTER_ADDR": head.address, "MASTER_PORT": str(port), "WORLD_SIZE": str(spec.nodes),
                "RANK": str(k), "NODE_RANK": str(k), "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1"}

    def _docker_argv(self, spec: JobSpec, place: Placement, env: Dict[str, str], name: str,
                     host: hostlib.Host) -> List[str]:
        c = self.opts.container
        argv = [c.get("docker") or "docker", "run", "--rm", "--init", "--name", name, "--network", "host",
                "--label", f"nrun.sweep={spec.sweep_id}", "--label", f"nrun.point={spec.index}"]
        for path, mode in ((place.code_dir, "ro"), (posixpath.dirname(place.runtime), "ro"), (spec.job_dir, "rw")):
            argv += ["-v", f"{host.engine_path(path)}:{path}:{mode}"]
        for m in c.get("mounts") or []:
            src, sep, rest = str(m).partition(":")
            argv += ["-v", f"{host.engine_path(src) if src.startswith('/') else src}{sep}{rest}"]
        gpus = c.get("gpus")
        if gpus is None and spec.gpus_per_node:
            gpus = spec.gpus_per_node
        if gpus:
            argv += ["--gpus", str(gpus)]
        if c.get("shm_size"):
            argv += ["--shm-size", str(c["shm_size"])]
        if c.get("ipc"):
            argv += ["--ipc", str(c["ipc"])]
        argv += [str(w) for w in c.get("options") or []]
        for key in sorted(env):  # values come from the docker CLI's own environment: never on argv
            argv += ["-e", key]
        argv += ["-w", place.workdir(spec), str(c["image"])]
        place_in = Placement(python=str(c.get("python") or "python3"), runtime=place.runtime, code_dir=place.code_dir)
        return argv + place_in.argv(spec)

    def _launch(self, p: _Point) -> None:
        spec, attempt = p.spec, p.slot.attempt
        started: List[_Node] = []
        try:
            sites = [self._site(n.host) for n in p.nodes]
            head = sites[0].host
            jobs = []
            for k, (n, site) in enumerate(zip(p.nodes, sites)):  # every host ready before any starts
                place = self._placement(site.host, site.lib(), site.code(spec.artifact))
                p.shared[n.host] = self._shared(site, spec)
                job = self._job(spec, k, site.host, place, head, attempt, n.gpus, secrets=True)
                if not p.shared[n.host]:  # the payload rides along with the start request
                    with open(spec.payload_file, "rb") as f:
                        job["files"] = {spec.payload_file: base64.b64encode(f.read()).decode()}
                jobs.append(job)
            for n, site, job in zip(p.nodes, sites, jobs):
                pids = site.call("start", job=job)  # its end comes back as a host_end event
                if "error" in pids:
                    raise BackendError(f"on host {site.host.where}: {pids['error']}")
                n.pids = pids
                started.append(n)
        except Exception as exc:
            for n in started:
                _quietly(self._signal_node, p, n, "KILL")
            self._msgs.put(("failed", p, str(exc)))
            return
        self._msgs.put(("started", p))

    def _shared(self, site: Any, spec: JobSpec) -> bool:
        """Does the host see this job dir? A probe file written here, looked for there; asked once
        per host and sweep dir."""
        key = (site.name, os.path.dirname(spec.job_dir.rstrip("/")))
        if key not in self._shared_dirs:
            probe = os.path.join(spec.nrun_dir, f".probe-{uuid.uuid4().hex[:12]}")
            with open(probe, "w"):
                pass
            try:
                self._shared_dirs[key] = site.transport.stat(probe) is not None
            except OSError as exc:
                raise BackendError(f"cannot tell whether host {site.host.where} shares {spec.job_dir}: {exc}")
            finally:
                os.unlink(probe)
        return self._shared_dirs[key]

    def _signal_node(self, p: _Point, n: _Node, sig: str) -> None:
        job = {"dir": n.status_dir, "token": p.spec.token(p.slot.attempt), "sig": sig}
        image = (self.opts.container or {}).get("image")
        if image:
            k = p.nodes.index(n)
            job["container"] = {"docker": self.opts.container.get("docker") or "docker",
                                "name": f"nrun-{p.spec.sweep_id}-{p.spec.index}-{k}-a{p.slot.attempt}"}
        try:
            self._site(n.host).call("signal", timeout=30, job=job)
        except NrunError:
            pass  # an unreachable host: its channel's end reports it lost

    # -- events (the runner's thread) --------------------------------------------------------
    def _handle(self, msg: Tuple[Any, ...]) -> List[Event]:
        kind = msg[0]
        if kind == "started":
            p = msg[1]
            p.started = True
            return [Started(idx=p.spec.index, backend_id=f"{','.join(n.host for n in p.nodes)}/a{p.slot.attempt}")]
        if kind == "failed":
            p = msg[1]
            self._release(p)
            return [Started(idx=p.spec.index, backend_id=f"{','.join(n.host for n in p.nodes)}/a{p.slot.attempt}"),
                    Ended(idx=p.spec.index, reason="exited", detail=f"could not start: {msg[2]}")]
        if kind == "host_end":
            host, st = msg[1], msg[2]
            found = self._by_dir.get((host, st.get("dir")))
            if found is None:
                return []
            p, k = found
            if st["state"] == "ended":
                self._node_done(p, k, code=st.get("code"))
            else:
                self._node_done(p, k, code=None, lost=f"its keeper on host {host} vanished without an exit "
                                                          "status (host restarted, or killed from outside)")
            return []
        if kind == "watch_closed":
            host = msg[1]
            if any(not n.done and n.host == host for p in self._points.values() for n in p.nodes) \
                    and host not in self._recovering:
                self._recovering.add(host)
                assert self._pool is not None
                self._pool.submit(self._recover, host)
            return []
        if kind == "recovered":
            self._recovering.discard(msg[1])
            return []
        if kind == "host_lost":
            host, why = msg[1], msg[2]
            self._recovering.discard(host)
            assert self._slots is not None
            self._slots.down[host] = why
            for p in list(self._points.values()):
                for k, n in enumerate(p.nodes):
                    if n.host == host and not n.done:
                        self._node_done(p, k, code=None, lost=f"host {host} stopped answering: {why}")
            return []
        if kind == "finalized":
            p, ended = msg[1], msg[2]
            self._release(p)
            return [ended]
        raise AssertionError(kind)  # pragma: no cover

    def _node_done(self, p: _Point, k: int, code: Optional[int], lost: str = "") -> None:
        n = p.nodes[k]
        if n.done:
            return
        n.done, n.code, n.lost = True, code, lost
        self._by_dir.pop((n.host, n.status_dir), None)
        if (code != 0 or lost) and p.first_failed is None:
            p.first_failed = k
            if not p.ended and p.slot.kill_at is None:  # one node failed: its peers cannot finish
                p.slot.kill_at = time.monotonic() + self.grace_s
                self.signal(p.slot, kill=False)
        if p.ended:
            assert self._pool is not None
            self._pool.submit(self._finalize, p)

    def _release(self, p: _Point) -> None:
        if self._points.get(p.spec.index) is p:
            del self._points[p.spec.index]
        assert self._slots is not None
        self._slots.give([n.host for n in p.nodes])
        for n in p.nodes:
            if n.gpus:
                self._gpus[n.host].give(n.gpus)
            self._by_dir.pop((n.host, n.status_dir), None)

    def _recover(self, host: str) -> None:
        """Pool thread: the watch channel closed. Reconnect and resume watching, or give up on
        the host after host_lost_s."""
        site = self._site(host)
        deadline = time.monotonic() + float(self.opts.host_lost_s)
        why = "the connection closed"
        while time.monotonic() < deadline:
            try:
                dirs = [d for (h, d) in list(self._by_dir) if h == host]
                for d in dirs:
                    site.call("watch", timeout=30, dir=d)
                self._msgs.put(("recovered", host))
                return
            except Exception as exc:
                why = str(exc)
                site.transport.close()
                time.sleep(1.0)
        self._msgs.put(("host_lost", host, why))

    # -- ending (pool threads) ---------------------------------------------------------------
    def _finalize(self, p: _Point) -> None:
        spec = p.spec
        try:
            with p.lock:
                for k, n in enumerate(p.nodes):
                    if p.shared.get(n.host, True) or n.lost:
                        continue
                    site = self._site(n.host)
                    for stream in ("stdout", "stderr"):
                        log = _node_log(spec, k, stream)
                        site.append_new(log, log, p.offsets)
                    if k == 0:
                        skip = [os.path.relpath(_node_log(spec, j, s), spec.job_dir)
                                for j in range(len(p.nodes)) for s in ("stdout", "stderr")]
                        skip.append(os.path.relpath(spec.nrun_dir, spec.job_dir))
                        site.fetch_tree(spec.job_dir, spec.job_dir, skip=skip)
                        site.transport.get(spec.result_file, spec.result_file)
                    if not self.opts.keep_remote:
                        site.remove_tree(spec.job_dir)
            ended = self._ended(p)
        except Exception as exc:  # never lose the point's end
            ended = Ended(idx=spec.index, reason="exited", exit_code=p.nodes[0].code,
                          detail=f"ended, but nrun could not bring its files back: {exc}")
        self._msgs.put(("finalized", p, ended))

    def _ended(self, p: _Point) -> Ended:
        idx = p.spec.index
        k = p.first_failed if p.first_failed is not None else 0
        n = p.nodes[k]
        where = f"host {n.host}" + (f" (node {k})" if len(p.nodes) > 1 else "")
        if p.slot.reason:
            return Ended(idx=idx, reason="exited", exit_code=n.code)  # the queue names the reason
        if n.lost:
            return Ended(idx=idx, reason="lost", detail=f"on {where}: {n.lost}")
        from nrun_core.procs import describe_exit

        detail = f"{where}: {describe_exit(n.code)}" if n.code else ""
        if n.code in (126, 127):
            detail += " (is hydra.launcher.python right for that host?)"
        return Ended(idx=idx, reason="exited", exit_code=n.code, detail=detail)

    def _tend(self) -> None:
        """Thread: every second, new log bytes of running points into their local job dirs;
        every few seconds, each host's status of its running points (the watch channel reports
        ends at once; this is the guarantee that none is missed)."""
        last_check = time.monotonic()
        while True:
            time.sleep(LOG_EVERY_S)
            live = [p for p in list(self._points.values()) if p.started and not p.ended]
            for p in live:
                if not p.lock.acquire(blocking=False):
                    continue
                try:
                    for k, n in enumerate(p.nodes):
                        if not n.done and not p.shared.get(n.host, True):
                            site = self._site(n.host)
                            for stream in ("stdout", "stderr"):
                                log = _node_log(p.spec, k, stream)
                                site.append_new(log, log, p.offsets)
                except Exception:
                    pass  # a host that stopped answering is the watch's to report
                finally:
                    p.lock.release()
            if time.monotonic() - last_check >= CHECK_EVERY_S:
                last_check = time.monotonic()
                by_host: Dict[str, List[str]] = {}
                for p in live:
                    for n in p.nodes:
                        if not n.done and n.pids is not None:
                            by_host.setdefault(n.host, []).append(n.status_dir)
                for host, dirs in by_host.items():
                    try:
                        for st in self._site(host).call("status", timeout=30, dirs=dirs)["states"]:
                            if st["state"] in ("ended", "lost", "unknown"):  # unknown: its record is gone
                                self._msgs.put(("host_end", host, st))
                    except Exception:
                        continue

    def _abandon(self) -> None:
        """atexit: the launcher leaves with points running on hosts: stop them."""
        if self._pid != os.getpid():
            return
        for p in list(self._points.values()):
            for n in p.nodes:
                if not n.done and n.pids is not None:
                    _quietly(self._signal_node, p, n, "KILL")
        for site in self._sites.values():
            _quietly(site.close)


def _node_log(spec: JobSpec, node: int, stream: str) -> str:
    """Node 0 writes the point's stdout.log/stderr.log (what `nrun logs` shows); node k its own."""
    if node == 0:
        return spec.stdout if stream == "stdout" else spec.stderr
    return os.path.join(spec.job_dir, f"{stream}.node{node}.log")


def _pretty(job: Dict[str, Any]) -> str:
    import json

    return json.dumps(job, indent=2, sort_keys=True)


def _quietly(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception:
        return None
