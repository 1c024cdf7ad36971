"""One Hydra multirun as nrun sees it: the launcher's `launch()` calls land here.

The flow (see the design notes): check the options, compose and validate every point, package
the code once, turn each point into a JobSpec plus a payload for the point runtime (the composed
config and a reference to the task function: no backend composes the app again), record
everything in the store, then run the points here with a live view or hand them to a detached
supervisor, and give Hydra one JobReturn per point with the point's real return value.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobRuntime, JobStatus, configure_log, setup_globals
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from hydra.errors import CompactHydraException

from nrun_core import livelogs
from nrun_core import options as opts
from nrun_core import payload, procs, registry, taskref, wrappers
from nrun_core.errors import ConfigError, PointFailed
from nrun_core.executors.base import Executor, SweepContext
from nrun_core.progress import Row, make_view
from nrun_core.runner import Interrupted, Outcome, Runner
from nrun_core.runtime.point import run_point
from nrun_core.runtime.result import COMPLETED as R_COMPLETED, read_result
from nrun_core.spec import BASE_COMMAND, JobSpec
from nrun_core.store import CANCELLED, COMPLETED, PENDING, Store, new_sweep_id, sweep_state
from nrun_core.swept import Swept, declared_keys

log = logging.getLogger(__name__)


class Sweep:
    def __init__(self, executor: str, options: Mapping[str, Any], *, hydra_context: Any,
                 task_function: Any, config: DictConfig) -> None:
        self.entry = registry.by_name(executor)
        self.executor_name = self.entry.key
        self.options: Dict[str, Any] = _plain(options)
        self.hydra_context, self.task_function, self.config = hydra_context, task_function, config
        from nrun_core.compose import FastComposer

        self.composer = FastComposer(hydra_context.config_loader).install()
        self.sweep_id: Optional[str] = None
        self._store: Optional[Store] = None
        self._configs = PointConfigs(self._compose, keep=self.composer.keep, composer=self.composer)
        self._dirs: Dict[str, str] = {}  # resolved sweep dirs that are the same in every point
        self._cwd = os.getcwd()  # the launch dir: Hydra's working_dir of a job that does not chdir
        self._recorded = False  # the sweep row exists (later batches of the sweeper add points)
        self.task_name = str(JobRuntime.instance().get("name"))
        self._secret: set = set()
        self._swept: Optional[Swept] = None  # what tells the points apart, over every batch
        self._headed = False  # the sweep's header was printed (an Optuna sweep has many batches)
        self._stream = False  # this batch's points' output is streamed here

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store()
        return self._store

    # ------------------------------------------------------------------------------------
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> List[JobReturn]:
        """Ctrl-C and SIGTERM at any phase: what was submitted is cancelled and recorded, the
        command exits 130/143 with one line saying so."""
        with _sigterm_as_interrupt():
            try:
                try:
                    return self._launch(job_overrides, initial_job_idx)
                except BaseException:
                    if not self._recorded:  # refused (or interrupted) before anything ran
                        _drop_unused_sweep_dir(self.config.hydra.sweep.dir, self._cwd)
                    raise
            except Interrupted as stop:
                self._interrupted(stop.why, stop.exit_code)
            except KeyboardInterrupt as exc:  # before any point was submitted
                from nrun_core.runner import Terminated

                why = "SIGTERM" if isinstance(exc, Terminated) else "Ctrl-C"
                self._interrupted(why, 143 if why == "SIGTERM" else 130)
        raise AssertionError("unreachable")  # pragma: no cover

    def _interrupted(self, why: str, code: int) -> None:
        if self._recorded:
            for p in self.store.points(self.sweep_id or ""):
                if p["state"] == PENDING:
                    self.store.update_point(self.sweep_id or "", p["idx"], state=CANCELLED, ended=time.time(),
                                            error=f"cancelled by {why}", detail=f"cancelled by {why} before it started")
            self.finish()
            print(f"[nrun] sweep {self.sweep_id}: cancelled by {why}; see `nrun status {self.sweep_id}`",
                  file=sys.stderr)
        else:
            print(f"[nrun] interrupted by {why} before anything was submitted", file=sys.stderr)
        raise SystemExit(code)

    def _launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> List[JobReturn]:
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        o = self.options
        schema = registry.load(self.entry.schema)
        opts.check(o, schema)
        self._stream = livelogs.wanted(o.get("stream", "auto"), len(job_overrides), o.get("wait", True))
        wrappers.validate(o.get("launcher"), registry.load(self.entry.executor), self.entry.option)
        self._check_sweeper(o)
        typed = opts.typed(schema, o)
        self._secret = opts.secret_names(o)
        self._env_secrets_as_secret_env(o)
        if self.sweep_id is None:
            self.sweep_id = new_sweep_id()
            from nrun_core.paths import nrun_home, private_home

            private_home(nrun_home())  # before anything (artifacts, snapshots) is written there
        executor = self._executor(typed)
        executor.check_options()  # settings first: nothing is packed for a sweep that cannot run
        sweep_dir = Path(os.path.abspath(str(self.config.hydra.sweep.dir)))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        indices = [initial_job_idx + i for i in range(len(job_overrides))]

        points = [(idx, list(ov)) for idx, ov in zip(indices, job_overrides)]
        write = None  # writes a point's payload; None once they are written (or when none is needed)
        if _packs(o.get("packager")):  # every point composed before anything is packed
            dirs = {}
            with _gc_paused():
                for idx, ov in points:
                    cfg = self._configs.add(idx, ov)
                    dirs[idx] = self._job_dir(cfg)
                    self._configs.done(idx, cfg)
            artifact = self._package(o.get("packager"), sweep_dir)
            executor.choose_mode(packaged=True)
            specs = [self._spec(idx, ov, dirs[idx], artifact) for idx, ov in points]
            del dirs
            task = self._task_entry(executor, artifact)
            if task is not None and not o.get("dry_run"):
                write = self._payload_writer(task, artifact)
        else:  # one pass: each point composed, specified and its payload written, then let go
            artifact = None
            executor.choose_mode(packaged=False)
            task = self._task_entry(executor, artifact)
            now = self._payload_writer(task, artifact) if task is not None and not o.get("dry_run") else None
            specs = []
            with _gc_paused():
                for idx, ov in points:
                    cfg = self._configs.add(idx, ov)
                    specs.append(self._spec(idx, ov, self._job_dir(cfg), artifact))
                    if now is not None:
                        now(specs[-1], cfg)
                    self._configs.done(idx, cfg)
        try:
            executor.validate(specs)
        except BaseException:
            if write is None and task is not None and not o.get("dry_run"):
                _remove_payloads(specs)
            raise

        if o.get("dry_run"):
            self._print_dry_run(executor, specs, artifact)
            if not self._recorded:  # nothing ran: no sweep dir left holding only Hydra's multirun.yaml
                _drop_unused_sweep_dir(self.config.hydra.sweep.dir, self._cwd)
            with _gc_paused():
                return [self._job_return(s, Outcome(COMPLETED)) for s in specs]

        reused = self._resumable(specs) if o.get("resume") else {}
        self._record(sweep_dir, specs, artifact, executor.record())
        for idx, outcome in reused.items():
            self.store.update_point(self.sweep_id, idx, state=COMPLETED, value_repr=repr(outcome.value)[:500],
                                    detail="resumed: completed in an earlier sweep")
        todo = [s for s in specs if s.index not in reused]
        if write is not None:
            with _gc_paused():
                for s in todo:
                    cfg = self._configs.lend(s.index)
                    write(s, cfg)
                    self._configs.done(s.index, cfg)
        swept = self._swept_keys(specs)
        rows = {s.index: Row(s.index, swept.label(s.overrides), values=swept.values(s.overrides)) for s in todo}
        if not o.get("wait", True):
            from nrun_core.detach import detach

            detach(self, executor, todo, rows)
            with _gc_paused():
                return [self._job_return(s, reused.get(s.index, Outcome(COMPLETED))) for s in specs]
        outcomes = self._run_here(executor, todo, rows)
        outcomes.update(reused)
        with _gc_paused():
            returns = [self._job_return(s, outcomes[s.index]) for s in specs]
        self._report_failures(specs, outcomes)
        return returns

    # -- composition and specs -----------------------------------------------------------
    def _compose(self, idx: int, overrides: List[str], lend: bool = False) -> DictConfig:
        """The point's config as Hydra's launchers make it; `lend`: built in place on the
        composer's scratch copy when it can be (hand it back through PointConfigs.done)."""
        try:
            cfg = (self.composer.lend(self.config, overrides) if lend else None) or \
                self.composer.take(self.config, overrides)
        except Exception as exc:
            raise ConfigError(f"point #{idx} ({' '.join(overrides)}) does not compose: {exc}. "
                              "Nothing was submitted.") from exc
        from nrun_core.compose import set_field

        job = cfg._get_node("hydra")._get_node("job")  # what Hydra's launchers set
        set_field(job, "id", f"{self.sweep_id}_{idx}")
        set_field(job, "num", idx)
        payload.redact_secrets(cfg, self._secret)
        return cfg

    def _payload_writer(self, task: Dict[str, Any], artifact: Any) -> Callable[[JobSpec, DictConfig], None]:
        """Writes a point's payload (its config and the task reference) into its nrun dir."""
        root, base, pickler = _code_root(artifact), payload.version_base(), payload.Pickler()

        def write(spec: JobSpec, cfg: DictConfig) -> None:
            payload.write(spec, payload.build(spec, cfg, task, code_root=root, version_base=base,
                                              task_name=self.task_name, pickler=pickler))
        return write

    def _job_dir(self, cfg: DictConfig) -> str:
        """Hydra's output dir of the point (sweep dir / subdir), as composed."""
        sweep = cfg.hydra.sweep
        raw = [sweep._get_node(k)._value() for k in ("dir", "subdir")]
        if any("${hydra:" in str(r) for r in raw):  # costly (~10 ms): only when the dir names use it
            HydraConfig.instance().set_config(cfg)
        return os.path.abspath(os.path.join(*(self._dir_part(sweep, k, r) for k, r in zip(("dir", "subdir"), raw))))

    def _dir_part(self, sweep: DictConfig, key: str, raw: Any) -> str:
        """hydra.sweep.dir or .subdir resolved, without OmegaConf's grammar (~0.3 ms a value) for
        the usual forms: Hydra's default subdir `${hydra.job.num}`, and a dir whose only
        interpolations are `${now:...}` (cached: the same in every point of the sweep)."""
        if raw == "${hydra.job.num}":
            return str(sweep._get_parent().job.num)
        hit = self._dirs.get(raw) if isinstance(raw, str) else None
        if hit is None:
            hit = str(sweep[key])
            if isinstance(raw, str) and "\\" not in raw and "${" not in _NOW.sub("", raw):
                self._dirs[raw] = hit
        return hit

    def _spec(self, idx: int, overrides: List[str], job_dir: str, artifact: Any) -> JobSpec:
        o = self.options
        command = wrappers.wrap(list(BASE_COMMAND), o.get("launcher"), nodes=o.get("nodes", 1),
                                gpus_per_node=o.get("gpus_per_node", 0), run_id=f"{self.sweep_id}-{idx}")
        return JobSpec(
            sweep_id=self.sweep_id or "", index=idx, overrides=overrides, job_dir=job_dir,
            command=command, workdir=artifact.workdir if artifact is not None else ".",
            code_dir=None if artifact is not None else os.getcwd(),
            env={str(k): str(v) for k, v in (o.get("env") or {}).items() if k not in self._secret},
            secret_env=sorted(self._secret & set(os.environ)), nodes=o.get("nodes", 1),
            gpus_per_node=o.get("gpus_per_node", 0), cpus_per_task=o.get("cpus_per_task"),
            timeout_s=o.get("timeout_s"), artifact=artifact.digest if artifact else None,
            launcher=(o.get("launcher") or {}).get("name", "direct"))

    def _env_secrets_as_secret_env(self, o: Mapping[str, Any]) -> None:
        """Secret-looking names in ``env`` travel as secret_env does: through this process's
        environment at the last moment (never in a spec, a pickle, a script or the store)."""
        for name, value in (o.get("env") or {}).items():
            if name in self._secret:
                os.environ[str(name)] = str(value)

    def _task_entry(self, executor: Executor, artifact: Any) -> Optional[Dict[str, Any]]:
        """The payload's reference to the task function; None when every point forks."""
        if executor.fork:
            return None
        ref = taskref.describe(self.task_function, _code_root(artifact))
        entry = ref.for_backend(self.task_function, same_python=executor.same_python,
                                executor=f"hydra/launcher={self.entry.option}")
        outside = [p for p in (entry.get("file"), entry.get("root")) if p and os.path.isabs(p)]
        if outside and artifact is not None and not executor.sees_launcher_files:
            raise ConfigError(
                f"the task function {ref.name} lives in {entry['file']}, outside the packaged directory "
                f"{_code_root(artifact)}, so hydra/launcher={self.entry.option} would not have it. Fix: "
                "launch from the app's directory (or a parent of it), set hydra.launcher.packager.base_dir "
                "to include it, or use nrun/packager=passthrough")
        executor.ctx.host_dirs[:] = sorted({os.path.dirname(p) if p.endswith(".py") else p for p in outside})
        return entry

    def _package(self, packager: Optional[Mapping[str, Any]], sweep_dir: Path) -> Any:
        if not _packs(packager):
            return None
        from nrun_core import packaging

        packaging.validate(packager)
        # Hydra created the sweep dir before the launch: never pack (or call dirty) its outputs
        artifact = packaging.package(packager, source_dir=Path(os.getcwd()), extra_exclude=[sweep_dir])
        from nrun_core.paths import nrun_home

        packaging.unpack(artifact.path, nrun_home() / "snapshots" / artifact.digest)
        return artifact

    def _executor(self, typed: Any) -> Executor:
        cls = registry.load(self.entry.executor)
        ctx = SweepContext(sweep_id=self.sweep_id or "", configs=self._configs,
                           run_in_process=self._run_in_process)
        return cls(typed, ctx)

    # -- running -------------------------------------------------------------------------
    def _run_in_process(self, spec: JobSpec) -> int:
        """Body of a forked point: the point runtime on the config composed here."""
        cfg = self._configs[spec.index]
        return run_point(self.task_function, cfg, result_file=spec.result_file, ident=spec.identity,
                         hydra_context=self.hydra_context)

    def runner(self, executor: Executor, specs: List[JobSpec], rows: Dict[int, Row], view: Any,
               logs: Any = None) -> Runner:
        return Runner(self.store, self.sweep_id or "", executor, specs, rows, view,
                      retries=self.options.get("retries", 0), logs=logs)

    def _swept_keys(self, specs: List[JobSpec]) -> Swept:
        """Learn this batch's points: what differs between them (and the earlier batches')."""
        if self._swept is None:
            hydra = self.config.hydra
            self._swept = Swept(declared_keys(list(hydra.overrides.task), hydra.get("sweeper")))
        for s in specs:
            self._swept.add(s.overrides)
        return self._swept

    def _run_here(self, executor: Executor, specs: List[JobSpec], rows: Dict[int, Row]) -> Dict[int, Outcome]:
        swept = self._swept or Swept()
        view = make_view(self.options.get("progress", "auto"), self.sweep_id or "", rows, keys=swept.keys())
        if not self._headed:  # once per sweep: a sweeper such as Optuna launches batch after batch
            self._headed = True
            where = os.path.normpath(str(self.config.hydra.sweep.dir))
            basic = str(self.config.hydra.sweeper.get("_target_", "")).endswith("BasicSweeper")
            batch = "" if basic else " in its first batch"  # Optuna & co. choose the next ones as they go
            view.message(f"[nrun] sweep {self.sweep_id}: {len(specs)} point(s){batch} on {self.entry.option}, "
                         f"outputs in {where}\n[nrun] from any shell: nrun status {self.sweep_id}"
                         + (f"\n[nrun] {executor.header()}" if executor.header() else ""))
        logs = self._live_logs(view, rows)
        runner = self.runner(executor, specs, rows, view, logs=logs)
        try:
            outcomes = runner.run()
        finally:
            view.close()
            if logs is not None:
                logs.close()
        self.finish()
        return outcomes

    def _live_logs(self, view: Any, rows: Dict[int, Row]) -> Optional[livelogs.LogTail]:
        """The points' output on this terminal (hydra.launcher.stream), read where `nrun logs`
        reads it: the executor's Control."""
        if not self._stream:
            return None
        from nrun_core.reconcile import control

        ctl = control(self.store.sweep(self.sweep_id or ""))
        return livelogs.LogTail(ctl, self.sweep_id or "", view.output, lambda idx: rows[idx].label)

    def finish(self) -> None:
        state = sweep_state(self.store.counts(self.sweep_id or ""))
        self.store.update_sweep(self.sweep_id or "", state=state, ended=time.time())
        if not self.store.flush(10.0):
            print(f"[nrun] sweep {self.sweep_id}: {self.store.pending} change(s) are not recorded in "
                  f"{self.store.path} yet ({self.store.last_error}); nrun keeps trying until it exits "
                  "(NRUN_STORE_WAIT_S). The points' results are in their job dirs either way, and `nrun status` "
                  "settles them from there once the store is writable", file=sys.stderr)

    # -- store ---------------------------------------------------------------------------
    def _record(self, sweep_dir: Path, specs: List[JobSpec], artifact: Any, info: Dict[str, Any]) -> None:
        secret = opts.secret_names(self.options)
        if not self._recorded:
            self.store.create_sweep(
                self.sweep_id or "", name=self.options.get("sweep_name") or str(self.config.hydra.job.name),
                executor=self.executor_name, state="RUNNING", app=_app_name(),
                cwd=os.getcwd(), argv=opts.redacted_argv(sys.argv, secret), sweep_dir=str(sweep_dir),
                conf=opts.redacted(self.options), artifact=artifact.manifest if artifact else None,
                detached=int(not self.options.get("wait", True)), info=info or None,
                supervisor_pid=os.getpid(), supervisor_start=procs.start_time(os.getpid()))
            self._recorded = True
        else:
            self.store.update_sweep(self.sweep_id or "", state="RUNNING")
        rows = []
        for s in specs:
            stored = s.as_dict()
            stored["env"] = {k: ("<redacted>" if k in secret else v) for k, v in s.env.items()}
            stored["overrides"] = opts.redacted_argv(s.overrides, secret)
            rows.append({"idx": s.index, "overrides": stored["overrides"], "spec": json.dumps(stored),
                         "stdout": s.stdout, "stderr": s.stderr})
        self.store.add_points(self.sweep_id or "", rows)
        env_secrets = sorted(k for k in (self.options.get("env") or {}) if k in secret)
        if env_secrets:
            print(f"[nrun] warning: hydra.launcher.env holds {', '.join(env_secrets)}: nrun passes them like "
                  "secret_env and stores and shows them as <redacted>, but Hydra itself saves hydra.launcher "
                  "in the sweep dir's multirun.yaml; pass secrets with hydra.launcher.secret_env=[NAME] "
                  "(the value from your shell) instead", file=sys.stderr, flush=True)

    def _resumable(self, specs: List[JobSpec]) -> Dict[int, Outcome]:
        """Points of this sweep's name that completed before with the same overrides, whose own
        result file (tied to that sweep, point and overrides) is still on disk."""
        name = self.options.get("sweep_name") or str(self.config.hydra.job.name)
        wanted = {s.overrides_digest: s for s in specs}
        reused: Dict[int, Outcome] = {}
        for sweep in self.store.sweeps(limit=200):  # newest first: the latest result wins
            if sweep["name"] != name or sweep["id"] == self.sweep_id:
                continue
            for p in self.store.points(sweep["id"]):
                if p["state"] != COMPLETED or not p["spec"]:
                    continue
                prev = JobSpec.from_json(p["spec"])
                spec = wanted.get(prev.overrides_digest)
                if spec is None or spec.index in reused:
                    continue
                result = read_result(prev.result_file, expect=prev.identity)
                if result and result["status"] == R_COMPLETED:
                    reused[spec.index] = Outcome(COMPLETED, value=result.get("value"))
        return reused

    # -- results -------------------------------------------------------------------------
    def _job_return(self, spec: JobSpec, outcome: Outcome) -> JobReturn:
        """What Hydra's run_job returns for the point, with the value the point returned. Its
        configs are made when first read (a sweeper rarely reads them; made for 10,000 points
        at once they would cost seconds and ~1 GB)."""
        ret = _PointReturn(lambda: _return_configs(self._configs[spec.index], spec.job_dir),
                           overrides=self.composer.task_overrides(spec.overrides),
                           working_dir=spec.job_dir if self._configs.chdir(spec.index) else self._cwd,
                           task_name=self.task_name)
        if outcome.state == COMPLETED:
            ret.status, ret._return_value = JobStatus.COMPLETED, outcome.value
        else:
            ret.status = JobStatus.FAILED
            ret._return_value = ReportedFailure(_failure_text(spec, outcome, self.sweep_id or ""),
                                                traceback=outcome.traceback)
        return ret

    def _report_failures(self, specs: List[JobSpec], outcomes: Dict[int, Outcome]) -> None:
        """The one failure report: each failed point, why, its traceback (the first one; the
        rest are in their stderr.log) unless it was streamed above, and where its logs are."""
        failed = [s for s in specs if outcomes[s.index].state != COMPLETED]
        if not failed:
            return
        swept = self._swept or Swept()
        lines = [f"[nrun] sweep {self.sweep_id}: {len(failed)} of {len(specs)} point(s) did not complete:"]
        shown = 0
        for s in failed:
            oc = outcomes[s.index]
            label = swept.label(s.overrides)
            lines.append(f"  #{s.index} {oc.state}" + (f" ({label})" if label else "") + f": {oc.error}")
            if oc.traceback and not self._stream and shown < TRACEBACKS_SHOWN:
                shown += 1
                lines += ["      " + t for t in oc.traceback.rstrip().splitlines()]
            lines.append(f"      logs: {s.stdout}  {s.stderr}")
        hidden = sum(1 for s in failed if outcomes[s.index].traceback) - shown
        if hidden and not self._stream:
            lines.append(f"  ({hidden} more traceback(s) in their stderr.log; `nrun logs {self.sweep_id} "
                         "POINT --stderr` prints one)")
        print("\n".join(lines), file=sys.stderr, flush=True)

    def _print_dry_run(self, executor: Executor, specs: List[JobSpec], artifact: Any) -> None:
        task = taskref.describe(self.task_function, _code_root(artifact))
        where = (task.ref or {}).get("file") or task.why_not
        out = [f"# nrun dry run: {self.entry.option}, {len(specs)} point(s); nothing was submitted",
               f"# task function: {task.name} ({where}); each point runs it on the config composed "
               "here (the payload), through the point runtime"]
        if artifact is not None:
            m = artifact.manifest
            out.append(f"# artifact {artifact.digest[:16]} ({m.get('commit') or 'no commit'}, "
                       f"dirty={m.get('dirty')}) {artifact.path}")
        for s in specs:
            out.append(f"# point #{s.index}: {' '.join(s.overrides)} -> {s.job_dir} "
                       f"(hydra.job.name={self._configs.name(s.index)}, hydra.job.num={s.index})")
        for req in executor.render(specs):
            out.append(f"## {req.title}\n{req.text}")
        print("\n".join(out), flush=True)

    def _check_sweeper(self, o: Mapping[str, Any]) -> None:
        target = str(self.config.hydra.sweeper.get("_target_", ""))
        if not o.get("wait", True) and not target.endswith("BasicSweeper"):
            raise ConfigError(f"hydra.launcher.wait=false with the sweeper {target}: that sweeper reads "
                              "each batch's return values to choose the next, so it must wait; "
                              "set hydra.launcher.wait=true (or use the basic sweeper)")


class PointConfigs(Mapping):
    """The composed config of each point of the sweep, by index (what forked points run and
    executors read). Up to `keep` of them are held (NRUN_KEEP_CONFIGS, default compose.KEEP);
    past that a point's config is composed again when asked for (~1 ms on the fast path), so a
    10,000-point sweep does not hold ~1 GB of configs. What the launcher needs of every point
    (its overrides, job name, chdir) is kept apart."""

    def __init__(self, compose: Callable[..., DictConfig], keep: int, composer: Any) -> None:
        self._compose, self._keep, self._composer = compose, keep, composer
        self._points: Dict[int, Tuple[List[str], str, bool]] = {}
        self._held: Dict[int, DictConfig] = {}

    def add(self, idx: int, overrides: List[str]) -> DictConfig:
        """Compose the point (errors surface here, before anything is packed or submitted); the
        caller hands the config back with `done` before adding the next."""
        hold = len(self._held) < self._keep
        cfg = self._compose(idx, overrides, lend=not hold)
        self._points[idx] = (overrides, str(cfg.hydra.job.name), bool(cfg.hydra.job.chdir))
        if hold:
            self._held[idx] = cfg
        return cfg

    def lend(self, idx: int) -> DictConfig:
        """The point's config for a use that ends with `done` before the next one."""
        cfg = self._held.get(idx)
        return cfg if cfg is not None else self._compose(idx, self._points[idx][0], lend=True)

    def done(self, idx: int, cfg: DictConfig) -> None:
        """The launcher is done with a config it asked for: let it go now unless it is held."""
        if self._held.get(idx) is not cfg and not self._composer.give_back(cfg):
            from nrun_core.compose import dispose

            dispose(cfg)

    def name(self, idx: int) -> str:
        return self._points[idx][1]

    def chdir(self, idx: int) -> bool:
        return self._points[idx][2]

    def __getitem__(self, idx: int) -> DictConfig:
        cfg = self._held.get(idx)
        if cfg is None:
            if idx not in self._points:
                raise KeyError(idx)
            cfg = self._compose(idx, self._points[idx][0])
        return cfg

    def __contains__(self, idx: object) -> bool:
        return idx in self._points

    def __iter__(self) -> Iterator[int]:
        return iter(self._points)

    def __len__(self) -> int:
        return len(self._points)


class _PointReturn(JobReturn):
    """A JobReturn whose configs (cfg, hydra_cfg) are composed when first read."""

    def __init__(self, make: Callable[[], Tuple[DictConfig, DictConfig]], **fields: Any) -> None:
        super().__init__(**fields)
        self.__dict__["_make"] = make

    @property  # type: ignore[override]
    def return_value(self) -> Any:
        """Hydra's, without its "Error executing job with overrides" line: nrun's summary has
        already named the failed point."""
        if self.status == JobStatus.FAILED and isinstance(self._return_value, ReportedFailure):
            raise self._return_value
        return JobReturn.return_value.fget(self)  # type: ignore[attr-defined]

    @return_value.setter
    def return_value(self, value: Any) -> None:
        self._return_value = value

    def _configs(self) -> None:
        make = self.__dict__.pop("_make", None)
        if make is not None:
            self.__dict__["_cfg"], self.__dict__["_hydra_cfg"] = make()

    @property  # type: ignore[override]
    def cfg(self) -> Any:
        self._configs()
        return self.__dict__.get("_cfg")

    @cfg.setter
    def cfg(self, value: Any) -> None:
        self._configs()
        self.__dict__["_cfg"] = value

    @property  # type: ignore[override]
    def hydra_cfg(self) -> Any:
        self._configs()
        return self.__dict__.get("_hydra_cfg")

    @hydra_cfg.setter
    def hydra_cfg(self, value: Any) -> None:
        self._configs()
        self.__dict__["_hydra_cfg"] = value


def _return_configs(cfg: DictConfig, job_dir: str) -> Tuple[DictConfig, DictConfig]:
    """(cfg, hydra_cfg) of the point's JobReturn, as Hydra's run_job makes them."""
    task_cfg = OmegaConf.masked_copy(cfg, [k for k in cfg.keys() if k != "hydra"])
    with read_write(cfg.hydra.runtime), open_dict(cfg.hydra.runtime):  # as run_job sets it
        cfg.hydra.runtime.output_dir = job_dir
    return task_cfg, cfg


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Bulk work on thousands of points without the cyclic collector: the configs made there
    are either held or disposed of (freed by reference counting), so it would only rescan
    the held ones, again and again, for nothing. It runs again afterwards as usual."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


class _sigterm_as_interrupt:
    """SIGTERM (kill, a CI timeout, a batch system's job end) does what Ctrl-C does: cancel
    what was started, record it, exit. Only in the main thread, restored afterwards."""

    def __enter__(self) -> None:
        self.saved = None
        try:
            self.saved = signal.signal(signal.SIGTERM, _raise_terminated)
        except ValueError:  # not the main thread
            pass

    def __exit__(self, *exc: Any) -> None:
        if self.saved is not None:
            signal.signal(signal.SIGTERM, self.saved)


def _raise_terminated(signum: int, frame: Any) -> None:
    from nrun_core.runner import Terminated

    raise Terminated()


def _packs(packager: Optional[Mapping[str, Any]]) -> bool:
    """Does the sweep pack its code (any packager but passthrough)?"""
    return bool(packager) and packager.get("name", "passthrough") != "passthrough"


def _remove_payloads(specs: List[JobSpec]) -> None:
    """The payloads written for a sweep the executor then refused: their files and the dirs
    made for them (a job dir only if nothing else is in it)."""
    for s in specs:
        try:
            os.unlink(s.payload_file)
        except OSError:
            pass
        for d in (s.nrun_dir, s.nrun_dir.parent, Path(s.job_dir)):
            try:
                os.rmdir(d)
            except OSError:
                break


def _code_root(artifact: Any) -> str:
    """The root the payload's paths are relative to: the packed tree, or the launch dir."""
    if artifact is not None:
        return str(artifact.manifest.get("root") or artifact.manifest["source_dir"])
    return os.getcwd()


def _app_name() -> str:
    main = sys.modules.get("__main__")
    return os.path.abspath(getattr(main, "__file__", None) or sys.argv[0] or "?")


_NOW = re.compile(r"\$\{now:[^${}\\]*\}")


TRACEBACKS_SHOWN = 1  # many failing points usually share a cause: one traceback, then one line each


class ReportedFailure(PointFailed, CompactHydraException):
    """A failed point's return value, raised when a sweeper reads it. nrun's own summary has
    already named the point, its error, traceback and logs, so Hydra prints only this one line
    (a CompactHydraException: no second traceback); the traceback stays on `.traceback`."""

    def __init__(self, text: str, traceback: str = "") -> None:
        super().__init__(text)
        self.traceback = traceback


def _failure_text(spec: JobSpec, outcome: Outcome, sweep_id: str) -> str:
    return (f"point #{spec.index} ({' '.join(spec.overrides)}) {outcome.state}: {outcome.error} "
            f"(details above; `nrun status {sweep_id}`)")


def _drop_unused_sweep_dir(configured: Any, launch_dir: str) -> None:
    """Hydra writes multirun.yaml into the sweep dir before it calls the launcher; a sweep that
    never ran (a dry run, a refused submission) leaves that dir with nothing else in it. Remove
    it then, and the parents that are left empty (Hydra made them), never the launch dir nor
    anything outside it; a dir holding anything more is left alone."""
    try:
        top = os.path.abspath(os.path.join(launch_dir, str(configured)))
    except Exception:  # the dir's name does not resolve: nothing we can safely touch
        return
    if not os.path.isdir(top):
        return
    for root, _dirs, files in os.walk(top):
        if any(not (root == top and f == "multirun.yaml") for f in files):
            return
    try:
        if os.path.exists(os.path.join(top, "multirun.yaml")):
            os.unlink(os.path.join(top, "multirun.yaml"))
        for root, _dirs, _files in sorted(os.walk(top), key=lambda t: -len(t[0])):
            os.rmdir(root)
        parent, stop = os.path.dirname(top), os.path.abspath(launch_dir)
        while parent.startswith(stop + os.sep) and not os.listdir(parent):
            os.rmdir(parent)
            parent = os.path.dirname(parent)
    except OSError:
        pass


def _plain(options: Mapping[str, Any]) -> Dict[str, Any]:
    out = {}
    for k, v in options.items():
        if OmegaConf.is_config(v):
            v = OmegaConf.to_container(v, resolve=True)
        out[k] = v
    return out

