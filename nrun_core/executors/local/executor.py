"""nrun_local: each point an isolated process on this machine, at most ``max_parallel`` at once.

Two ways to run a point, both through the point runtime (``nrun_core/runtime/point.py``):
- fork: a forked child of the launcher runs the task function in-process with the config the
  launcher composed (no new interpreter, no re-import: the cheapest way there is), in its own
  process group, with its stdout/stderr in files. A segfault, ``os._exit`` or an OOM kill ends
  only that child.
- command: ``python nrun_point.py PAYLOAD`` (under torchrun, or from a packaged snapshot).
Every point is a child subreaper: what it starts stays its descendant and is ended with it.
Timeouts and cancels TERM the point's process group and every process it started, then KILL
them and every process still tagged with the point's token after a grace period.
"""

from __future__ import annotations

import gc
import os
import select
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

from nrun_core import gpus, placement, procs, threads
from nrun_core.errors import ConfigError
from nrun_core.executors.base import BackendState, Control, Ended, Event, Request, Started, ENDED, RUNNING
from nrun_core.executors.queue import GRACE_S, QueuedExecutor, Slot, default_parallelism  # noqa: F401
from nrun_core.runtime.point import become_subreaper, descendants, end_leftovers
from nrun_core.spec import JobSpec

MODES = ("auto", "fork", "command")


@dataclass
class _Wakeup:
    """SIGCHLD → a byte in a pipe, so waiting sleeps in select() and wakes when a child ends."""

    r: int = -1
    w: int = -1
    old_fd: int = -1
    old_handler: Any = None
    active: bool = False

    def install(self) -> None:
        if self.active:
            return
        self.r, self.w = os.pipe()
        os.set_blocking(self.r, False)
        os.set_blocking(self.w, False)
        try:
            self.old_fd = signal.set_wakeup_fd(self.w, warn_on_full_buffer=False)
            self.old_handler = signal.signal(signal.SIGCHLD, lambda *_: None)
            self.active = True
        except ValueError:  # not the main thread: fall back to short sleeps
            os.close(self.r)
            os.close(self.w)
            self.r = self.w = -1

    def wait(self, timeout: float) -> None:
        if self.r < 0:
            time.sleep(min(timeout, 0.05))
            return
        ready, _, _ = select.select([self.r], [], [], max(0.0, timeout))
        if ready:
            try:
                while os.read(self.r, 512):
                    pass
            except BlockingIOError:
                pass

    def remove(self) -> None:
        if not self.active:
            return
        signal.set_wakeup_fd(self.old_fd)
        signal.signal(signal.SIGCHLD, self.old_handler or signal.SIG_DFL)
        os.close(self.r)
        os.close(self.w)
        self.active = False


class LocalControl(Control):
    """Local points from any shell: a pid with its start time is the backend id."""

    def describe(self, points: Sequence[Dict[str, Any]]) -> Dict[int, Optional[BackendState]]:
        out: Dict[int, Optional[BackendState]] = {}
        for p in points:
            if not p.get("pid"):
                out[p["idx"]] = None
            else:
                live = procs.alive(p["pid"], p.get("pid_start"))
                out[p["idx"]] = BackendState(RUNNING if live else ENDED)
        return out

    def cancel(self, points: Sequence[Dict[str, Any]]) -> List[int]:
        stopped = []
        for p in points:
            if p.get("pid") and procs.alive(p["pid"], p.get("pid_start")):
                tree = procs.snapshot(descendants(p["pid"]))
                procs.kill_snapshot(tree, signal.SIGTERM)
                procs.kill_group(p["pid"], grace_s=GRACE_S)
                procs.kill_snapshot(tree)
                stopped.append(p["idx"])
        return stopped


class LocalExecutor(QueuedExecutor):
    name = "local"
    same_python = True
    control_class = LocalControl

    def __init__(self, options: Any, ctx: Any) -> None:
        super().__init__(options, ctx)
        self.fork = False
        self.threads: Optional[int] = None  # threads per process of a point, from the first batch
        self._concurrent = 0                 # points at once
        self._user_env: Dict[str, str] = {}
        self._wakeup = _Wakeup()
        self._gpus: Optional[gpus.Pool] = None  # with gpus_per_node: this machine's GPUs, a few per point

    # -- contract ----------------------------------------------------------------------
    def check_options(self) -> None:
        if self.opts.mode not in MODES:
            raise ConfigError(f"hydra.launcher.mode={self.opts.mode!r}: choose auto, fork or command")
        if self.opts.nodes != 1:
            raise ConfigError(f"hydra.launcher.nodes={self.opts.nodes}: nrun_local runs on this one "
                              "machine; use nodes=1 (multi-node needs nrun_slurm, nrun_docker, ...)")
        if (self.opts.gpus_per_node or 0) < 0:
            raise ConfigError(f"hydra.launcher.gpus_per_node={self.opts.gpus_per_node}: give the GPUs each point "
                              "gets (0 = none assigned, the points see what the launching shell sees)")

    def choose_mode(self, *, packaged: bool) -> None:
        """Fork when the points can run from this very process: the direct launcher, no snapshot."""
        launcher = (self.opts.launcher or {}).get("name", "direct")
        can_fork = not packaged and launcher == "direct" and self.ctx.run_in_process is not None
        if self.opts.mode == "fork" and not can_fork:
            raise ConfigError("hydra.launcher.mode=fork runs the task in the launcher's own tree: "
                              "it needs nrun/launcher=direct and nrun/packager=passthrough; "
                              "use mode=auto or mode=command")
        self.fork = self.opts.mode == "fork" or (self.opts.mode == "auto" and can_fork)

    def validate(self, specs: Sequence[JobSpec]) -> None:
        self._budget(specs)
        self._check_launcher_installed()

    def _check_launcher_installed(self) -> None:
        """torchrun / ft_launcher run from this very Python: missing, every point would fail alike."""
        import importlib.util

        from nrun_core import wrappers

        name = wrappers.name_of(self.opts.launcher)
        need = {"torchrun": ("torch", "torch.distributed.run", "pip install torch"),
                "ft": ("nvidia_resiliency_ext", "nvidia_resiliency_ext.fault_tolerance.launcher",
                       "pip install 'hydra-nrun[ft]'")}.get(name)
        if need and importlib.util.find_spec(need[0]) is None:
            raise ConfigError(f"nrun/launcher={name} runs `{sys.executable} -m {need[1]}`, but {need[0]} is not "
                              f"installed in that Python: {need[2]}, or use nrun/launcher=direct")

    def header(self) -> str:
        if self.threads is None:
            return ""
        gpu = (f"; GPUs {','.join(self._gpus.ids)}, {self._gpus.per_point} per point"
               if self._gpus is not None else "")
        return f"{self._concurrent} point(s) at once; " + threads.describe(self.threads, self._user_env) + gpu

    def render(self, specs: Sequence[JobSpec]) -> List[Request]:
        from nrun_core.shell import join

        self._budget(specs)
        mode = "fork (in-process, equivalent to the command below)" if self.fork else "command"
        out = []
        for s in specs:
            where = placement.local(s, sys.executable, self.threads)
            budget = threads.thread_env(self.threads, s.env)
            gpu = {} if self._gpus is None else {
                "CUDA_VISIBLE_DEVICES": f"<{self._gpus.per_point} free of {','.join(self._gpus.ids)}, at its start>"}
            env = "".join(f"  {k}={v}\n" for k, v in sorted({**s.env, **budget, **gpu}.items()))
            secrets = "".join(f"  {k}=<from the launching shell>\n" for k in s.secret_env)
            out.append(Request(
                title=f"point {s.index}",
                text=(f"mode: {mode}\n{threads.describe(self.threads, s.env)}\ncwd: {where.workdir(s)}\n"
                      f"stdout: {s.stdout}\nstderr: {s.stderr}\ntimeout_s: {s.timeout_s}\nenv:\n{env}{secrets}command:\n  {join(where.argv(s))}\n")))
        return out

    def start(self, specs: Sequence[JobSpec]) -> None:
        self._budget(specs)
        self._wakeup.install()
        super().start(specs)

    # -- QueuedExecutor --------------------------------------------------------------------
    def can_launch(self, spec: JobSpec) -> bool:
        return self._gpus is None or self._gpus.can_take()

    def launch(self, slot: Slot) -> List[Event]:
        if self._gpus is not None:
            slot.extra["gpus"] = self._gpus.take()
        try:
            pid = self._spawn(slot)
        except BaseException:
            self._give_gpus(slot)
            raise
        slot.handle = pid
        slot.extra["t0"] = time.time()
        return [Started(idx=slot.spec.index, backend_id=str(pid), pid=pid, pid_start=procs.start_time(pid))]

    def signal(self, slot: Slot, kill: bool) -> None:
        pid = slot.handle
        if not kill:
            # Remember the whole tree now: once the point's main process dies, what it started
            # would belong to init and be out of reach.
            slot.extra["tree"] = procs.snapshot(descendants(pid))
            procs.kill_snapshot(slot.extra["tree"], signal.SIGTERM)
            _killpg(pid, signal.SIGTERM)
        else:
            self._kill_everything(slot)

    def wait(self, timeout: float) -> List[Event]:
        self._wakeup.wait(timeout)  # a child that already ended has left a byte: no sleep
        events: List[Event] = []
        for slot in list(self._live.values()):
            try:
                got, status, rusage = os.wait4(slot.handle, os.WNOHANG)
            except ChildProcessError:
                got, status, rusage = slot.handle, 0, None
            if got == 0:
                continue
            code = os.waitstatus_to_exitcode(status)
            if slot.reason:  # the group may hold survivors (torchrun workers, daemons): end them
                self._kill_everything(slot)
            elif code != 0:  # a point that died hard could not end what it started: do it here
                procs.kill_tagged(slot.token)
            self._give_gpus(slot)
            events.append(Ended(idx=slot.spec.index, reason="exited", exit_code=code,
                                detail=procs.describe_exit(code, oom_hint=True), usage=_usage(slot, rusage)))
        return events

    def idle(self) -> None:
        self._wakeup.remove()

    # -- internals ---------------------------------------------------------------------
    def _budget(self, specs: Sequence[JobSpec]) -> None:
        """Threads per point, once per sweep: this machine's CPUs over the points running at
        once (a retry batch later keeps it)."""
        if self.threads is None and specs:
            from nrun_core import wrappers

            self._gpus = self._gpu_pool(specs)
            self._concurrent = min(self.max_parallel, len(specs), self._gpus.slots if self._gpus else len(specs))
            # torchrun starts nproc_per_node processes per point: they share the point's share
            per_point = wrappers.layout(self.opts.launcher, nodes=1, gpus_per_node=self.opts.gpus_per_node or 0)
            self.threads = threads.budget(threads.host_cores(), self._concurrent * max(1, per_point.nproc_per_node))
            self._user_env = dict(specs[0].env)

    def _gpu_pool(self, specs: Sequence[JobSpec]) -> Optional[gpus.Pool]:
        """With gpus_per_node: the GPUs points take turns on; refused before anything starts
        when there are none or too few."""
        per_point = int(self.opts.gpus_per_node or 0)
        if not per_point:
            return None
        if any("CUDA_VISIBLE_DEVICES" in s.env for s in specs):
            raise ConfigError("hydra.launcher.env sets CUDA_VISIBLE_DEVICES and gpus_per_node asks nrun to assign "
                              "GPUs: drop one (to keep a sweep off some GPUs, set CUDA_VISIBLE_DEVICES in the "
                              "launching shell; nrun hands out only those)")
        ids = gpus.visible()
        if not ids:
            raise ConfigError(f"hydra.launcher.gpus_per_node={per_point} but this machine shows no GPU (nvidia-smi "
                              "lists none and CUDA_VISIBLE_DEVICES is unset or empty): set gpus_per_node=0, or "
                              "list the GPUs in CUDA_VISIBLE_DEVICES")
        if per_point > len(ids):
            raise ConfigError(f"hydra.launcher.gpus_per_node={per_point} but this machine has {len(ids)} GPU(s) "
                              f"({','.join(ids)}): lower gpus_per_node to at most {len(ids)}")
        return gpus.Pool(ids, per_point)

    def _give_gpus(self, slot: Slot) -> None:
        if self._gpus is not None and slot.extra.get("gpus"):
            self._gpus.give(slot.extra.pop("gpus"))

    def _kill_everything(self, slot: Slot) -> None:
        pid = slot.handle
        tree = slot.extra.get("tree", []) + procs.snapshot(descendants(pid))
        _killpg(pid, signal.SIGKILL)
        procs.kill_snapshot(tree)
        procs.kill_tagged(slot.token)

    def _spawn(self, slot: Slot) -> int:
        spec, token = slot.spec, slot.token
        where = placement.local(spec, sys.executable, self.threads)
        env = {**where.env(spec, token=token), **placement.secret_values(spec.secret_env)}
        if "gpus" in slot.extra:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(slot.extra["gpus"])
        os.makedirs(spec.nrun_dir, exist_ok=True)
        out = os.open(spec.stdout, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        err = os.open(spec.stderr, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        argv, cwd = where.argv(spec), where.workdir(spec)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid:
            os.close(out)
            os.close(err)
            return pid
        # ---- child: never returns -------------------------------------------------------
        code = 70
        try:
            os.setpgid(0, 0)
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD, signal.SIGPIPE):
                signal.signal(sig, signal.SIG_DFL)
            signal.set_wakeup_fd(-1)
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(out, 1)
            os.dup2(err, 2)
            os.environ.update(env)
            become_subreaper()  # kept across exec: the point's orphans stay its descendants
            if self.fork:
                # Inherited objects move to the permanent generation: the child's collector never
                # walks (and so never copies on write) the launcher's heap.
                gc.freeze()
                procs.set_comm(procs.comm_tag(token))
                threads.apply_in_fork()  # torch read its variables in the launcher, long ago
                # Fresh text streams: the parent's may hold locks taken by a thread at fork time.
                sys.stdout = open(1, "w", buffering=1, closefd=False)
                sys.stderr = open(2, "w", buffering=1, closefd=False)
                assert self.ctx.run_in_process is not None
                code = self.ctx.run_in_process(spec)
            else:
                os.chdir(cwd)
                os.execvpe(argv[0], argv, os.environ)
        except SystemExit as exc:  # the task turned a signal into an exit (Lightning does)
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException as exc:  # report anything, then leave without unwinding the parent's stack
            try:
                os.write(2, f"nrun: point {spec.index} could not run: {exc!r}\n".encode())
            except OSError:
                pass
            code = 127 if not self.fork else 70
        finally:
            try:
                if self.fork:
                    end_leftovers()
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)
        raise AssertionError("unreachable")  # pragma: no cover


def _usage(slot: Slot, rusage: Any) -> Optional[Dict[str, Any]]:
    """What the kernel saw the point's process (and the children it waited for) use: kept for
    a point killed before its runtime could say (a timeout, an OOM kill, a segfault)."""
    if rusage is None:
        return None
    return {"wall_s": round(time.time() - slot.extra.get("t0", time.time()), 3),
            "cpu_s": round(rusage.ru_utime + rusage.ru_stime, 3), "max_rss": rusage.ru_maxrss * 1024,
            "source": "backend"}


def _killpg(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
