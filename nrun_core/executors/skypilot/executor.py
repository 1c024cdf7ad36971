r"""nrun_skypilot: sweep points on any cloud or cluster SkyPilot reaches.

    python train.py -m hydra/launcher=nrun_skypilot hydra.launcher.infra=aws \
        hydra.launcher.gpus=A100 hydra.launcher.gpus_per_node=8 hydra.launcher.use_spot=true lr=0.1,0.01

Decisions:
- ``import sky`` (2+ CPU-s) happens only here, in the methods that talk to SkyPilot.
- One staging dir per sweep (NRUN_HOME/skypilot/<sweep>: the code archive, nrun's stdlib-only
  helpers, one small file per point) is every task's workdir; SkyPilot syncs it (rsync: a later
  point sends nothing new). Each point's ``run`` is ``python lib/nrun_sky.py points/IDX.json``.
- clusters=shared (default): the first point launches the cluster (its job is that point), the
  others wait for it and are `sky exec` jobs there, queued by SkyPilot; per_point: each point
  launches a cluster of its own (down=True unless teardown=keep); managed: sky.jobs.launch.
- A point's end, exit code, job dir files and logs come back through SkyPilot's job log
  (sky.tail_logs): the point's output streams into its local stdout.log while it runs; its job
  dir arrives at the end as a base64 tar (see remote.py), unpacked with tarfile's data filter.
- Cancel and timeout: sky.cancel of the point's job (or sky.api_cancel of a launch still in
  flight); from another shell through SkypilotControl (backend id "<cluster>/<job id>").
- Teardown when the sweep is over (not while a retry waits): auto downs the clusters nrun created
  and keeps a named one that was already there; down / stop / keep as asked. per_point: each
  point's cluster as soon as that point ends (and SkyPilot's own autodown if the launcher dies).
- Secrets (secret_env) go as the task's SkyPilot ``secrets``: never in our store or the dry run.
"""

from __future__ import annotations

import atexit
import io
import os
import queue
import re
import shlex
import shutil
import subprocess
import tarfile
import threading
import base64
from concurrent.futures import Future, ThreadPoolExecutor, wait as wait_all
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from nrun_core.errors import BackendError, ConfigError
from nrun_core.executors.base import Ended, Event, Request, Started
from nrun_core.executors.queue import QueuedExecutor, Slot, drain
from nrun_core.executors.skypilot import task as tasklib
from nrun_core.executors.skypilot.control import SkypilotControl, backend_id
from nrun_core.placement import Placement, secret_values
from nrun_core.spec import JobSpec

DEFAULT_PARALLEL = 16


@dataclass
class _Point:
    slot: Slot
    cluster: str
    job_id: Optional[int] = None
    request: Optional[str] = None       # a launch or exec request still in flight
    cancel: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


def _sky() -> Any:
    """``import sky``, without its import-time INFO lines (alembic plugins) in the app's log."""
    import logging

    for name in ("alembic", "alembic.runtime.plugins"):
        logging.getLogger(name).setLevel(logging.WARNING)
    import sky

    return sky


class SkypilotExecutor(QueuedExecutor):
    name = "skypilot"
    sees_launcher_files = False  # only the shipped code; the job dir comes back through the log
    control_class = SkypilotControl

    def __init__(self, options: Any, ctx: Any) -> None:
        super().__init__(options, ctx)
        self.max_parallel = int(options.max_parallel or DEFAULT_PARALLEL)
        self._msgs: "queue.Queue[Tuple[Any, ...]]" = queue.Queue()
        self._pool: Optional[ThreadPoolExecutor] = None
        self._pid: Optional[int] = None
        self._points: Dict[int, _Point] = {}
        self._cluster_lock = threading.Lock()
        self._cluster_up: Dict[str, bool] = {}      # cluster -> existed before this sweep
        self._created: List[str] = []
        self._staged: Optional[str] = None
        self._runs: List[Future] = []
        self._torn_down = False

    # -- contract ------------------------------------------------------------------------------
    def check_options(self) -> None:
        tasklib.check(self.opts)

    def choose_mode(self, *, packaged: bool) -> None:
        if not packaged:
            raise ConfigError("nrun_skypilot ships the code as the task's workdir: choose a packager that packs "
                              "it, e.g. nrun/packager=workdir (the default) or nrun/packager=git")

    def header(self) -> str:
        where = tasklib.infra(self.opts) or "SkyPilot's choice"
        how = "managed jobs" if self.opts.managed else (
            "one cluster per point" if self.opts.clusters == "per_point" else f"cluster {self.cluster_name()}")
        return f"skypilot: {where}, {how}, teardown={self.opts.teardown}"

    def cluster_name(self, spec: Optional[JobSpec] = None) -> str:
        base = str(self.opts.cluster_name or f"nrun-{self.ctx.sweep_id}")
        if self.opts.clusters == "per_point" and spec is not None:
            return f"{base}-{spec.index}"
        return base

    def validate(self, specs: Sequence[JobSpec]) -> None:
        for s in specs:
            tasklib.resources(self.opts, s)  # GPU count without a type, ...
            if s is specs[0] and not self.opts.dry_run:  # SkyPilot's own checks, before anything is sent
                tasklib.to_sky(self._config(s, workdir=self._stage_dir(), attempt=1, first=True))
            missing = [n for n in s.secret_env if n not in os.environ]
            if missing:
                raise ConfigError(f"hydra.launcher.secret_env names {', '.join(missing)}, not set in this shell")

    def record(self) -> Dict[str, Any]:
        """The API server the points go to: `nrun status` from another shell asks that one."""
        from nrun_core.executors.skypilot.control import server_to_record

        return server_to_record()

    def render(self, specs: Sequence[JobSpec]) -> List[Request]:
        out = []
        for i, s in enumerate(specs):
            cfg = self._config(s, workdir=self._stage_dir(), attempt=1, first=i == 0)
            how = self._how(s, first=i == 0)
            runs = shlex.join(Placement(python=tasklib.python(self.opts),
                                        runtime=f"{tasklib.lib_dir()}/nrun_point.py",
                                        code_dir="<code>", job_dir=lambda d: "<job dir>").argv(s))
            out.append(Request(title=f"point {s.index}: {how}",
                               text=f"# nrun_sky.py runs, in <remote_dir>/code/<artifact>/{s.workdir}: {runs}\n"
                                    + tasklib.to_yaml(cfg)))
        return out

    def _how(self, s: JobSpec, first: bool) -> str:
        if self.opts.managed:
            return "sky.jobs.launch (managed job)"
        o = self.opts
        args = f"retry_until_up={bool(o.retry_until_up)}, idle_minutes_to_autostop={o.idle_minutes_to_autostop}"
        if o.clusters == "per_point":
            return f"sky.launch(cluster_name={self.cluster_name(s)!r}, {args}, down={self._launch_down()})"
        if first:
            return (f"sky.launch(cluster_name={self.cluster_name()!r}, {args}, down={self._launch_down()}), "
                    "or sky.exec if that cluster is up")
        return f"sky.exec(cluster_name={self.cluster_name()!r})"

    def _config(self, s: JobSpec, *, workdir: str, attempt: int, first: bool) -> Dict[str, Any]:
        place = Placement(python=tasklib.python(self.opts), runtime="", code_dir="")
        env = place.env(s, token=s.token(attempt))
        for k in ("NRUN_CODE_DIR", "NRUN_JOB_DIR", "NRUN_RESULT_FILE"):  # set on the node by nrun_sky.py
            env.pop(k, None)
        setup = first or self.opts.clusters == "per_point" or self.opts.managed
        return tasklib.task_config(self.opts, s, workdir=workdir, envs=env, secret_names=list(s.secret_env),
                                   setup=setup)

    # -- staging -------------------------------------------------------------------------------
    def _stage_dir(self) -> str:
        from nrun_core.paths import nrun_home

        return str(nrun_home() / "skypilot" / self.ctx.sweep_id)

    def _point_file(self, spec: JobSpec, attempt: int) -> Dict[str, Any]:
        import json

        from nrun_core.packaging import store

        with open(spec.payload_file) as f:
            payload = json.load(f)
        return {"sweep_id": spec.sweep_id, "index": spec.index, "attempt": attempt, "payload": payload,
                "artifact": spec.artifact, "archive": f"code/{store.archive_path(spec.artifact).name}",
                "command": list(spec.command), "workdir": spec.workdir, "python": tasklib.python(self.opts),
                "job_name": os.path.basename(spec.job_dir.rstrip("/")), "remote_dir": self.opts.remote_dir,
                "max_files_mb": float(self.opts.max_files_mb)}

    def _stage(self, spec: JobSpec, attempt: int) -> str:
        """The sweep's staging dir with this point's file in it (code and helpers once)."""
        import importlib
        import json

        from nrun_core.packaging import store

        root = self._stage_dir()
        with self._cluster_lock:
            if self._staged is None:
                lib = os.path.join(root, tasklib.lib_dir())
                os.makedirs(lib, exist_ok=True)
                os.makedirs(os.path.join(root, "code"), exist_ok=True)
                os.makedirs(os.path.join(root, "points", spec.sweep_id), exist_ok=True)
                for name, mod in tasklib.LIB.items():
                    shutil.copyfile(importlib.import_module(mod).__file__, os.path.join(lib, name))
                self._staged = root
            archive = store.archive_path(spec.artifact)
            dest = os.path.join(root, "code", archive.name)
            if not os.path.exists(dest):
                try:
                    os.link(archive, dest)
                except OSError:
                    shutil.copyfile(archive, dest)
        # Named by sweep: a cluster's ~/sky_workdir keeps what every sweep synced to it (no --delete).
        tmp = os.path.join(root, "points", spec.sweep_id, f".{spec.index}.json.tmp")
        with open(tmp, "w") as f:
            json.dump(self._point_file(spec, attempt), f)
        os.replace(tmp, os.path.join(root, tasklib.point_path(spec)))
        return root

    # -- QueuedExecutor ------------------------------------------------------------------------
    def launch(self, slot: Slot) -> List[Event]:
        self._ensure_threads()
        p = _Point(slot=slot, cluster=self.cluster_name(slot.spec))
        slot.handle = p
        self._points[slot.spec.index] = p
        assert self._pool is not None
        self._runs.append(self._pool.submit(self._run, p))
        return []

    def abort_start(self, slot: Slot) -> None:
        """Ctrl-C or cancel during a launch (minutes, or forever with retry_until_up): cancel
        SkyPilot's request; the launch's end reports the point cancelled."""
        self.signal(slot, kill=False)

    def signal(self, slot: Slot, kill: bool) -> None:
        p: Optional[_Point] = slot.handle
        if p is None or (p.cancel and not kill):
            return
        p.cancel = True
        assert self._pool is not None
        self._pool.submit(self._cancel, p)

    def wait(self, timeout: float) -> List[Event]:
        out: List[Event] = []
        for msg in drain(self._msgs, timeout):
            kind, p = msg[0], msg[1]
            if kind == "started":
                out.append(Started(idx=p.slot.spec.index, backend_id=backend_id(p.cluster, p.job_id,
                                                                                 self.opts.managed)))
            else:
                self._points.pop(p.slot.spec.index, None)
                out.append(msg[2])
        return out

    def finish(self) -> None:
        if self._torn_down or self._pool is None:
            return
        self._torn_down = True
        wait_all(self._runs)  # per_point: the points' clusters are being taken down
        self._teardown()
        if self._staged:  # synced to the clusters already; hard links to the artifact would keep it on disk
            shutil.rmtree(self._staged, ignore_errors=True)

    # -- SkyPilot (pool threads) ---------------------------------------------------------------
    def _ensure_threads(self) -> None:
        if self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self._pool = ThreadPoolExecutor(max_workers=max(4, min(64, 2 * self.max_parallel + 2)),
                                        thread_name_prefix="nrun-sky")
        atexit.register(self._abandon)

    def _run(self, p: _Point) -> None:
        spec, attempt = p.slot.spec, p.slot.attempt
        try:
            sky = _sky()
            workdir = self._stage(spec, attempt)
            secrets = secret_values(list(spec.secret_env))
            if self.opts.managed:
                cfg = self._config(spec, workdir=workdir, attempt=attempt, first=True)
                p.request = sky.jobs.launch(tasklib.to_sky(cfg, secrets), name=cfg["name"])
                job_ids, _ = sky.get(p.request)
                p.job_id = int(job_ids[0] if isinstance(job_ids, list) else job_ids)
            else:
                launch = self._needs_launch(p)
                cfg = self._config(spec, workdir=workdir, attempt=attempt, first=launch)
                task = tasklib.to_sky(cfg, secrets)
                if launch:
                    self._prepare(p.cluster)
                    p.request = sky.launch(task, cluster_name=p.cluster, retry_until_up=bool(self.opts.retry_until_up),
                                           idle_minutes_to_autostop=self.opts.idle_minutes_to_autostop,
                                           down=self._launch_down())
                else:
                    p.request = sky.exec(task, cluster_name=p.cluster)
                job_id, _ = sky.get(p.request)
                if launch and self.opts.clusters == "shared":
                    self._cluster_ready(p.cluster, ok=job_id is not None)
                if job_id is None:
                    raise BackendError("SkyPilot returned no job id")
                p.job_id = int(job_id)
            p.request = None
        except BaseException as exc:  # noqa: BLE001 - every failure must end the point
            if self.opts.clusters == "shared" and not self.opts.managed:
                self._cluster_ready(p.cluster, ok=False, why=str(exc))
            elif self._ends_per_point():
                self._end_clusters([p.cluster])  # a launch that failed or was cancelled half way
            detail = "cancelled" if p.cancel else f"could not start on SkyPilot: {_why(exc)}"
            self._msgs.put(("started", p))
            self._msgs.put(("ended", p, Ended(idx=spec.index, reason="exited", detail=detail)))
            return
        self._msgs.put(("started", p))
        if p.cancel:
            self._cancel(p)
        try:
            ended = self._follow(p)
        except Exception as exc:  # noqa: BLE001 - a point must always end, or the sweep waits forever
            ended = Ended(idx=spec.index, reason="lost", detail=f"could not follow {p.cluster} job {p.job_id}: {_why(exc)}")
        self._msgs.put(("ended", p, ended))
        if self._ends_per_point():
            self._end_clusters([p.cluster])

    def _launch_down(self) -> bool:
        """sky.launch's ``down``: SkyPilot's own autodown, asked for (autodown) or, per point, as
        the safety net should the launcher die before it downs the point's cluster itself."""
        o = self.opts
        return bool(o.autodown) or (o.clusters == "per_point" and o.teardown in ("auto", "down"))

    def _ends_per_point(self) -> bool:
        """Each point's cluster is stopped or downed when that point ends (not at the sweep's end)."""
        return self.opts.clusters == "per_point" and not self.opts.managed and self.opts.teardown != "keep"

    def _needs_launch(self, p: _Point) -> bool:
        """Shared cluster: the first point launches it (unless it is already up); the others wait."""
        if self.opts.clusters == "per_point":
            return True
        with self._cluster_lock:
            state = self._cluster_up.get(p.cluster)
            if state is None:
                self._cluster_up[p.cluster] = "launching"  # type: ignore[assignment]
                self._ready = threading.Event()
                self._ready_error = ""
                up = self._is_up(p.cluster)
                if up:
                    self._cluster_up[p.cluster] = True
                    self._ready.set()
                    return False
                return True
        self._ready.wait()
        if self._ready_error:
            raise BackendError(f"cluster {p.cluster} did not come up: {self._ready_error}")
        return False

    def _cluster_ready(self, cluster: str, ok: bool, why: str = "") -> None:
        with self._cluster_lock:
            if self._cluster_up.get(cluster) != "launching":
                return
            self._cluster_up[cluster] = ok
            self._created.append(cluster)  # even a failed or cancelled launch may have left a half-made cluster
            if not ok:
                self._ready_error = why or "the launch failed"
            self._ready.set()

    def _is_up(self, cluster: str) -> bool:
        import sky

        records = sky.get(sky.status(cluster_names=[cluster]))
        return any(str(getattr(r, "status", None) or r.get("status")).endswith("UP") for r in records)

    def _prepare(self, cluster: str) -> None:
        cmd = self.opts.prepare_cluster or os.environ.get("NRUN_SKYPILOT_PREPARE")
        if not cmd:
            return
        argv = [w.replace("{cluster}", cluster) for w in shlex.split(cmd)]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        if out.returncode != 0:
            raise BackendError(f"hydra.launcher.prepare_cluster ({shlex.join(argv)}) failed with exit "
                               f"{out.returncode}: {(out.stderr or out.stdout).strip()[-1000:]}")

    def _follow(self, p: _Point) -> Ended:
        """Stream the job's log into the point's stdout.log until it ends; bring its files back."""
        import sky

        spec = p.slot.spec
        sink = _LogSink(spec.stdout, spec.stderr, nodes=spec.nodes)
        try:
            if self.opts.managed:
                code = sky.jobs.tail_logs(job_id=p.job_id, follow=True, output_stream=sink)
            else:
                code = sky.tail_logs(p.cluster, p.job_id, follow=True, output_stream=sink)
        except Exception as exc:  # noqa: BLE001
            sink.close()
            return Ended(idx=spec.index, reason="lost", detail=f"lost the log of {p.cluster} job {p.job_id}: {_why(exc)}")
        sink.close()
        if sink.garbled:
            return Ended(idx=spec.index, reason="exited", exit_code=sink.exit_code or 1,
                         detail=f"ended, but {sink.garbled}; its files stay on the node")
        if sink.files is not None:
            try:
                if spec.nodes > 1:  # every node's lines, each marked with its node; stdout.log is the reporting node's
                    os.replace(spec.stdout, os.path.join(spec.job_dir, "nodes.log"))
                    if os.path.exists(spec.stderr):
                        os.replace(spec.stderr, os.path.join(spec.job_dir, "nodes.stderr.log"))
                _unpack(sink.files, spec.job_dir)
            except Exception as exc:  # noqa: BLE001
                return Ended(idx=spec.index, reason="exited", exit_code=sink.exit_code,
                             detail=f"ended, but its files could not be unpacked: {exc}")
        exit_code = sink.exit_code if sink.exit_code is not None else (code if isinstance(code, int) else None)
        if p.cancel:
            return Ended(idx=spec.index, reason="cancelled", exit_code=exit_code)
        if sink.exit_code is None and not exit_code:
            exit_code = 1  # a node without an end marker: it died before the point could report
        from nrun_core.procs import describe_exit

        detail = f"{p.cluster} job {p.job_id}: {describe_exit(exit_code)}" if exit_code else ""
        return Ended(idx=spec.index, reason="exited", exit_code=exit_code, detail=detail)

    def _cancel(self, p: _Point) -> None:
        import sky

        try:
            if p.request is not None and p.job_id is None:
                sky.api_cancel(p.request, silent=True)
            if p.job_id is not None:
                if self.opts.managed:
                    sky.get(sky.jobs.cancel(job_ids=[p.job_id]))
                else:
                    sky.get(sky.cancel(p.cluster, job_ids=[p.job_id]))
        except Exception:  # noqa: BLE001 - the tail reports the end either way
            pass

    def _teardown(self) -> None:
        """After the sweep: down/stop the clusters the policy says (pool threads are idle now)."""
        how = self.opts.teardown
        if self.opts.managed or how == "keep" or self.opts.clusters == "per_point":  # per_point: see _ends_per_point
            return
        if how == "auto":
            self._end_clusters(list(self._created) if self.opts.cluster_name is None else [])
        else:
            self._end_clusters([self.cluster_name()])

    def _end_clusters(self, clusters: List[str]) -> None:
        """Down (or stop, as teardown says) these clusters; a failure is named, not raised."""
        if not clusters:
            return
        import sky

        how = "stop" if self.opts.teardown == "stop" else "down"
        for c in clusters:
            try:
                sky.get(sky.stop(c) if how == "stop" else sky.down(c))
            except Exception as exc:  # noqa: BLE001
                if "does not exist" in str(exc):  # SkyPilot's own autodown was first
                    continue
                import sys

                print(f"nrun: could not {how} SkyPilot cluster {c}: {_why(exc)}; run `sky {how} {c}`", file=sys.stderr)

    def _abandon(self) -> None:
        """atexit: the launcher leaves with jobs running: cancel them."""
        if self._pid != os.getpid():
            return
        for p in list(self._points.values()):
            if p.job_id is not None or p.request is not None:
                p.cancel = True
                self._cancel(p)


_PREFIX = re.compile(r"^(\x1b\[[0-9;]*m)?\(([^()]*)pid=\d+[^()]*\)(\x1b\[0m)? ?")
# SkyPilot's coloured prefix inside a line: another node's output cut into this one (see _LogSink._line)
_CUT = re.compile(r"\x1b\[[0-9;]*m\(([^()]*)pid=\d+[^()]*\)\x1b\[0m ?")
_RANK = re.compile(r"\brank=(\d+)")


class _LogSink(io.TextIOBase):
    """sky.tail_logs' output stream: the point's lines into its stdout.log and stderr.log (the node
    marks stderr's; each line marked with its node when there are several; SkyPilot's own lines go
    with stdout), as they come, so the live view shows each where it belongs; the nodes' end
    markers kept aside: their exit codes, and the files of the node that holds the result (else
    node 0's), which replace these logs at the end."""

    def __init__(self, path: str, err_path: str, nodes: int = 1) -> None:
        from nrun_core.executors.skypilot.remote import BEGIN, DATA, END, ERR

        self._begin, self._data, self._end, self._err_mark = BEGIN, DATA, END, ERR
        self._nodes = nodes
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self._f = open(path, "a")
        self._err_path = err_path
        self._err: Optional[io.TextIOBase] = None  # opened at stderr's first line
        self._buf = ""
        self._parts: Dict[int, List[str]] = {}
        self._result: Dict[int, bool] = {}
        self._codes: Dict[int, int] = {}
        self._pending: Dict[Optional[int], str] = {}  # node -> the start of its line another node cut into
        self.files: Optional[bytes] = None
        self.garbled = ""  # why the files that came back could not be read
        self.exit_code: Optional[int] = None  # None: some node never reported its end

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._buf += text
        *lines, self._buf = self._buf.split("\n")
        for line in lines:
            self._line(line)
        return len(text)

    def _line(self, raw: str) -> None:
        """One line of SkyPilot's merged log. Each line comes as "(task, pid=N) text" or, with
        several nodes, "(head, rank=1, pid=N) text"; but SkyPilot writes each node's output as it
        reads it, so a node's line can be cut by another's: "<p0>abc<p1>text of 1", and node 0's
        "def" comes later with no prefix. The pieces are put back together here."""
        m = _PREFIX.match(raw)
        node, prefixed, rest = (_rank(m.group(2)), True, raw[m.end():]) if m else (None, False, raw)
        start = 0
        for cut in _CUT.finditer(rest):
            self._piece(node, prefixed, rest[start:cut.start()], whole=False)
            node, prefixed, start = _rank(cut.group(1)), True, cut.end()
        self._piece(node, prefixed, rest[start:], whole=True)

    def _piece(self, node: Optional[int], prefixed: bool, text: str, whole: bool) -> None:
        if not prefixed and self._pending:  # the rest of a line that was cut
            node = next(iter(self._pending))
            text = self._pending.pop(node) + text
        if not whole:
            self._pending[node] = text
            return
        self._complete(node, text)

    def _complete(self, node: Optional[int], line: str) -> None:
        bare = line.strip()
        if bare.startswith(self._begin):
            fields = _fields(bare)
            n = int(fields.get("node", 0))
            self._parts[n], self._result[n] = [], fields.get("result") == "1"
        elif bare.startswith(self._data):
            head, _, chunk = bare.partition(" ")
            self._parts.setdefault(int(head[len(self._data):] or 0), []).append(chunk)
        elif bare.startswith(self._end):
            self._codes[int(_fields(bare).get("node", 0))] = int(bare.split()[-1])
        else:
            tag = f"[node {node}] " if self._nodes > 1 and node is not None else ""
            f = self._f
            if line.startswith(self._err_mark):
                line = line[len(self._err_mark):]
                if self._err is None:
                    self._err = open(self._err_path, "a")
                f = self._err
            f.write(tag + line + "\n")
            f.flush()

    def close(self) -> None:
        if self._buf:
            self._line(self._buf)
            self._buf = ""
        for node in list(self._pending):  # cut and never continued
            self._complete(node, self._pending.pop(node))
        self._f.close()
        if self._err is not None:
            self._err.close()
        shipped = sorted(n for n in self._parts if n in self._codes)
        if shipped:
            chosen = next((n for n in shipped if self._result.get(n)), shipped[0])
            try:
                self.files = base64.b64decode("".join(self._parts[chosen]), validate=True)
            except ValueError as exc:  # binascii.Error: the log lost or mixed some of it
                self.garbled = f"node {chosen}'s files came back garbled through SkyPilot's log ({exc})"
        if len(self._codes) >= self._nodes:
            self.exit_code = next((c for _, c in sorted(self._codes.items()) if c), 0)


def _rank(prefix: str) -> Optional[int]:
    r = _RANK.search(prefix)
    return int(r.group(1)) if r else None


def _fields(line: str) -> Dict[str, str]:
    """key=value words of a marker line."""
    return dict(w.split("=", 1) for w in line.split() if "=" in w)


def _unpack(data: bytes, job_dir: str) -> None:
    """The job dir's files from the node into the local job dir (tarfile's data filter: no
    absolute paths, no `..`, no links out, no devices)."""
    os.makedirs(job_dir, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        tar.extractall(job_dir, filter="data")


def _why(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text[-1500:]
