"""One Hydra multirun as nrun sees it: the launcher's `launch()` calls land here.

The flow (see the design notes): check the options, compose and validate every point, package
the code once, turn each point into a JobSpec plus a payload for the point runtime (the composed
config and a reference to the task function: no backend composes the app again), record
everything in the store, then run the points here with a live view or hand them to a detached
supervisor, and give Hydra one JobReturn per point with the point's real return value.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobRuntime, JobStatus, configure_log, setup_globals
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

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
        self._configs: Dict[int, DictConfig] = {}
        self._recorded = False  # the sweep row exists (later batches of the sweeper add points)
        self.task_name = str(JobRuntime.instance().get("name"))
        self._secret: set = set()

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
                return self._launch(job_overrides, initial_job_idx)
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
        wrappers.validate(o.get("launcher"))
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

        configs = {idx: self._compose(idx, list(ov)) for idx, ov in zip(indices, job_overrides)}
        artifact = self._package(o.get("packager"), sweep_dir)
        executor.choose_mode(packaged=artifact is not None)
        specs = [self._spec(idx, list(ov), configs[idx], artifact) for idx, ov in zip(indices, job_overrides)]
        task = self._task_entry(executor, artifact)
        executor.validate(specs)

        if o.get("dry_run"):
            self._print_dry_run(executor, specs, artifact, configs)
            return [self._job_return(configs[s.index], s, Outcome(COMPLETED)) for s in specs]

        reused = self._resumable(specs) if o.get("resume") else {}
        self._record(sweep_dir, specs, artifact)
        for idx, outcome in reused.items():
            self.store.update_point(self.sweep_id, idx, state=COMPLETED, value_repr=repr(outcome.value)[:500],
                                    detail="resumed: completed in an earlier sweep")
        todo = [s for s in specs if s.index not in reused]
        if task is not None:
            root, base, pickler = _code_root(artifact), payload.version_base(), payload.Pickler()
            for s in todo:
                payload.write(s, payload.build(s, configs[s.index], task, code_root=root, version_base=base,
                                               task_name=self.task_name, pickler=pickler))
        rows = {s.index: Row(s.index, " ".join(s.overrides)) for s in todo}
        if not o.get("wait", True):
            from nrun_core.detach import detach

            detach(self, executor, todo, rows)
            return [self._job_return(configs[s.index], s, reused.get(s.index, Outcome(COMPLETED)))
                    for s in specs]
        outcomes = self._run_here(executor, todo, rows)
        outcomes.update(reused)
        returns = [self._job_return(configs[s.index], s, outcomes[s.index]) for s in specs]
        self._report_failures(specs, outcomes)
        return returns

    # -- composition and specs -----------------------------------------------------------
    def _compose(self, idx: int, overrides: List[str]) -> DictConfig:
        try:
            cfg = self.composer.take(self.config, overrides)
        except Exception as exc:
            raise ConfigError(f"point #{idx} ({' '.join(overrides)}) does not compose: {exc}. "
                              "Nothing was submitted.") from exc
        with open_dict(cfg):
            cfg.hydra.job.id = f"{self.sweep_id}_{idx}"
            cfg.hydra.job.num = idx
        payload.redact_secrets(cfg, self._secret)
        self._configs[idx] = cfg
        return cfg

    def _spec(self, idx: int, overrides: List[str], cfg: DictConfig, artifact: Any) -> JobSpec:
        o = self.options
        if _needs_hydra_resolver(cfg):  # costly (~10 ms): only when the dir names use ${hydra:...}
            HydraConfig.instance().set_config(cfg)
        job_dir = os.path.abspath(os.path.join(str(cfg.hydra.sweep.dir), str(cfg.hydra.sweep.subdir)))
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
        if not packager or packager.get("name", "passthrough") == "passthrough":
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

    def runner(self, executor: Executor, specs: List[JobSpec], rows: Dict[int, Row], view: Any) -> Runner:
        return Runner(self.store, self.sweep_id or "", executor, specs, rows, view,
                      retries=self.options.get("retries", 0))

    def _run_here(self, executor: Executor, specs: List[JobSpec], rows: Dict[int, Row]) -> Dict[int, Outcome]:
        view = make_view(self.options.get("progress", "auto"), self.sweep_id or "", rows)
        view.message(f"[nrun] sweep {self.sweep_id}: {len(specs)} point(s) on {self.entry.option}; "
                     f"outputs in {self.config.hydra.sweep.dir}; `nrun status {self.sweep_id}` from any shell"
                     + (f"\n[nrun] {executor.header()}" if executor.header() else ""))
        runner = self.runner(executor, specs, rows, view)
        try:
            outcomes = runner.run()
        finally:
            view.close()
        self.finish()
        return outcomes

    def finish(self) -> None:
        state = sweep_state(self.store.counts(self.sweep_id or ""))
        self.store.update_sweep(self.sweep_id or "", state=state, ended=time.time())
        if not self.store.flush(10.0):
            print(f"[nrun] sweep {self.sweep_id}: {self.store.pending} change(s) are not recorded in "
                  f"{self.store.path} yet ({self.store.last_error}); nrun keeps trying until it exits "
                  "(NRUN_STORE_WAIT_S). The points' results are in their job dirs either way, and `nrun status` "
                  "settles them from there once the store is writable", file=sys.stderr)

    # -- store ---------------------------------------------------------------------------
    def _record(self, sweep_dir: Path, specs: List[JobSpec], artifact: Any) -> None:
        secret = opts.secret_names(self.options)
        if not self._recorded:
            self.store.create_sweep(
                self.sweep_id or "", name=self.options.get("sweep_name") or str(self.config.hydra.job.name),
                executor=self.executor_name, state="RUNNING", app=_app_name(),
                cwd=os.getcwd(), argv=opts.redacted_argv(sys.argv, secret), sweep_dir=str(sweep_dir),
                conf=opts.redacted(self.options), artifact=artifact.manifest if artifact else None,
                detached=int(not self.options.get("wait", True)),
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
    def _job_return(self, cfg: DictConfig, spec: JobSpec, outcome: Outcome) -> JobReturn:
        """What Hydra's run_job returns for the point, with the value the point returned."""
        task_cfg = OmegaConf.masked_copy(cfg, [k for k in cfg.keys() if k != "hydra"])
        with read_write(cfg.hydra.runtime), open_dict(cfg.hydra.runtime):  # as run_job sets it
            cfg.hydra.runtime.output_dir = spec.job_dir
        chdir = cfg.hydra.job.chdir
        ret = JobReturn(overrides=list(cfg.hydra.overrides.task), cfg=task_cfg, hydra_cfg=cfg,
                        working_dir=spec.job_dir if chdir else os.getcwd(), task_name=self.task_name)
        if outcome.state == COMPLETED:
            ret.status, ret._return_value = JobStatus.COMPLETED, outcome.value
        else:
            ret.status = JobStatus.FAILED
            ret._return_value = PointFailed(_failure_text(spec, outcome))
        return ret

    def _report_failures(self, specs: List[JobSpec], outcomes: Dict[int, Outcome]) -> None:
        failed = [s for s in specs if outcomes[s.index].state != COMPLETED]
        if not failed:
            return
        lines = [f"[nrun] sweep {self.sweep_id}: {len(failed)} of {len(specs)} point(s) did not complete:"]
        for s in failed:
            oc = outcomes[s.index]
            lines.append(f"  #{s.index} {oc.state} ({' '.join(s.overrides)}): {oc.error}")
            lines.append(f"      logs: {s.stdout}  {s.stderr}")
        print("\n".join(lines), file=sys.stderr, flush=True)

    def _print_dry_run(self, executor: Executor, specs: List[JobSpec], artifact: Any,
                       configs: Dict[int, DictConfig]) -> None:
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
            job = configs[s.index].hydra.job
            out.append(f"# point #{s.index}: {' '.join(s.overrides)} -> {s.job_dir} "
                       f"(hydra.job.name={job.name}, hydra.job.num={job.num})")
        for req in executor.render(specs):
            out.append(f"## {req.title}\n{req.text}")
        print("\n".join(out), flush=True)

    def _check_sweeper(self, o: Mapping[str, Any]) -> None:
        target = str(self.config.hydra.sweeper.get("_target_", ""))
        if not o.get("wait", True) and not target.endswith("BasicSweeper"):
            raise ConfigError(f"hydra.launcher.wait=false with the sweeper {target}: that sweeper reads "
                              "each batch's return values to choose the next, so it must wait; "
                              "set hydra.launcher.wait=true (or use the basic sweeper)")


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


def _code_root(artifact: Any) -> str:
    """The root the payload's paths are relative to: the packed tree, or the launch dir."""
    if artifact is not None:
        return str(artifact.manifest.get("root") or artifact.manifest["source_dir"])
    return os.getcwd()


def _app_name() -> str:
    main = sys.modules.get("__main__")
    return os.path.abspath(getattr(main, "__file__", None) or sys.argv[0] or "?")


def _needs_hydra_resolver(cfg: DictConfig) -> bool:
    raw = OmegaConf.to_container(cfg.hydra.sweep, resolve=False)
    return "${hydra:" in str(raw)


def _failure_text(spec: JobSpec, outcome: Outcome) -> str:
    text = f"point #{spec.index} ({' '.join(spec.overrides)}) {outcome.state}: {outcome.error}"
    if outcome.traceback:
        text += "\n" + outcome.traceback.rstrip()
    return text + f"\n  logs: {spec.stdout}\n        {spec.stderr}"


def _plain(options: Mapping[str, Any]) -> Dict[str, Any]:
    out = {}
    for k, v in options.items():
        if OmegaConf.is_config(v):
            v = OmegaConf.to_container(v, resolve=True)
        out[k] = v
    return out

