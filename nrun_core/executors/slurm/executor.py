"""nrun_slurm: the sweep as Slurm job arrays, submitted through submitit (or, for packed points,
a plain sbatch of nrun's pack worker).

- validate: every setting (``slurm_options``), the dependencies (``slurm_deps``), the cluster's
  limits (``slurm_limits``: MaxArraySize, MaxJobCount, MaxSubmitJobs, read once per sweep) and,
  unless ``test_only=false``, the request with ``sbatch --test-only``: an unknown partition, an
  impossible size or a sweep over the submit limits fails before anything is submitted.
- plan: points are packed into array tasks where that is safe or asked (``points_per_task``;
  ``nrun_core/runtime/pack.py``), the tasks cut into arrays of at most MaxArraySize-1, each array
  from index 0, sharing ``array_parallelism`` (``plans`` states the rule).
- start: one submission per array; every point is reported Started (queued) with its Slurm id
  (``<array>_<i>``, ``<array>_<i>:<k>`` for point k of a pack), so ``nrun cancel`` from another
  shell can reach points still queued; the sweep's backend id lists every array.
- poll: one ``squeue`` call per second for the whole sweep (sacct only for tasks squeue forgot
  and for exit codes of crashes); a running pack's point records are read between; queued,
  running, requeued and preempted tasks are not ended.
- cancel: ``scancel`` of the arrays (or of the given tasks); one point of a pack whose other points
  go on gets a cancel marker that its pack runner obeys.
submitit and paramiko are imported only when a sweep is submitted or reached over SSH.
"""

from __future__ import annotations

import os
import pickle
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from nrun_core import procs
from nrun_core.errors import BackendError, ConfigError
from nrun_core.executors.slurm import options as slurm_options, state as slurm_state
from nrun_core.executors.base import Ended, Event, Executor, Request, Started
from nrun_core.executors.slurm.control import SlurmControl
from nrun_core.executors.slurm.site import site_for
from nrun_core.executors.slurm.packworker import pack_id
from nrun_core.runtime.pack import CANCEL_FILE as PACK_CANCEL, STATUS_FILE as PACK_STATUS
from nrun_core.placement import Placement, runtime_file, secret_values
from nrun_core.shell import join
from nrun_core.spec import JobSpec

POLL_INTERVAL_S = 1.0
PACK_SCAN_S = 0.2           # how often running packs' point records are read between squeue calls
MAX_AUTO_PACK = 100         # at most this many points per array task when packing automatically
LOST_AFTER_S = 120.0        # a task neither squeue nor sacct has heard of this long after submission
REQUEUE_SETTLE_S = 3.0      # ft requeue: time for the first run's processes to leave before the next
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
    task_id: str = ""                       # the Slurm array task running it (its pack's, if packed)
    packed: bool = False                    # one of several points of its array task (runtime/pack.py)
    held_since: Optional[float] = None      # monotonic, when squeue first said requeued and held


class SlurmExecutor(Executor):
    name = "slurm"
    start_before_detach = True  # sbatch runs in the launcher: a refused request fails the command
    control_class = SlurmControl
    # ray: a Ray cluster inside the point's allocation (runtime/ray_node.py); the other executors
    # have no allocation to start it in.
    launchers = Executor.launchers | {"ray"}
    requeues = True  # ft's max_retries: the job requeues itself (task.py)

    def __init__(self, options: Any, ctx: Any) -> None:
        super().__init__(options, ctx)
        self._site: Any = None
        self._tasks: Dict[int, _Task] = {}
        self._events: List[Event] = []
        self._usage_wanted: List[Tuple[Ended, str]] = []
        self._next_query = 0.0
        self._dependency: Optional[str] = None
        self._dependency_resolved = False
        self._warned: set = set()
        self._arrays: List[str] = []
        self._limits: Any = None
        self._pack_why = ""
        self._running_packs: Dict[str, List[_Task]] = {}   # array task id -> its live points
        self._planned: List[Any] = []                       # the plans validate checked

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
        text = f"slurm: time limit of each point: {slurm_options.time_text(self.opts)}"
        if self._pack_why and not self._pack_why.startswith("none"):
            text += f"; packing: {self._pack_why}"
        if len(self._planned) > 1:
            text += f"; split: {self._split_why(self._planned)}"
        return text

    def validate(self, specs: Sequence[JobSpec]) -> None:
        for spec in specs:
            self.mode(spec)
        self._resolve_dependency()
        # A dry run only renders: it must work where Slurm is not reachable (a laptop).
        if specs and not self.opts.dry_run:
            plans = self._planned = self.plans(self.site.prepare(specs, ship=False))
            self.limits().check(sum(len(p.tasks) for p in plans), len(plans), self.site)
            if self.opts.test_only:
                from nrun_core.executors.slurm.submit import render

                out = self.site.run(["sbatch", "--test-only"], input=render(plans[0]))
                if out.returncode != 0:
                    raise ConfigError(_refusal((out.stderr or out.stdout).strip()))

    def render(self, specs: Sequence[JobSpec]) -> List[Request]:
        specs = self.site.prepare(specs, ship=False)  # over SSH: the paths on the login node
        plans = self.plans(specs)
        by_index = {s.index: s for s in specs}
        return [self._render_plan(n, plans, by_index) for n in range(len(plans))]

    def _render_plan(self, n: int, plans: List[Any], by_index: Dict[int, JobSpec]) -> Request:
        from nrun_core.executors.slurm.submit import render

        plan = plans[n]
        packed = any("pack" in t for t in plan.tasks)
        specs = [by_index[d["index"]] for t in plan.tasks for d in _task_specs(t)]
        if packed:
            from nrun_core.executors.slurm.submit import packs_file

            lines = [f"# array task -> points ({len(specs)} point(s)); each task runs `{plan.worker_python()} -u -m "
                     f"nrun_core.executors.slurm.packworker {packs_file(plan)}` (its entry $SLURM_ARRAY_TASK_ID): "
                     "its points one after the other, one fork each, in one warm Python (nrun_core/runtime/pack.py):"]
        else:
            lines = [f"# array task -> point ({len(specs)} point(s)); each task runs "
                     f"`{plan.worker_python()} -u -m submitit.core._submit` with a pickled PointTask:"]
        runtime = runtime_file() if not self.site.remote else "<nrun on the login node>/runtime/point.py"
        for i, task in enumerate(plan.tasks):
            if "pack" in task:
                pack = task["pack"]
                idx = [d["index"] for d in pack["specs"]]
                task_word = f"<array>_{i}" if len(plan.tasks) > 1 else "<job>"
                lines.append(f"#   {i}: points #{', #'.join(map(str, idx))} (Slurm ids {task_word}:0.."
                             f"{len(idx) - 1})")
                for d, code_dir in zip(pack["specs"], pack["code_dirs"]):
                    spec = by_index[d["index"]]
                    where = Placement(python=pack.get("python") or plan.python, runtime=runtime, code_dir=code_dir)
                    lines.append(f"#      point #{spec.index} {' '.join(spec.overrides)}: forked, equivalent to "
                                 f"{join(where.argv(spec))}\n#        cwd: {where.workdir(spec)}\n"
                                 f"#        logs: {spec.stdout}")
                continue
            spec = by_index[task["spec"]["index"]]
            how = ("in-process (the point runtime in the worker, on the payload); equivalent to"
                   if task["mode"] == "inprocess" else "command")
            where = Placement(python=task.get("python") or plan.python, runtime=runtime, code_dir=task["code_dir"])
            lines.append(f"#   {i}: point #{spec.index} {' '.join(spec.overrides)}\n#      {how}: "
                         f"{join(where.argv(spec))}\n#      cwd: {where.workdir(spec)}\n#      logs: {spec.stdout}")
        launcher = specs[0].launcher if specs and not packed else "direct"
        if launcher == "ray":
            lines += _ray_lines(plan, specs[0])
        elif specs and plan.params["nodes"] * plan.params["ntasks_per_node"] > 1:
            port = f"{plan.tasks[0]['rdzv_port']}+SLURM_JOB_ID%1000"
            lines.append("#   on each Slurm task: " + (
                f"PET_NODE_RANK=$SLURM_NODEID PET_RDZV_ENDPOINT=<first node>:{port} ({launcher})"
                if launcher in ("torchrun", "ft") else
                f"RANK=$SLURM_PROCID LOCAL_RANK=$SLURM_LOCALID WORLD_SIZE=$SLURM_NTASKS "
                f"MASTER_ADDR=<first node> MASTER_PORT={port}"))
        retries = int(((plan.tasks[0].get("launcher") or {}) if plan.tasks else {}).get("max_retries") or 0)
        if launcher == "ft" and retries:
            lines.append(f"# ft requeue loop: a point still failing after max_restarts requeues its own job "
                         f"(task 0: scontrol requeue $SLURM_JOB_ID; same Slurm id), at most {retries} time(s) "
                         "(hydra.launcher.launcher.max_retries; count in <nrun dir>/ft-requeues.<id>)")
        # Secret-looking names are not in a spec's env: the sweep passes them like secret_env.
        env = "".join(f"#   {k}={v}\n"
                      for k, v in sorted((specs[0].env if specs else {}).items()))
        env += "".join(f"#   {n}=<exported from the launching shell by sbatch, never written down>\n"
                       for n in (specs[0].secret_env if specs else []))
        lines.append(f"# time limit of each point: {slurm_options.time_text(self.opts)}")
        if packed and plan.params.get("time"):
            lines.append(f"# time limit of each array task (its points one after the other): {plan.params['time']} min")
        if plan.chain is not None:
            lines.append(f"# runs once array {plan.chain + 1} of this sweep has ended (--dependency=afterany:<its job "
                         "id>, added at submission): its share of array_parallelism passes on")
        if packed:
            lines.append(f"# packing: {self._pack_why}")
        if len(plans) > 1:
            lines.append(f"# split: {self._split_why(plans)}")
        text = render(plan) + "\n" + "\n".join(lines) + "\n" + (f"# environment of every point:\n{env}" if env else "")
        where = f" on {self.opts.ssh.host} over SSH" if self.site.remote else ""
        if len(plans) == 1:
            title = f"sbatch script{where}: one array of {len(specs)} point(s)"
        else:
            title = (f"sbatch script{where}: array {n + 1} of {len(plans)}, {len(plan.tasks)} task(s) "
                     f"(sweep tasks {plan.first}-{plan.first + len(plan.tasks) - 1}), {len(specs)} point(s)")
        return Request(title=title, text=text)

    def start(self, specs: Sequence[JobSpec]) -> None:
        if not specs:
            return
        first = not self._tasks
        if not first:  # a retry starts afresh: no pack record, no cancel marker of before
            _clear_pack_files(self.site, specs)
        submitted: List[str] = []
        try:
            sent = self.site.prepare(specs)
            plans = self.plans(sent)
            secrets = secret_values(specs[0].secret_env)
            by_index = {s.index: s for s in specs}
            entries: List[_Task] = []
            arrays: List[List[str]] = []
            for plan in plans:
                if plan.chain is not None:  # an array_parallelism lane: after the lane's previous array
                    _after(plan, f"afterany:{arrays[plan.chain][0].split('_')[0]}")
                ids = self.site.submit(plan, secrets)
                arrays.append(ids)
                submitted.append(ids[0].split("_")[0])
                now = time.monotonic()
                for task, bid in zip(plan.tasks, ids):
                    for k, d in enumerate(_task_specs(task)):
                        packed = "pack" in task
                        entries.append(_Task(spec=by_index[d["index"]], backend_id=pack_id(bid, k) if packed else bid,
                                             task_id=bid, packed=packed, submitted=now, folder=plan.folder))
        except Exception as exc:
            if submitted:  # a later array was refused: the earlier ones must not run unrecorded
                self.slurm.scancel(submitted)
            gone = f" (the arrays already submitted, {', '.join(submitted)}, were cancelled)" if submitted else ""
            if first:
                raise BackendError(f"sbatch refused the array of {len(specs)} point(s): {exc}{gone}") from exc
            for spec in specs:  # a retry that cannot be resubmitted ends the point
                self._events.append(Ended(idx=spec.index, reason="exited", detail=f"resubmission failed: {exc}{gone}"))
            return
        for t in entries:
            self._tasks[t.spec.index] = t
            self._events.append(Started(idx=t.spec.index, backend_id=t.backend_id, queued=True))
        self._arrays += [a for a in submitted if a not in self._arrays]
        self._record_arrays()
        self._next_query = time.monotonic() + 0.3  # squeue knows a job ~20 ms after sbatch

    def _record_arrays(self) -> None:
        """The sweep's backend_id in the store: every array (job id) it was submitted as."""
        try:
            from nrun_core.store import Store

            store = Store(create=False)
            try:
                store.update_sweep(self.ctx.sweep_id, backend_id=",".join(self._arrays))
            finally:
                store.close(timeout=5.0)
        except Exception as exc:  # the points' own ids are recorded by the runner either way
            self._warn("arrays", f"[nrun] slurm: could not record the sweep's arrays {self._arrays}: {exc}")

    def busy(self) -> bool:
        return bool(self._events) or any(not t.ended for t in self._tasks.values())

    def poll(self, timeout: float) -> List[Event]:
        """squeue once a second; between, the records of running packs every PACK_SCAN_S (file
        reads), so a packed point is reported as soon as it ends, not at the next squeue."""
        if not self._events and any(not t.ended for t in self._tasks.values()):
            now = time.monotonic()
            due = self._next_query if not self._running_packs else min(self._next_query, now + PACK_SCAN_S)
            if due > now:
                time.sleep(min(due - now, max(timeout, 0.0)))
            now = time.monotonic()
            if now >= self._next_query:
                self._next_query = now + POLL_INTERVAL_S
                self._query()
            elif self._running_packs:
                for task_id, members in list(self._running_packs.items()):
                    self._pack_progress(members, now)
                    if all(t.ended for t in members):
                        del self._running_packs[task_id]
        events, self._events = self._events, []
        self._add_usage(events)
        return events

    def _add_usage(self, events: List[Event]) -> None:
        """Points that ended without a result (killed): what accounting saw them use, by one
        sacct call for all of them (a cancelled 10,000-point sweep makes one call, not 10,000)."""
        wanted = {id(ev): task for ev, task in self._usage_wanted}
        self._usage_wanted = []
        todo = [ev for ev in events if id(ev) in wanted]
        if not todo:
            return
        from nrun_core.executors.slurm import usage as slurm_usage

        found = slurm_usage.query(self.site, sorted({wanted[id(ev)] for ev in todo}))
        for ev in todo:
            ev.usage = found.get(wanted[id(ev)]) or None  # type: ignore[union-attr]

    def cancel(self, indices: Optional[Sequence[int]] = None) -> None:
        """scancel whole arrays (all live points) or array tasks; a packed point whose pack has
        other live points gets its cancel marker instead (the pack runner stops just that one)."""
        wanted = None if indices is None else set(indices)
        targets = [t for t in self._tasks.values()
                   if not t.ended and not t.cancelling and (wanted is None or t.spec.index in wanted)]
        if not targets:
            return
        for t in targets:
            t.cancelling = True
        live = [t for t in self._tasks.values() if not t.ended]
        if len(targets) == len(live):  # the whole array(s): covers tasks still queued
            ids = slurm_state.array_ids(t.task_id for t in targets)
            marked: List[_Task] = []
        else:
            chosen = {t.spec.index for t in targets}
            whole = {t.task_id for t in targets
                     if all(o.spec.index in chosen for o in live if o.task_id == t.task_id)}
            ids = [i for i in dict.fromkeys(t.task_id for t in targets) if i in whole]
            marked = [t for t in targets if t.task_id not in whole]
        for t in marked:
            _mark_cancel(self.site, t.spec)
        if ids:
            out = self.slurm.scancel(ids)
            print(f"[nrun] slurm: scancel {' '.join(ids)} ({len(targets) - len(marked)} point(s))"
                  + ("" if out.returncode == 0 else f" failed: {(out.stderr or out.stdout).strip()}"),
                  file=sys.stderr, flush=True)
        if marked:
            print(f"[nrun] slurm: cancel marker for packed point(s) {[t.spec.index for t in marked]}",
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

    def plans(self, specs: Sequence[JobSpec]) -> List[Any]:
        """The submission as plain data (the specs as the cluster sees them: ``site.prepare``):
        one plan per array. Points are packed into array tasks (``_pack_size``), the tasks cut
        into arrays of at most MaxArraySize-1 tasks, each array's indices starting at 0 (array j
        holds the sweep's tasks ``first .. first+len-1``).

        array_parallelism (or max_parallel) N holds across the whole sweep: with a arrays,
        ``lanes = min(a, N)``; array j is in lane ``j % lanes`` and gets ``%share`` of N (N split
        as evenly as the lanes allow, so the shares add up to N); an array whose lane already
        has one runs after it (``afterany``). At no time do more than N tasks run.
        """
        from nrun_core.executors.slurm.submit import Plan

        c = self.opts
        root = _sweep_root(specs)
        folder = c.submitit_folder or os.path.join(root, ".submitit")
        folder = folder if "%j" in folder else os.path.join(folder, "%j")
        python = slurm_options.python(c, sys.executable) or sys.executable
        command_python = slurm_options.python(c, None)  # the point's Python, when not the worker's
        layout_port = int(((c.launcher or {}).get("rdzv_port")) or 29500)
        requeue = int(c.max_num_timeout) > 0
        modes = [self.mode(spec) for spec in specs]
        code_dirs = [self.site.code_dir(spec) for spec in specs]
        size = self._pack_size(specs, modes)
        tasks: List[Dict[str, Any]] = []
        if size > 1:
            for i in range(0, len(specs), size):
                tasks.append({"pack": {"specs": [_spec_dict(s) for s in specs[i:i + size]],
                                       "code_dirs": code_dirs[i:i + size], "python": command_python}})
        else:
            extra = _launcher_task_settings(c.launcher)
            tasks = [{"spec": _spec_dict(spec), "mode": mode, "code_dir": code_dir, "python": command_python,
                      "rdzv_port": layout_port, "requeue": requeue, **extra}
                     for spec, mode, code_dir in zip(specs, modes, code_dirs)]
        mounts = _outermost([root, folder.split("%j")[0], *dict.fromkeys(code_dirs),
                             os.path.dirname(runtime_file()), *self.ctx.host_dirs])
        params = slurm_options.parameters(c, job_name=self._job_name(specs), dependency=self._resolve_dependency(),
                                          auto_mounts=mounts, points_per_task=size)
        cap = self.limits().array_cap
        chunks = [tasks[i:i + cap] for i in range(0, len(tasks), cap)] or [[]]
        throttle = params.get("array_parallelism")
        lanes = min(len(chunks), throttle) if throttle else len(chunks)
        plans = []
        for j, chunk in enumerate(chunks):
            p = dict(params)
            if throttle and len(chunks) > 1:
                lane = j % lanes
                p["array_parallelism"] = throttle // lanes + (1 if lane < throttle % lanes else 0)
            chain = j - lanes if throttle and j >= lanes else None
            plans.append(Plan(folder=folder, python=python, exec_worker=not params["use_srun"], params=p,
                              max_num_timeout=int(c.max_num_timeout), tasks=chunk, first=j * cap, chain=chain))
        return plans

    def limits(self) -> Any:
        """The cluster's limits, read once per sweep (Slurm's defaults in a dry run)."""
        if self._limits is None:
            from nrun_core.executors.slurm import limits

            self._limits = limits.read(self.site, self.opts.partition, self.opts.max_array_size,
                                       offline=bool(self.opts.dry_run), account=self.opts.account)
        return self._limits

    def _pack_size(self, specs: Sequence[JobSpec], modes: Sequence[str]) -> int:
        """Points per array task: hydra.launcher.points_per_task, or where safe, automatically.

        Auto packs only points that run in process (direct launcher, one node, one task, no
        container), with no Slurm time limit set per point (hydra.launcher.time null: the pack's
        limit is then the sum of its points' timeout_s, and the pack runner stops each point at
        its own timeout_s), no requeue (max_num_timeout=0), and only when the sweep has at least
        twice as many points as can run at once, P = min(array_parallelism or max_parallel,
        the partition's CPUs / cpus_per_task). Then K = min(MAX_AUTO_PACK, ceil(points / P)): at
        most P array tasks, all started in one wave, none holding more than the ceil(points / P)
        points a slot must run anyway; so packing never costs time for points of equal length.
        (K = points // P would leave a few tasks over P for a second wave: 100 points on 32 CPUs
        made 34 tasks of 3, the last two starting only when the first ones ended.)
        """
        c, n = self.opts, len(specs)
        asked = c.points_per_task
        if asked is not None:
            if asked > 1 and any(m != "inprocess" for m in modes):
                raise ConfigError(f"hydra.launcher.points_per_task={asked} packs points into one Python, "
                                  "which needs every point in process (direct launcher, one node, one task, "
                                  "no container); set points_per_task=1 (or null)")
            if asked > 1 and int(c.max_num_timeout) > 0:
                raise ConfigError(f"hydra.launcher.points_per_task={asked} with max_num_timeout={c.max_num_timeout}: "
                                  "a pack is not requeued (each point has its own timeout_s instead); set "
                                  "points_per_task=1 (or null) to requeue, or max_num_timeout=0")
            self._pack_why = f"{asked} point(s) per array task (hydra.launcher.points_per_task)"
            return max(1, min(asked, n))
        why = []
        if any(m != "inprocess" for m in modes):
            why.append("some points run as commands")
        if c.time is not None:
            why.append("hydra.launcher.time is a per-point Slurm limit")
        if int(c.max_num_timeout) > 0:
            why.append("max_num_timeout requeues")
        throttle = c.array_parallelism or c.max_parallel
        cpus = self.limits().cpus
        slots = [x for x in (throttle, cpus // (c.cpus_per_task or 1) if cpus else None) if x]
        if not slots:
            why.append("the cluster's CPUs are unknown (a dry run does not ask)")
        parallel = max(1, min(slots)) if slots else 0
        if slots and n < 2 * parallel:
            why.append(f"{n} point(s) < 2 x {parallel} that can run at once")
        if why:
            self._pack_why = f"none ({'; '.join(why)})"
            return 1
        size = min(MAX_AUTO_PACK, -(-n // parallel))
        self._pack_why = (f"{size} point(s) per array task (auto: {n} points, {parallel} can run at once; "
                          f"set hydra.launcher.points_per_task to choose)")
        return size

    def _split_why(self, plans: List[Any]) -> str:
        lim = self.limits()
        throttle = plans[0].params.get("array_parallelism")
        lanes = [p.chain for p in plans if p.chain is not None]
        text = (f"{sum(len(p.tasks) for p in plans)} array task(s) in {len(plans)} arrays of at most "
                f"{lim.array_cap} (MaxArraySize={lim.max_array_size} from {lim.source}); each starts at index 0")
        if throttle:
            text += (f"; array_parallelism shared so that at most "
                     f"{self.opts.array_parallelism or self.opts.max_parallel} run at once"
                     + (", later arrays wait for their lane's previous one (afterany)" if lanes else ""))
        return text

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
        states = self.slurm.squeue([t.task_id for t in active])
        if states is None:
            self._warn("squeue", "[nrun] slurm: squeue failed; retrying every second")
            return
        if self.site.remote:  # live logs: copy what running points wrote since the last poll
            for t in active:
                st = states.get(t.task_id)
                if st is not None and st.state == "RUNNING" and not t.packed:
                    self.site.collect(t.spec, final=False)
        unknown: List[_Task] = []
        need_exit: List[_Task] = []
        now = time.monotonic()
        packs: Dict[str, List[_Task]] = {}
        for t in active:
            st = states.get(t.task_id)
            if t.packed:
                packs.setdefault(t.task_id, []).append(t)
                continue
            if st is not None and st.state == "RUNNING":
                self._running(t, now)
            elif st is not None and st.state == "PENDING" and st.reason == "BeginTime" and t.running_since:
                self._lift_requeue_hold(t, now)
            if st is None:
                unknown.append(t)
            elif not st.live:
                t.terminal_since = t.terminal_since or now
                if self._wants_exit_code(t, st) and now - t.terminal_since < EXIT_CODE_WAIT_S:
                    need_exit.append(t)
                else:
                    self._end(t, st)
        self._running_packs = {}
        for task_id, members in packs.items():
            st = states.get(task_id)
            # Packs to read between squeue calls: running ones; on a shared filesystem (a read is a
            # stat) also queued ones, so a pack that starts and ends between two squeue calls is
            # reported at once.
            if st is not None and (st.state == "RUNNING" or (st.live and not self.site.remote)):
                self._running_packs[task_id] = members
            if st is None:
                unknown += members
            elif st.live:
                self._pack_progress(members, now)
            elif not st.live:
                for t in members:
                    self._end(t, st)
        if unknown or need_exit:
            self._ask_sacct(unknown, need_exit, now)

    def _pack_progress(self, members: List[_Task], now: float) -> None:
        """A running pack runs its points in order: read the record of its first live point (and
        of the next ones while they have ended), so a poll costs one read per running pack."""
        for t in sorted(members, key=lambda m: m.spec.index):
            if t.ended:
                continue
            rec = self._pack_record(t)
            if rec is None:
                return
            self._pack_started(t, rec, now)
            if "ended" not in rec:
                return
            self._end_packed(t, rec)

    def _pack_started(self, t: _Task, rec: Dict[str, Any], now: float) -> None:
        """The point's clock starts when the pack started it (its record's time)."""
        if t.running_since is None and rec.get("started"):
            t.running_since = now
            self._events.append(Started(idx=t.spec.index, backend_id=t.backend_id, time=float(rec["started"])))

    def _pack_record(self, t: _Task) -> Optional[Dict[str, Any]]:
        import json

        data = self.site.transport.read(self.site.nrun_file(t.spec, PACK_STATUS), 0, 1 << 16)
        try:
            return json.loads(data) if data else None
        except ValueError:
            return None

    def _end_packed(self, t: _Task, rec: Dict[str, Any]) -> None:
        self._pack_started(t, rec, time.monotonic())
        t.ended = True
        self.site.collect(t.spec, final=True)
        reason = rec.get("reason") or "exited"
        if reason == "cancelled" and not t.cancelling and "nrun cancel" in (rec.get("detail") or ""):
            t.cancelling = True  # another shell's `nrun cancel SWEEP/N`
        if reason == "timeout":
            detail = ""  # the runner names hydra.launcher.timeout_s
        else:
            detail = rec.get("detail") or ""
        code = rec.get("exit_code")
        if reason == "exited" and code != 0 and t.cancelling:  # scancel's SIGTERM reached the point first
            reason, detail = "cancelled", "cancelled (scancel)"
        if reason == "exited" and not detail:
            detail = procs.describe_exit(code)
        self._events.append(Ended(idx=t.spec.index, reason=reason, exit_code=code, detail=detail,
                                  time=float(rec.get("ended") or time.time())))

    def _ask_sacct(self, unknown: List["_Task"], need_exit: List["_Task"], now: float) -> None:
        found = self.slurm.sacct(list(dict.fromkeys(t.task_id for t in unknown + need_exit)))
        for t in need_exit:
            st = found.get(t.task_id)
            if st is not None and not st.live:
                self._end(t, st)
        for t in unknown:
            st = found.get(t.task_id)
            if st is not None and not st.live:
                self._end(t, st)
            elif st is None and now - t.submitted > LOST_AFTER_S:
                t.ended = True
                self._events.append(Ended(idx=t.spec.index, reason="lost",
                                          detail=f"Slurm has no record of {t.task_id}"))

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

    def _lift_requeue_hold(self, t: _Task, now: float) -> None:
        """A point that ran is pending again: requeued (ft's max_retries, or by hand). Slurm holds
        a requeued job 120 s; ft's own requeues are bounded by max_retries, so they start soon:
        once the first run's processes had REQUEUE_SETTLE_S to leave the node (a run started
        while they exit can fail)."""
        launcher = self.opts.launcher or {}
        if launcher.get("name") != "ft" or not launcher.get("max_retries"):
            return
        t.held_since = t.held_since or now
        if now - t.held_since < REQUEUE_SETTLE_S:
            return
        t.held_since = None
        out = self.site.run(["scontrol", "update", f"JobId={t.task_id}", "StartTime=now"])
        if out.returncode != 0:
            self._warn(f"hold-{t.task_id}", f"[nrun] slurm: could not lift the requeue hold of {t.task_id} "
                                            f"(it starts in 2 minutes): {(out.stderr or out.stdout).strip()}")

    def _wants_exit_code(self, t: _Task, st: slurm_state.TaskState) -> bool:
        return st.state not in ("COMPLETED", "CANCELLED") and not os.path.exists(t.spec.result_file)

    def _end(self, t: _Task, st: slurm_state.TaskState) -> None:
        if t.packed:  # the pack ended: each point's own record says how it ended, if it ran
            rec = self._pack_record(t)
            if rec is not None and "ended" in rec:
                self._end_packed(t, rec)
                return
            if st.state == "COMPLETED":
                t.ended = True
                self._events.append(Ended(idx=t.spec.index, reason="lost", detail=(
                    f"its pack {t.task_id} ended without a record of this point (pack.json)")))
                return
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
        ended = Ended(idx=t.spec.index, reason=reason, exit_code=exit_code, detail=detail)
        self._events.append(ended)
        if not os.path.exists(t.spec.result_file):  # killed: accounting says what it used (see poll)
            self._usage_wanted.append((ended, t.task_id))

    def _worker_failure(self, t: _Task) -> str:
        """Why a Slurm task died without the point's result: submitit's own record and log."""
        if t.packed:
            from nrun_core.executors.slurm.submit import pack_folder
            from nrun_core.executors.slurm.submit import Plan

            folder = pack_folder(Plan(folder=t.folder, python="", exec_worker=True, params={}))
            return f"its pack, Slurm task {t.task_id}, log {os.path.join(folder, t.task_id + '_0_log.err')}"
        folder = Path(t.folder.replace("%j", t.task_id))
        log = folder / f"{t.task_id}_0_log.err"
        text = f"Slurm task {t.task_id}, submitit log {log}"
        if self.site.remote:
            return text + f" on {self.opts.ssh['host']}"
        try:
            with open(folder / f"{t.task_id}_0_result.pkl", "rb") as f:
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


def _ray_lines(plan: Any, spec: JobSpec) -> List[str]:
    """The dry run's view of a Ray-on-Slurm point: every node's exact ``ray start``."""
    from nrun_core import wrappers
    from nrun_core.runtime import ray_node

    task = plan.tasks[0]
    cfg = task.get("launcher") or {}
    nodes = int(plan.params["nodes"])
    python = task.get("python") or plan.python
    head = "<first node>:<P of node 0>"
    tmp = ray_node.temp_dir("$SLURM_JOB_ID", "$SLURM_NODEID")  # type: ignore[arg-type]
    gpus = "$SLURM_GPUS_ON_NODE" if plan.params.get("gpus_per_node") else None
    argv = {role: _shown(wrappers.ray_start_argv(python, cfg, head=role == "head", block="$P", head_address=head,
                                                 temp_dir=tmp, num_cpus="$SLURM_CPUS_ON_NODE",  # type: ignore[arg-type]
                                                 num_gpus=gpus))  # type: ignore[arg-type]
            for role in ("head", "worker")}
    stop = ray_node.stop_file(spec.nrun_dir, "$SLURM_JOB_ID")  # type: ignore[arg-type]
    out = [f"# nrun/launcher=ray: every Slurm task is one Ray node (nrun_core/runtime/ray_node.py); "
           f"its ports: {wrappers.ray_block_formula(cfg, nodes)}",
           f"#   node 0 (head): {argv['head']}",
           f"#     once {nodes} node(s) joined (start_timeout_s={wrappers.ray_conf(cfg)['start_timeout_s']}): "
           f"the point above runs as the Ray driver, RAY_ADDRESS={head}"]
    if nodes > 1:
        out += [f"#   nodes 1..{nodes - 1}: {argv['worker']}",
                f"#     until the head writes {stop}"]
    out.append(f"#   at the end: SIGTERM to each node's `ray start --block`, SIGKILL of its process group "
               f"after {ray_node.STOP_GRACE_S:.0f} s (on scancel: at once), then anything else the task started")
    return out


def _shown(argv: List[str]) -> str:
    """A command with shell variables in it, as a shell would take it ($P left unquoted)."""
    import shlex

    return " ".join(w if "$" in w else shlex.quote(w) for w in argv)


def _launcher_task_settings(launcher: Any) -> Dict[str, Any]:
    """The nrun/launcher settings a Slurm task reads itself (ray's ports, ft's max_retries), as
    plain data for PointTask; none for the launchers that are all in the command."""
    if (launcher or {}).get("name", "direct") not in ("ray", "ft"):
        return {}
    from omegaconf import DictConfig, OmegaConf

    plain = OmegaConf.to_container(launcher, resolve=True) if isinstance(launcher, DictConfig) else dict(launcher)
    return {"launcher": plain}


def _spec_dict(spec: JobSpec) -> Dict[str, Any]:
    """A spec's fields as a plain dict for JSON or a pickle (``asdict``'s deep copy costs ~20x
    more, which shows at 10,000 points; nothing here mutates the values)."""
    return {name: getattr(spec, name) for name in JobSpec.__dataclass_fields__}


def _task_specs(task: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The spec dicts an array task of a plan runs (one, or its pack's)."""
    return task["pack"]["specs"] if "pack" in task else [task["spec"]]


def _after(plan: Any, clause: str) -> None:
    """Add a dependency clause to a plan (AND with the user's own dependencies)."""
    dep = plan.params.get("dependency")
    plan.params = {**plan.params, "dependency": f"{dep},{clause}" if dep else clause}


def _clear_pack_files(site: Any, specs: Sequence[JobSpec]) -> None:
    paths = [site.nrun_file(spec, name) for spec in specs for name in (PACK_STATUS, PACK_CANCEL)]
    if site.remote:
        site.run(["rm", "-f", *paths])
        return
    for path in paths:
        try:
            os.unlink(path)
        except (FileNotFoundError, NotADirectoryError):
            pass


def _mark_cancel(site: Any, spec: JobSpec) -> None:
    """Ask the pack runner to stop (or skip) this one point."""
    try:
        site.touch(site.nrun_file(spec, PACK_CANCEL))
    except Exception as exc:
        print(f"[nrun] slurm: could not write the cancel marker of point #{spec.index}: {exc}",
              file=sys.stderr, flush=True)
