"""nrun_slurm: the sweep as one Slurm job array, submitted through submitit, one point per task.

- validate: every setting (``slurm_options``), the dependencies (``slurm_deps``) and, unless
  ``test_only=false``, the whole request with ``sbatch --test-only``: an unknown partition or an
  impossible size fails before anything is submitted or recorded.
- start: one ``submit_array`` of ``PointTask``s (``slurm_task``): array task i runs point i, in
  process (cheapest) or as a command (torchrun, several nodes, containers). Each point is
  reported Started at submission with its Slurm id ``<array>_<i>``, so ``nrun cancel`` from
  another shell can reach points still queued.
- poll: one ``squeue`` call per second for the whole sweep (sacct only for tasks squeue forgot
  and for exit codes of crashes); queued, running, requeued and preempted tasks are not ended.
- cancel: one ``scancel`` of the array (or of the given tasks).
submitit and paramiko are imported only when a sweep is submitted or reached over SSH.
"""

from __future__ import annotations

import os
import pickle
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from nrun_core import procs
from nrun_core.errors import BackendError, ConfigError
from nrun_core.executors.slurm import options as slurm_options, state as slurm_state
from nrun_core.executors.base import Ended, Event, Executor, Request, Started
from nrun_core.executors.slurm.control import SlurmControl
from nrun_core.executors.slurm.site import site_for
from nrun_core.placement import Placement, runtime_file, secret_values
from nrun_core.shell import join
from nrun_core.spec import JobSpec

POLL_INTERVAL_S = 1.0
LOST_AFTER_S = 120.0        # a task neither squeue nor sacct has heard of this long after submission
EXIT_CODE_WAIT_S = 5.0      # sacct lags squeue: how long to wait for a crashed task's exit code


@dataclass
class _Task:
    spec: JobSpec
    backend_id: str
    submitted: float
    folder: str
    cancelling: bool = False
    ended: bool = False
    terminal_since: Optional[float] = None
    running_since: Optional[float] = None   # monotonic, when squeue first said RUNNING
    timing_out: bool = False                # nrun cancelled it at timeout_s


class SlurmExecutor(Executor):
    name = "slurm"
    start_before_detach = True  # sbatch runs in the launcher: a refused request fails the command
    control_class = SlurmControl

    def __init__(self, options: Any, ctx: Any) -> None:
        super().__init__(options, ctx)
        self._site: Any = None
        self._tasks: Dict[int, _Task] = {}
        self._events: List[Event] = []
        self._next_query = 0.0
        self._dependency: Optional[str] = None
        self._dependency_resolved = False
        self._warned: set = set()

    @property
    def site(self) -> Any:
        if self._site is None:
            self._site = site_for(self.opts)
        return self._site

    @property
    def slurm(self) -> SlurmControl:
        """The stateless squeue/sacct/scancel the executor polls with, on its own site."""
        return SlurmControl({"id": self.ctx.sweep_id}, site=self.site)

    # -- contract ----------------------------------------------------------------------
    @property
    def same_python(self) -> bool:  # type: ignore[override]
        """The nodes run this Python from a shared filesystem, unless told otherwise."""
        o = self.opts
        return not (o.ssh.host or o.container_image or o.python)

    def check_options(self) -> None:
        slurm_options.check(self.opts)

    def header(self) -> str:
        return f"slurm: time limit of each point: {slurm_options.time_text(self.opts)}"

    def validate(self, specs: Sequence[JobSpec]) -> None:
        for spec in specs:
            self.mode(spec)
        self._resolve_dependency()
        # A dry run only renders: it must work where Slurm is not reachable (a laptop).
        if self.opts.test_only and specs and not self.opts.dry_run:
            plan = self.plan(self.site.prepare(specs, ship=False))
            from nrun_core.executors.slurm.submit import render

            out = self.site.run(["sbatch", "--test-only"], input=render(plan))
            if out.returncode != 0:
                raise ConfigError(_refusal((out.stderr or out.stdout).strip()))

    def render(self, specs: Sequence[JobSpec]) -> List[Request]:
        from nrun_core.executors.slurm.submit import render

        specs = self.site.prepare(specs, ship=False)  # over SSH: the paths on the login node
        plan = self.plan(specs)
        lines = [f"# array task -> point ({len(specs)} point(s)); each task runs "
                 f"`{plan.worker_python()} -u -m submitit.core._submit` with a pickled PointTask:"]
        for i, (spec, task) in enumerate(zip(specs, plan.tasks)):
            how = ("in-process (the point runtime in the worker, on the payload); equivalent to"
                   if task["mode"] == "inprocess" else "command")
            runtime = runtime_file() if not self.site.remote else "<nrun on the login node>/runtime/point.py"
            where = Placement(python=task.get("python") or plan.python, runtime=runtime, code_dir=task["code_dir"])
            lines.append(f"#   {i}: point #{spec.index} {' '.join(spec.overrides)}\n#      {how}: "
                         f"{join(where.argv(spec))}\n#      cwd: {where.workdir(spec)}\n#      logs: {spec.stdout}")
        if specs and plan.params["nodes"] * plan.params["ntasks_per_node"] > 1:
            port = f"{plan.tasks[0]['rdzv_port']}+SLURM_JOB_ID%1000"
            lines.append("#   on each Slurm task: " + (
                f"PET_NODE_RANK=$SLURM_NODEID PET_RDZV_ENDPOINT=<first node>:{port} (torchrun)"
                if specs[0].launcher == "torchrun" else
                f"RANK=$SLURM_PROCID LOCAL_RANK=$SLURM_LOCALID WORLD_SIZE=$SLURM_NTASKS "
                f"MASTER_ADDR=<first node> MASTER_PORT={port}"))
        # Secret-looking names are not in a spec's env: the sweep passes them like secret_env.
        env = "".join(f"#   {k}={v}\n"
                      for k, v in sorted((specs[0].env if specs else {}).items()))
        env += "".join(f"#   {n}=<exported from the launching shell by sbatch, never written down>\n"
                       for n in (specs[0].secret_env if specs else []))
        lines.append(f"# time limit of each point: {slurm_options.time_text(self.opts)}")
        text = render(plan) + "\n" + "\n".join(lines) + "\n" + (f"# environment of every point:\n{env}" if env else "")
        where = f" on {self.opts.ssh.host} over SSH" if self.site.remote else ""
        return [Request(title=f"sbatch script{where}: one array of {len(specs)} point(s)", text=text)]

    def start(self, specs: Sequence[JobSpec]) -> None:
        if not specs:
            return
        first = not self._tasks
        try:
            sent = self.site.prepare(specs)
            plan = self.plan(sent)
            ids = self.site.submit(plan, secret_values(specs[0].secret_env))
        except Exception as exc:
            if first:
                raise BackendError(f"sbatch refused the array of {len(specs)} point(s): {exc}") from exc
            for spec in specs:  # a retry that cannot be resubmitted ends the point
                self._events.append(Ended(idx=spec.index, reason="exited", detail=f"resubmission failed: {exc}"))
            return
        now = time.monotonic()
        for spec, bid in zip(specs, ids):
            self._tasks[spec.index] = _Task(spec=spec, backend_id=bid, submitted=now, folder=plan.folder)
            self._events.append(Started(idx=spec.index, backend_id=bid, queued=True))
        self._next_query = now + 0.3  # squeue knows a job ~20 ms after sbatch

    def busy(self) -> bool:
        return bool(self._events) or any(not t.ended for t in self._tasks.values())

    def poll(self, timeout: float) -> List[Event]:
        if not self._events and any(not t.ended for t in self._tasks.values()):
            wait = self._next_query - time.monotonic()
            if wait > 0:
                time.sleep(min(wait, max(timeout, 0.0)))
            if time.monotonic() >= self._next_query:
                self._next_query = time.monotonic() + POLL_INTERVAL_S
                self._query()
        events, self._events = self._events, []
        return events

    def cancel(self, indices: Optional[Sequence[int]] = None) -> None:
        wanted = None if indices is None else set(indices)
        targets = [t for t in self._tasks.values()
                   if not t.ended and not t.cancelling and (wanted is None or t.spec.index in wanted)]
        if not targets:
            return
        for t in targets:
            t.cancelling = True
        live = [t for t in self._tasks.values() if not t.ended]
        if len(targets) == len(live):  # the whole array(s): covers tasks still queued
            ids = slurm_state.array_ids(t.backend_id for t in targets)
        else:
            ids = [t.backend_id for t in targets]
        out = self.slurm.scancel(ids)
        print(f"[nrun] slurm: scancel {' '.join(ids)} ({len(targets)} point(s))"
              + ("" if out.returncode == 0 else f" failed: {(out.stderr or out.stdout).strip()}"),
              file=sys.stderr, flush=True)
        self._next_query = time.monotonic() + 0.2

    # -- planning ----------------------------------------------------------------------
    def mode(self, spec: JobSpec) -> str:
        """inprocess or command for this point (ConfigError if inprocess was asked but cannot be)."""
        asked = self.opts.mode
        if asked == "command":
            return "command"
        blockers = self._not_in_process(spec)
        if asked == "inprocess" and blockers:
            raise ConfigError(f"hydra.launcher.mode=inprocess cannot run point #{spec.index}: "
                              f"{'; '.join(blockers)}. Use mode=auto or mode=command")
        return "command" if blockers else "inprocess"

    def _not_in_process(self, spec: JobSpec) -> List[str]:
        c = self.opts
        why = []
        if spec.launcher != "direct":
            why.append(f"nrun/launcher={spec.launcher} runs a command")
        if spec.nodes > 1 or (c.ntasks_per_node or 1) > 1:
            why.append("several nodes or tasks run the command once per task")
        if c.container_image:
            why.append("container points run as commands in the image")
        return why

    def plan(self, specs: Sequence[JobSpec]) -> Any:
        """The submission as plain data (the specs as the cluster sees them: ``site.prepare``)."""
        from nrun_core.executors.slurm.submit import Plan

        c = self.opts
        root = _sweep_root(specs)
        folder = c.submitit_folder or os.path.join(root, ".submitit")
        folder = folder if "%j" in folder else os.path.join(folder, "%j")
        python = slurm_options.python(c, sys.executable) or sys.executable
        command_python = slurm_options.python(c, None)  # the point's Python, when not the worker's
        layout_port = int(((c.launcher or {}).get("rdzv_port")) or 29500)
        requeue = int(c.max_num_timeout) > 0
        tasks = [{"spec": spec.as_dict(), "mode": self.mode(spec), "code_dir": self.site.code_dir(spec),
                  "python": command_python, "rdzv_port": layout_port, "requeue": requeue} for spec in specs]
        mounts = _outermost([root, folder.split("%j")[0], *(t["code_dir"] for t in tasks),
                             os.path.dirname(runtime_file()), *self.ctx.host_dirs])
        params = slurm_options.parameters(c, job_name=self._job_name(specs), dependency=self._resolve_dependency(),
                                          auto_mounts=mounts)
        return Plan(folder=folder, python=python, exec_worker=not params["use_srun"], params=params,
                    max_num_timeout=int(c.max_num_timeout), tasks=tasks)

    def _job_name(self, specs: Sequence[JobSpec]) -> str:
        if self.opts.sweep_name:
            return str(self.opts.sweep_name)
        for spec in specs:
            if spec.index in self.ctx.configs:
                return str(self.ctx.configs[spec.index].hydra.job.name)
        return "nrun"

    def _resolve_dependency(self) -> Optional[str]:
        if not self._dependency_resolved:
            from nrun_core.executors.slurm import deps as slurm_deps
            from nrun_core.store import Store

            self._dependency = slurm_deps.resolve(self.opts.dependencies or [], Store)
            self._dependency_resolved = True
        return self._dependency

    # -- polling -----------------------------------------------------------------------
    def _query(self) -> None:
        active = [t for t in self._tasks.values() if not t.ended]
        if not active:
            return
        states = self.slurm.squeue([t.backend_id for t in active])
        if states is None:
            self._warn("squeue", "[nrun] slurm: squeue failed; retrying every second")
            return
        if self.site.remote:  # live logs: copy what running points wrote since the last poll
            for t in active:
                st = states.get(t.backend_id)
                if st is not None and st.state == "RUNNING":
                    self.site.collect(t.spec, final=False)
        unknown: List[_Task] = []
        need_exit: List[_Task] = []
        now = time.monotonic()
        for t in active:
            st = states.get(t.backend_id)
            if st is not None and st.state == "RUNNING":
                self._running(t, now)
            if st is None:
                unknown.append(t)
            elif not st.live:
                t.terminal_since = t.terminal_since or now
                if self._wants_exit_code(t, st) and now - t.terminal_since < EXIT_CODE_WAIT_S:
                    need_exit.append(t)
                else:
                    self._end(t, st)
        if unknown or need_exit:
            self._ask_sacct(unknown, need_exit, now)

    def _ask_sacct(self, unknown: List["_Task"], need_exit: List["_Task"], now: float) -> None:
        found = self.slurm.sacct([t.backend_id for t in unknown + need_exit])
        for t in need_exit:
            st = found.get(t.backend_id)
            if st is not None and not st.live:
                self._end(t, st)
        for t in unknown:
            st = found.get(t.backend_id)
            if st is not None and not st.live:
                self._end(t, st)
            elif st is None and now - t.submitted > LOST_AFTER_S:
                t.ended = True
                self._events.append(Ended(idx=t.spec.index, reason="lost",
                                          detail=f"Slurm has no record of {t.backend_id}"))

    def _running(self, t: _Task, now: float) -> None:
        """The task runs: start its clock (it was queued until now), and stop it at timeout_s
        (Slurm's own limit has minute granularity and is only the backstop)."""
        if t.running_since is None:
            t.running_since = now
            self._events.append(Started(idx=t.spec.index, backend_id=t.backend_id))
        limit = t.spec.timeout_s
        if limit and not t.timing_out and not t.cancelling and now - t.running_since >= limit:
            t.timing_out = True
            out = self.slurm.scancel([t.backend_id])
            if out.returncode != 0:
                self._warn(f"timeout-{t.backend_id}", f"[nrun] slurm: scancel {t.backend_id} at timeout_s failed: "
                                                      f"{(out.stderr or out.stdout).strip()}")

    def _wants_exit_code(self, t: _Task, st: slurm_state.TaskState) -> bool:
        return st.state not in ("COMPLETED", "CANCELLED") and not os.path.exists(t.spec.result_file)

    def _end(self, t: _Task, st: slurm_state.TaskState) -> None:
        t.ended = True
        self.site.collect(t.spec, final=True)
        reason, detail = slurm_state.ended_reason(st, slurm_options.time_text(self.opts))
        if t.timing_out and reason in ("cancelled", "timeout"):
            reason, detail = "timeout", ""   # the runner names hydra.launcher.timeout_s
        elif reason == "cancelled" and t.cancelling:
            detail = "cancelled (scancel)"
        exit_code = st.exit_code if st.exit_code is not None else (0 if st.state == "COMPLETED" else None)
        if reason == "exited" and st.state != "COMPLETED" and not os.path.exists(t.spec.result_file):
            detail = f"{procs.describe_exit(exit_code)} ({self._worker_failure(t)})"
        self._events.append(Ended(idx=t.spec.index, reason=reason, exit_code=exit_code, detail=detail))

    def _worker_failure(self, t: _Task) -> str:
        """Why a Slurm task died without the point's result: submitit's own record and log."""
        folder = Path(t.folder.replace("%j", t.backend_id))
        log = folder / f"{t.backend_id}_0_log.err"
        text = f"Slurm task {t.backend_id}, submitit log {log}"
        if self.site.remote:
            return text + f" on {self.opts.ssh['host']}"
        try:
            with open(folder / f"{t.backend_id}_0_result.pkl", "rb") as f:
                outcome, payload = pickle.load(f)
            if outcome == "error":
                text = f"{str(payload).strip().splitlines()[-1]}; {text}"
        except Exception:
            pass
        return text

    def _warn(self, key: str, text: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            print(text, file=sys.stderr, flush=True)

def _sweep_root(specs: Sequence[JobSpec]) -> str:
    """The sweep dir: the common parent of the points' job dirs."""
    if not specs:
        return os.getcwd()
    parents = [os.path.dirname(s.job_dir.rstrip("/")) for s in specs]
    return os.path.commonpath(parents) if len(set(parents)) > 1 else parents[0]


def _outermost(paths: Sequence[str]) -> List[str]:
    """Directories to mount, in the order given, without those inside another one."""
    norm = [os.path.normpath(p) for p in paths if p]
    inside = lambda p, k: p != k and p.startswith(k.rstrip("/") + "/")  # noqa: E731
    kept: List[str] = []
    for p in norm:
        if p not in kept and not any(inside(p, k) for k in norm):
            kept.append(p)
    return kept


_HINTS = (("partition", "hydra.launcher.partition"), ("time limit", "hydra.launcher.time"),
          ("node count", "hydra.launcher.nodes"), ("feature", "hydra.launcher.constraint"),
          ("gres", "hydra.launcher.gres / gpus_per_node"), ("account", "hydra.launcher.account"),
          ("qos", "hydra.launcher.qos"), ("dependency", "hydra.launcher.dependencies"),
          ("node configuration", "hydra.launcher.mem / cpus_per_task / ntasks_per_node / nodelist"),
          ("memory", "hydra.launcher.mem"), ("nodelist", "hydra.launcher.nodelist"),
          ("reservation", "hydra.launcher.additional_parameters.reservation"))


def _refusal(message: str) -> str:
    """sbatch's own words, plus which setting to look at. Nothing was submitted."""
    low = message.lower()
    where = [setting for key, setting in _HINTS if key in low]
    hint = f"check {', '.join(where)}" if where else "check the hydra.launcher settings (dry run: hydra.launcher.dry_run=true)"
    return f"Slurm refused the sweep's request (sbatch --test-only): {message}; {hint}. Nothing was submitted."
