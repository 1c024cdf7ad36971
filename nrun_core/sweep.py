"""One Hydra multirun as nrun sees it: the launcher's `launch()` calls land here.

The flow (see the design notes): compose and validate every point, package the code once,
turn each point into a JobSpec, wrap it with the chosen launcher, record everything in the
store, then either run it here with a live view or hand it to a detached supervisor, and give
Hydra one JobReturn per point with the point's real return value.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus, configure_log, run_job, setup_globals
from omegaconf import DictConfig, OmegaConf, open_dict

from nrun_core import options as opts
from nrun_core import wrappers
from nrun_core.command import AppRef, point_command
from nrun_core.conf import DockerConf, LocalConf, SlurmConf
from nrun_core.errors import ConfigError, NrunError, PointFailed
from nrun_core.executors import executor_class
from nrun_core.progress import Row, make_view, QuietView
from nrun_core.runner import Interrupted, Outcome, Runner
from nrun_core.runtime.result import COMPLETED as R_COMPLETED, FAILED as R_FAILED, read_result, write_result
from nrun_core.spec import JobSpec
from nrun_core.store import COMPLETED, Store, new_sweep_id, sweep_state
from nrun_core import procs

log = logging.getLogger(__name__)

SCHEMAS: Dict[str, Any] = {"local": LocalConf, "slurm": SlurmConf, "docker": DockerConf}


class Sweep:
    def __init__(self, executor: str, options: Mapping[str, Any], *, hydra_context: Any,
                 task_function: Any, config: DictConfig) -> None:
        self.executor_name = executor
        self.options: Dict[str, Any] = _plain(options)
        self.hydra_context, self.task_function, self.config = hydra_context, task_function, config
        from nrun_core.compose import FastComposer

        FastComposer(hydra_context.config_loader).install()
        self.sweep_id: Optional[str] = None
        self._store: Optional[Store] = None
        self._configs: Dict[int, DictConfig] = {}
        self._recorded = False  # the sweep row exists (later batches of the sweeper add points)

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store()
        return self._store

    # ------------------------------------------------------------------------------------
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> List[JobReturn]:
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        o = self.options
        opts.check(o, SCHEMAS[self.executor_name])
        wrappers.validate(o.get("launcher"))
        self._check_sweeper(o)
        sweep_dir = Path(os.path.abspath(str(self.config.hydra.sweep.dir)))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if self.sweep_id is None:
            self.sweep_id = new_sweep_id()
        indices = [initial_job_idx + i for i in range(len(job_overrides))]

        configs = {idx: self._compose(idx, list(ov)) for idx, ov in zip(indices, job_overrides)}
        artifact = self._package(o.get("packager"))
        specs = [self._spec(idx, list(ov), configs[idx], artifact) for idx, ov in zip(indices, job_overrides)]
        executor = self._executor(specs, artifact)
        executor.validate(specs)

        if o.get("dry_run"):
            self._print_dry_run(executor, specs, artifact)
            return [self._job_return(configs[s.index], s, Outcome(COMPLETED)) for s in specs]

        reused = self._resumable(specs) if o.get("resume") else {}
        self._record(sweep_dir, specs, artifact)
        for idx, outcome in reused.items():
            self.store.update_point(self.sweep_id, idx, state=COMPLETED, value_repr=repr(outcome.value)[:500],
                                    detail="resumed: completed in an earlier sweep")
        todo = [s for s in specs if s.index not in reused]
        rows = {s.index: Row(s.index, " ".join(s.overrides)) for s in todo}
        if not o.get("wait", True):
            self._detach(executor, todo, rows)
            return [self._job_return(configs[s.index], s, reused.get(s.index, Outcome(COMPLETED)))
                    for s in specs]
        outcomes = self._run_here(executor, todo, rows)
        outcomes.update(reused)
        returns = [self._job_return(configs[s.index], s, outcomes[s.index]) for s in specs]
        self._report_failures(specs, outcomes)
        return returns

    # -- composition and specs -----------------------------------------------------------
    def _compose(self, idx: int, overrides: List[str]) -> DictConfig:
        loader = self.hydra_context.config_loader
        try:
            cfg = loader.load_sweep_config(self.config, overrides)
        except Exception as exc:
            raise ConfigError(f"point #{idx} ({' '.join(overrides)}) does not compose: {exc}. "
                              "Nothing was submitted.") from exc
        with open_dict(cfg):
            cfg.hydra.job.id = f"{self.sweep_id}_{idx}"
            cfg.hydra.job.num = idx
        self._configs[idx] = cfg
        return cfg

    def _spec(self, idx: int, overrides: List[str], cfg: DictConfig, artifact: Any) -> JobSpec:
        o = self.options
        if _needs_hydra_resolver(cfg):  # costly (~10 ms): only when the dir names use ${hydra:...}
            HydraConfig.instance().set_config(cfg)
        job_dir = os.path.abspath(os.path.join(str(cfg.hydra.sweep.dir), str(cfg.hydra.sweep.subdir)))
        app, workdir = AppRef.detect(), os.getcwd()
        if artifact is not None:
            root = self._snapshot_root(artifact)
            workdir = os.path.join(root, artifact.workdir)
            app = app.relocated(artifact.manifest.get("root") or artifact.manifest["source_dir"], root)
        command = point_command(sys.executable, app, overrides, job_dir, idx, str(cfg.hydra.job.id))
        command = wrappers.wrap(command, o.get("launcher"), nodes=o.get("nodes", 1),
                                gpus_per_node=o.get("gpus_per_node", 0), run_id=f"{self.sweep_id}-{idx}")
        return JobSpec(
            sweep_id=self.sweep_id or "", index=idx, overrides=overrides, job_dir=job_dir,
            command=command, workdir=workdir, env={str(k): str(v) for k, v in (o.get("env") or {}).items()},
            secret_env=list(o.get("secret_env") or []), nodes=o.get("nodes", 1),
            gpus_per_node=o.get("gpus_per_node", 0), cpus_per_task=o.get("cpus_per_task"),
            timeout_s=o.get("timeout_s"), artifact=artifact.digest if artifact else None,
            launcher=(o.get("launcher") or {}).get("name", "direct"))

    def _package(self, packager: Optional[Mapping[str, Any]]) -> Any:
        if not packager or packager.get("name", "passthrough") == "passthrough":
            return None
        from nrun_core import packaging

        packaging.validate(packager)
        # Hydra created the sweep dir before the launch: never pack (or call dirty) its outputs
        sweep_dir = os.path.abspath(str(self.config.hydra.sweep.dir))
        return packaging.package(packager, source_dir=Path(os.getcwd()), extra_exclude=[sweep_dir])

    def _snapshot_root(self, artifact: Any) -> str:
        from nrun_core import packaging
        from nrun_core.paths import nrun_home

        dest = nrun_home() / "snapshots" / artifact.digest
        return str(packaging.unpack(artifact.path, dest))

    def _executor(self, specs: List[JobSpec], artifact: Any) -> Any:
        cls = executor_class(self.executor_name)
        if self.executor_name == "local":
            mode = self.options.get("mode", "auto")
            if mode not in ("auto", "fork", "command"):
                raise ConfigError(f"hydra.launcher.mode={mode!r}: choose auto, fork or command")
            can_fork = artifact is None and all(s.launcher == "direct" for s in specs)
            if mode == "fork" and not can_fork:
                raise ConfigError("hydra.launcher.mode=fork runs the task in the launcher's own tree: "
                                  "it needs nrun/launcher=direct and nrun/packager=passthrough; "
                                  "use mode=auto or mode=command")
            fork = mode == "fork" or (mode == "auto" and can_fork)
            return cls(self.options, run_in_process=self._run_in_process if fork else None)
        if getattr(cls, "wants_configs", False):  # runs points from the configs composed here
            return cls(self.options, configs=self._configs)
        return cls(self.options)

    # -- running -------------------------------------------------------------------------
    def _run_in_process(self, spec: JobSpec) -> int:
        """Body of a forked point: Hydra's own run_job, then the result file."""
        cfg = self._configs[spec.index]
        # run_job sets HydraConfig itself (twice): setting it here too would cost ~10 ms a point
        ret = run_job(hydra_context=self.hydra_context, task_function=self.task_function, config=cfg,
                      job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
        if ret.status == JobStatus.COMPLETED:
            write_result(spec.result_file, status=R_COMPLETED, value=ret._return_value)
            return 0
        error = ret._return_value
        traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
        write_result(spec.result_file, status=R_FAILED, error=error)
        return 1

    def _run_here(self, executor: Any, specs: List[JobSpec], rows: Dict[int, Row]) -> Dict[int, Outcome]:
        view = make_view(self.options.get("progress", "auto"), self.sweep_id or "", rows)
        view.message(f"[nrun] sweep {self.sweep_id}: {len(specs)} point(s) on nrun_{self.executor_name}; "
                     f"outputs in {self.config.hydra.sweep.dir}; `nrun status {self.sweep_id}` from any shell")
        runner = Runner(self.store, self.sweep_id or "", executor, specs, rows, view,
                        retries=self.options.get("retries", 0))
        try:
            outcomes = runner.run()
        except Interrupted:
            view.close()
            self._finish_sweep()
            print(f"[nrun] sweep {self.sweep_id}: cancelled by Ctrl-C; see `nrun status {self.sweep_id}`",
                  file=sys.stderr)
            raise SystemExit(130)
        view.close()
        self._finish_sweep()
        return outcomes

    def _detach(self, executor: Any, specs: List[JobSpec], rows: Dict[int, Row]) -> None:
        """Hand the points to a supervisor process that outlives the launcher (double fork)."""
        from nrun_core.paths import nrun_home

        started = bool(getattr(executor, "start_before_detach", False))
        if started:  # submit here: a refused request is the user's error, not a supervisor log line
            Runner(self.store, self.sweep_id or "", executor, specs, rows, QuietView(self.sweep_id or "", rows),
                   retries=self.options.get("retries", 0)).submit()
        log_file = nrun_home() / "supervisors" / f"{self.sweep_id}.log"
        log_file.parent.mkdir(parents=True, exist_ok=True)
        r, w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        if self._store is not None:  # SQLite connections must not cross a fork: both sides reopen
            self._store.close()
            self._store = None
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                os.close(r)
                os.setsid()
                if os.fork():
                    os._exit(0)
                fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                sys.stdout = open(1, "w", buffering=1, closefd=False)
                sys.stderr = open(2, "w", buffering=1, closefd=False)
                self._store = Store()
                self._store.update_sweep(self.sweep_id or "", supervisor_pid=os.getpid(),
                                         supervisor_start=procs.start_time(os.getpid()))
                os.write(w, b"ok")
                os.close(w)
                from nrun_core.progress import LinesView
                Runner(self._store, self.sweep_id or "", executor, specs, rows,
                       LinesView(self.sweep_id or "", rows), retries=self.options.get("retries", 0)).run(
                           submitted=started)
                self._finish_sweep()
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                os._exit(code)
        os.close(w)
        os.waitpid(pid, 0)
        ok = os.read(r, 8)
        os.close(r)
        if ok != b"ok":
            raise NrunError(f"the detached supervisor of sweep {self.sweep_id} did not start; see {log_file}")
        print(f"[nrun] sweep {self.sweep_id}: {len(specs)} point(s) submitted, running detached.\n"
              f"       follow: nrun status {self.sweep_id}   logs: nrun logs {self.sweep_id} [POINT] --follow"
              f"   cancel: nrun cancel {self.sweep_id}", file=sys.stderr)

    def _finish_sweep(self) -> None:
        state = sweep_state(self.store.counts(self.sweep_id or ""))
        self.store.update_sweep(self.sweep_id or "", state=state, ended=time.time())

    # -- store ---------------------------------------------------------------------------
    def _record(self, sweep_dir: Path, specs: List[JobSpec], artifact: Any) -> None:
        if not self._recorded:
            self.store.create_sweep(
                self.sweep_id or "", name=self.options.get("sweep_name") or str(self.config.hydra.job.name),
                executor=self.executor_name, state="RUNNING", app=AppRef.detect().argv()[0],
                cwd=os.getcwd(), argv=sys.argv, sweep_dir=str(sweep_dir), conf=opts.redacted(self.options),
                artifact=artifact.manifest if artifact else None, detached=int(not self.options.get("wait", True)),
                supervisor_pid=os.getpid(), supervisor_start=procs.start_time(os.getpid()))
            self._recorded = True
        else:
            self.store.update_sweep(self.sweep_id or "", state="RUNNING")
        secret = set(opts.secret_looking_env(self.options))
        rows = []
        for s in specs:
            stored = s.as_dict()
            stored["env"] = {k: ("<redacted>" if k in secret else v) for k, v in s.env.items()}
            rows.append({"idx": s.index, "overrides": s.overrides, "spec": json.dumps(stored),
                         "stdout": s.stdout, "stderr": s.stderr})
        self.store.add_points(self.sweep_id or "", rows)
        if secret:
            log.warning("hydra.launcher.env holds %s: values are redacted in nrun's store, but Hydra "
                        "itself saves hydra.launcher in multirun.yaml; pass secrets with "
                        "hydra.launcher.secret_env=[NAME] instead", ", ".join(sorted(secret)))

    def _resumable(self, specs: List[JobSpec]) -> Dict[int, Outcome]:
        """Points of this sweep's name that completed before, with their result still on disk."""
        name = self.options.get("sweep_name") or str(self.config.hydra.job.name)
        done: Dict[str, Any] = {}
        for sweep in reversed(self.store.sweeps(limit=200)):
            if sweep["name"] != name:
                continue
            for p in self.store.points(sweep["id"]):
                if p["state"] == COMPLETED and p["spec"]:
                    done[" ".join(p["overrides"])] = p
        reused = {}
        for s in specs:
            prev = done.get(" ".join(s.overrides))
            if prev is None:
                continue
            result = read_result(JobSpec.from_json(prev["spec"]).result_file)
            if result and result["status"] == R_COMPLETED:
                reused[s.index] = Outcome(COMPLETED, value=result.get("value"))
        return reused

    # -- results -------------------------------------------------------------------------
    def _job_return(self, cfg: DictConfig, spec: JobSpec, outcome: Outcome) -> JobReturn:
        task_cfg = OmegaConf.masked_copy(cfg, [k for k in cfg.keys() if k != "hydra"])
        ret = JobReturn(overrides=spec.overrides, cfg=task_cfg, hydra_cfg=cfg, working_dir=spec.job_dir,
                        task_name=str(cfg.hydra.job.name))
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

    def _print_dry_run(self, executor: Any, specs: List[JobSpec], artifact: Any) -> None:
        out = [f"# nrun dry run: {self.executor_name}, {len(specs)} point(s); nothing was submitted"]
        if artifact is not None:
            m = artifact.manifest
            out.append(f"# artifact {artifact.digest[:16]} ({m.get('commit') or 'no commit'}, "
                       f"dirty={m.get('dirty')}) {artifact.path}")
        for req in executor.render(specs):
            out.append(f"## {req.title}\n{req.text}")
        print("\n".join(out), flush=True)

    def _check_sweeper(self, o: Mapping[str, Any]) -> None:
        target = str(self.config.hydra.sweeper.get("_target_", ""))
        if not o.get("wait", True) and not target.endswith("BasicSweeper"):
            raise ConfigError(f"hydra.launcher.wait=false with the sweeper {target}: that sweeper reads "
                              "each batch's return values to choose the next, so it must wait; "
                              "set hydra.launcher.wait=true (or use the basic sweeper)")


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
