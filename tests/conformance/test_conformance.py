"""The executor conformance suite: the same scenarios on every executor and mode, real backends.

Each scenario runs a Hydra app as a user does (a subprocess in a project dir) and checks what a
user would: values reaching the sweeper, failures isolated, Hydra's job semantics (job dir,
`.hydra/` files, job name, cwd) equal to Hydra's basic launcher, configs that pick the launcher
or set hydra.mode themselves, programmatic task functions, cancel, detach, timeouts, secrets.

Every backend nrun has, or will have, joins by adding one ``Backend`` to ``BACKENDS``.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import pytest
import yaml

from conftest import APPS, PYTHON, nrun, states, status_json, wait_for, make_project
from docker_fixtures import docker_sandbox  # noqa: F401  (requested by backend())
from ssh_fixtures import ssh_sandbox  # noqa: F401  (requested by backend())
from skypilot_fixtures import sky_sandbox  # noqa: F401  (requested by backend())
from cloud_fixtures import cloud_args, cloud_fakes  # noqa: F401  (requested by backend())
from kube_fixtures import kube_args, kube_sandbox, sweep_is_gone  # noqa: F401  (requested by backend())
from require import missing

SANDBOX_LABEL = '++hydra.launcher.labels={nrun.sandbox:"1"}'


@dataclass(frozen=True)
class Backend:
    id: str
    option: str                               # hydra/launcher=<option>
    args: tuple = ()                          # options every sweep on it takes
    sandbox: Optional[str] = None             # slurm | docker: the sandbox it needs
    same_python: bool = True                  # runs this Python (closures go by value)
    env: Dict[str, str] = field(default_factory=dict)

    def launcher_args(self) -> List[str]:
        args = [f"hydra/launcher={self.option}", *self.args]
        if self.sandbox == "docker":
            args += [f"hydra.launcher.image={os.environ['NRUN_SANDBOX_IMAGE']}", SANDBOX_LABEL]
        if self.sandbox in KUBE:  # a real kube-apiserver; tests/fakes/kube_operator.py plays the operators
            args += kube_args(self.option)
        if self.sandbox == "skypilot":  # the session's one SkyPilot cluster on the Slurm sandbox
            args += [f"hydra.launcher.cluster_name={os.environ['NRUN_TEST_SKY_CLUSTER']}"]
        if self.sandbox in CLOUD:  # the fake Lepton / Run:ai APIs of tests/fakes, jobs on the Docker sandbox
            args += cloud_args(self.sandbox)
        return args


BACKENDS = [
    Backend("local-fork", "nrun_local", ("hydra.launcher.mode=fork",)),
    Backend("local-command", "nrun_local", ("hydra.launcher.mode=command",)),
    Backend("slurm-inprocess", "nrun_slurm", ("hydra.launcher.mode=inprocess",), sandbox="slurm"),
    Backend("slurm-command", "nrun_slurm", ("hydra.launcher.mode=command",), sandbox="slurm"),
    Backend("docker", "nrun_docker", (), sandbox="docker", same_python=False),
    Backend("ssh", "nrun_ssh", (), sandbox="ssh", same_python=False),
    Backend("skypilot", "nrun_skypilot", (), sandbox="skypilot", same_python=False),
    Backend("plugin-nice-spawn", "nice_spawn", ("hydra.launcher.niceness=5",)),
    Backend("lepton", "nrun_lepton", (), sandbox="lepton", same_python=False),
    Backend("dgxcloud", "nrun_dgxcloud", (), sandbox="dgxcloud", same_python=False),
    Backend("kubeflow", "nrun_kubeflow", (), sandbox="kubeflow", same_python=False),
    Backend("kuberay", "nrun_kuberay", (), sandbox="kuberay", same_python=False),
]
CLOUD = ("lepton", "dgxcloud")
KUBE = ("kubeflow", "kuberay")


@pytest.fixture(params=BACKENDS, ids=[b.id for b in BACKENDS])
def backend(request, monkeypatch) -> Backend:
    b: Backend = request.param
    if b.sandbox == "slurm":
        env = request.getfixturevalue("slurm_cluster")
    elif b.sandbox == "docker":
        env = request.getfixturevalue("docker_sandbox")
    elif b.sandbox == "ssh":
        env = request.getfixturevalue("ssh_sandbox")
    elif b.sandbox == "skypilot":
        env = request.getfixturevalue("sky_sandbox")
    elif b.sandbox in CLOUD:
        env = request.getfixturevalue("cloud_fakes").env(b.sandbox)
    elif b.sandbox in KUBE:
        kube = request.getfixturevalue("kube_sandbox")
        env = {**kube.env, "NRUN_KUBE_STORAGE_DIR": kube.storage}
    else:
        env = {}
    if b.option == "nice_spawn":
        try:
            import nrun_example_executor  # noqa: F401
        except ImportError:
            missing("executor-plugin", "the example executor plugin is not installed: "
                    "pip install -e examples/executor_plugin")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return b


@pytest.fixture
def proj(tmp_path: Path) -> Path:
    """A project dir holding the test apps (packagers ship it); sweeps write beside it."""
    return make_project(tmp_path, "programmatic.py", "driver.py", "prog_tasks.py", "pkgapp")


def launch(b: Optional[Backend], proj: Path, *args: str, app: str = "sweep_app.py", multirun: bool = True,
           sweep_dir: Optional[Path] = None, env: Optional[Dict[str, str]] = None,
           timeout: float = 300) -> subprocess.CompletedProcess:
    """`python APP [-m] <backend> ARGS` in the project dir; b=None is Hydra's basic launcher.
    APP "-m pkg.mod" runs a module app."""
    sweep_dir = sweep_dir or proj.parent / "multirun"
    head = app.split() if app.startswith("-m ") else [app]
    cmd = [PYTHON, *head, *(["-m"] if multirun else []), *(b.launcher_args() if b else []),
           *(["hydra.launcher.progress=lines"] if b else []), *args, f"hydra.sweep.dir={sweep_dir}"]
    return subprocess.run(cmd, cwd=proj, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-5000:]}"
    return proc


def values() -> Dict[int, str]:
    return {p["idx"]: p["value_repr"] for p in status_json()["points"]}


# -- the scenarios -------------------------------------------------------------------------------
def test_values_reach_the_sweeper(backend, proj, home, tmp_path):
    record = tmp_path / "record.json"
    ok(launch(backend, proj, "hydra/sweeper=nrun_test_record", "x=1,2,3",
              env={"RECORD_FILE": str(record), "PYTHONPATH": str(APPS)}))
    seen = json.loads(record.read_text())
    assert [r["value"]["square"] for r in seen] == [1, 4, 9]          # in batches of two launches
    assert all(r["status"] == "COMPLETED" for r in seen)
    assert states() == {0: "COMPLETED", 1: "COMPLETED", 2: "COMPLETED"}


def test_one_failing_point_does_not_hide_the_others(backend, proj, home, tmp_path):
    proc = launch(backend, proj, "action=ok,raise,ok", "x=5")
    assert proc.returncode != 0
    assert states() == {0: "COMPLETED", 1: "FAILED", 2: "COMPLETED"}
    assert "'square': 25" in values()[0] and "'square': 25" in values()[2]
    assert "#1 FAILED" in proc.stderr and "ValueError: boom at x=5" in proc.stderr
    assert str(tmp_path / "multirun" / "1" / "stderr.log") in proc.stderr
    assert "ValueError: boom at x=5" in (tmp_path / "multirun" / "1" / "stderr.log").read_text()


def test_overrides_reach_the_task_verbatim(backend, proj, home):
    """Shell metacharacters in a value: every word built from user input is quoted (or never
    goes through a shell); the task sees the value exactly."""
    tricky = """a b; $(touch /tmp/nrun_pwned) `x` 'q' "dq" $HOME"""
    Path("/tmp/nrun_pwned").unlink(missing_ok=True)
    quoted = "'" + tricky.replace("\\", "\\\\").replace("'", "\\'") + "'"
    ok(launch(backend, proj, f"msg={quoted}", "x=1,2"))
    assert all(f"'msg': {tricky!r}" in v for v in values().values()), values()
    assert not Path("/tmp/nrun_pwned").exists()


def test_hydra_job_semantics_equal_basic_launchers(backend, proj, home, tmp_path):
    """hydra.* overrides (chdir, job name, sweep subdir) honoured; job dirs, `.hydra/` config and
    overrides, job name and cwd as Hydra's basic launcher gives them."""
    args = ["x=1,2", "action=cwd", "hydra.job.chdir=True", "hydra.job.name=custom",
            "hydra.sweep.subdir=${hydra.job.num}_of_${hydra.job.name}"]
    ok(launch(None, proj, *args, sweep_dir=tmp_path / "basic"))
    ok(launch(backend, proj, *args))
    for i in (0, 1):
        ours, basic = tmp_path / "multirun" / f"{i}_of_custom", tmp_path / "basic" / f"{i}_of_custom"
        assert values()[i] == repr(str(ours)) or _relocated(backend, values()[i], f"{i}_of_custom", i)  # its job dir
        for name in ("config.yaml", "overrides.yaml"):
            assert (ours / ".hydra" / name).read_text() == (basic / ".hydra" / name).read_text(), name
        hydra_yaml = yaml.safe_load((ours / ".hydra" / "hydra.yaml").read_text())["hydra"]
        basic_yaml = yaml.safe_load((basic / ".hydra" / "hydra.yaml").read_text())["hydra"]
        assert hydra_yaml["job"]["name"] == "custom" and hydra_yaml["job"]["num"] == i
        for key in ("name", "chdir", "override_dirname", "config_name"):
            assert hydra_yaml["job"][key] == basic_yaml["job"][key], key
        assert hydra_yaml["mode"] == basic_yaml["mode"]
        assert hydra_yaml["overrides"]["task"] == basic_yaml["overrides"]["task"]
        assert (ours / "custom.log").exists()                          # Hydra's job logging, named after the job
        assert sorted(p.name for p in ours.iterdir() if not p.name.startswith(".") and p.suffix != ".log") == \
            sorted(p.name for p in basic.iterdir() if not p.name.startswith(".") and p.suffix != ".log")


def test_config_that_selects_the_launcher_runs(backend, proj, home):
    """`defaults: [override hydra/launcher: ...]` in the app's config: the usual way to make a
    launcher the project default. The points must not need that launcher where they run."""
    (proj / "conf" / "pinned.yaml").write_text(
        f"defaults:\n  - sweep_app\n  - override hydra/launcher: {backend.option}\n  - _self_\n")
    args = [a for a in backend.launcher_args() if not a.startswith("hydra/launcher=")]
    proc = subprocess.run([PYTHON, "sweep_app.py", "-m", "--config-name", "pinned", *args, "x=2,3",
                           f"hydra.sweep.dir={proj.parent}/multirun"], cwd=proj, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    ok(proc)
    assert status_json()["sweep"]["executor"] in (backend.option, backend.option.removeprefix("nrun_"))
    assert "'square': 4" in values()[0] and "'square': 9" in values()[1]


def test_config_that_sets_multirun_mode_with_optuna_runs_each_trial_once(backend, proj, home, tmp_path):
    """`hparams_search=optuna` selects the Optuna sweeper and hydra.mode=MULTIRUN in YAML: each
    point is one trial, never a study of its own."""
    proc = ok(launch(backend, proj, "+hparams_search=optuna", multirun=False))
    points = status_json()["points"]
    assert len(points) == 4 and all(p["state"] == "COMPLETED" for p in points)
    assert "Best value" in proc.stdout + proc.stderr or "best_value" in (tmp_path / "multirun" /
                                                                         "optimization_results.yaml").read_text()
    for i in range(4):
        job = tmp_path / "multirun" / str(i)
        assert (job / "stdout.log").read_text().count("point x=") == 1   # ran once
        assert not (job / "multirun").exists() and not list(job.glob("**/multirun.yaml"))
    assert not (proj / "multirun").exists()


def test_programmatic_closure_runs_or_is_refused(backend, proj, home, tmp_path):
    proc = launch(backend, proj, "x=1,2", app="programmatic.py")
    if backend.same_python:
        ok(proc)
        assert values() == {0: "101", 1: "102"}
        assert "closure point x=1" in (tmp_path / "multirun" / "0" / "stdout.log").read_text()
    else:
        assert proc.returncode == 2
        assert "task function programmatic.build.<locals>.task" in proc.stderr or \
            "build.<locals>.task" in proc.stderr
        assert f"hydra/launcher={backend.option}" in proc.stderr and "Fix:" in proc.stderr
        assert nrun("list").stdout.count("\n") <= 1                    # nothing was recorded or submitted


def test_task_function_from_a_module_runs_not_the_wrapper(backend, proj, home, tmp_path):
    ok(launch(backend, proj, "x=3,4", app="driver.py"))
    assert values() == {0: "{'from': 'prog_tasks', 'x': 3}", 1: "{'from': 'prog_tasks', 'x': 4}"}
    assert "module task x=3" in (tmp_path / "multirun" / "0" / "stdout.log").read_text()


def test_module_app_with_relative_imports_runs(backend, proj, home, tmp_path):
    """`python -m pkgapp.main`: the package's own module runs (its relative imports work)."""
    ok(launch(backend, proj, "x=5,6", app="-m pkgapp.main"))
    assert values() == {0: "{'module': 'pkgapp.helper', 'x': 5}", 1: "{'module': 'pkgapp.helper', 'x': 6}"}


def test_relative_sweep_dir_is_the_launch_dirs(backend, proj, home):
    """`hydra.sweep.dir=rel/dir` means the launch directory's, wherever the point's code runs
    (a snapshot, /nrun/code): the job dirs, logs and `.hydra/` files land there."""
    ok(launch(backend, proj, "x=1", "action=cwd", "hydra.job.chdir=True", sweep_dir=Path("out/rel")))
    job = proj / "out" / "rel" / "0"
    assert values()[0] == repr(str(job)) or _relocated(backend, values()[0], "0", 0)
    assert (job / ".hydra" / "config.yaml").exists() and "point x=1" in (job / "stdout.log").read_text()


def test_original_cwd_is_where_the_code_runs(backend, proj, home):
    """get_original_cwd(): the launch dir when the point runs from the tree itself; the directory
    its code runs from where the code was moved (a container's /nrun/code)."""
    ok(launch(backend, proj, "x=1", "action=orig_cwd", "hydra.job.chdir=True"))
    if backend.sandbox == "ssh":  # the code unpacked on the host, content-addressed
        digest = status_json()["sweep"]["artifact"]["digest"]
        assert values()[0] == repr(f"/tmp/nrun/code/{digest}")
    elif backend.sandbox in CLOUD:  # the snapshot copied onto the shared storage
        digest = status_json()["sweep"]["artifact"]["digest"]
        assert values()[0] == repr(f"{os.environ['NRUN_CLOUD_STORAGE_DIR']}/.nrun/code/{digest}")
    elif backend.sandbox in KUBE:  # the snapshot copied onto the volume
        digest = status_json()["sweep"]["artifact"]["digest"]
        assert values()[0] == repr(f"{os.environ['NRUN_KUBE_STORAGE_DIR']}/.nrun/code/{digest}")
    else:
        assert values()[0] == repr("/nrun/code" if backend.sandbox == "docker" else str(proj)) or (
            backend.sandbox == "skypilot" and values()[0].endswith(
                f"/.nrun/sky/code/{status_json()['sweep']['artifact']['digest']}'"))  # unpacked on the node


def test_detached_sweep_is_followed_from_another_shell(backend, proj, home):
    proc = ok(launch(backend, proj, "x=2", "action=ok,raise", "hydra.launcher.wait=false"))
    assert "nrun status" in proc.stderr
    wait_for(lambda: states() == {0: "COMPLETED", 1: "FAILED"}, timeout=180)
    assert "'square': 4" in values()[0]
    points = status_json()["points"]
    assert [p["attempts"] for p in points] == [1, 1]                    # retries=0: never run twice
    assert "ValueError: boom at x=2" in points[1]["error"]
    assert status_json()["sweep"]["state"] == "FAILED"


def test_cancel_from_another_shell_stops_every_point(backend, proj, home):
    ok(launch(backend, proj, "x=1,2", "action=sleep", "seconds=300", "hydra.launcher.wait=false"))
    # SkyPilot's one sandbox node runs one job at a time: the second point waits in its queue.
    printing = any if backend.sandbox == "skypilot" else all
    wait_for(lambda: all(p["state"] == "RUNNING" for p in status_json()["points"])
             and printing((Path(p["stdout"])).exists() and "point x=" in Path(p["stdout"]).read_text()
                          for p in status_json()["points"]), timeout=180)
    out = nrun("cancel", "last", timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    wait_for(lambda: set(states().values()) == {"CANCELLED"}, timeout=60)
    assert _backend_is_empty(backend, status_json())


def test_timeout_kills_the_point_and_names_the_setting(backend, proj, home):
    proc = launch(backend, proj, "x=1", "action=sleep", "seconds=300", "hydra.launcher.timeout_s=4")
    assert proc.returncode != 0
    p = status_json()["points"][0]
    assert p["state"] == "TIMEOUT" and "timeout_s=4" in p["error"]
    assert p["ended"] - p["started"] < 60                               # stopped at the limit, not Slurm's minute
    assert _backend_is_empty(backend, status_json())


def test_no_secret_reaches_any_file(backend, proj, home, tmp_path):
    secret, env_secret = "s3cr3t-conformance-9d2e", "envs3cret-conformance-41aa"
    if backend.sandbox == "dgxcloud":  # refused, with the reason: a value would sit in the workload spec
        proc = launch(backend, proj, "x=1", "hydra.launcher.secret_env=[MY_TOKEN]", env={"MY_TOKEN": secret})
        assert proc.returncode != 0 and "workload's spec" in proc.stderr and "secret_refs" in proc.stderr
        assert secret not in proc.stdout + proc.stderr and nrun("list").stdout.count("\n") <= 1
        return
    proc = ok(launch(backend, proj, "action=env", "env_names=[MY_TOKEN]", "x=1",
                     "hydra.launcher.secret_env=[MY_TOKEN]", f"+hydra.launcher.env.WANDB_API_KEY={env_secret}",
                     env={"MY_TOKEN": secret}))
    digest = "sha256:" + hashlib.sha256(secret.encode()).hexdigest()[:16]
    assert f"'MY_TOKEN': '{digest}'" in values()[0]                   # it arrived
    hydra_own = tmp_path / "multirun" / "multirun.yaml"                 # Hydra saves hydra.launcher.env there
    for path in [*home.rglob("*"), *(tmp_path / "multirun").rglob("*"), *proj.rglob("*")]:
        if path.is_file():
            data = path.read_bytes()
            assert secret.encode() not in data, path
            if path != hydra_own:
                assert env_secret.encode() not in data, path
    assert secret not in proc.stdout + proc.stderr and env_secret not in proc.stdout + proc.stderr
    show = nrun("show", "last", "--json").stdout
    assert secret not in show and env_secret not in show


def _relocated(b: Backend, value: str, job_name: str, idx: int) -> bool:
    """nrun_skypilot runs a point in a job dir of its own on the node (the launcher's path rarely
    exists there: another machine, another user) and brings its files back to the local one."""
    sweep = status_json()["sweep"]["id"]
    return b.sandbox == "skypilot" and value.endswith(f"/.nrun/sky/jobs/{sweep}/{idx}-a1/{job_name}'")


def _backend_is_empty(b: Backend, status: dict) -> bool:
    """Nothing of the sweep is left running at its backend."""
    sweep = status["sweep"]["id"]
    if b.sandbox == "slurm":
        ids = {p["backend_id"].split("_")[0] for p in status["points"] if p["backend_id"]}
        out = subprocess.run(["squeue", "-h", "-o", "%i %T", "-j", ",".join(ids)], capture_output=True, text=True)
        return not out.stdout.strip() or "Invalid job id" in out.stderr
    if b.sandbox == "skypilot":  # the points' jobs in the cluster's SkyPilot queue
        from skypilot_fixtures import sky_queue

        jobs = {int(p["backend_id"].rsplit("/", 1)[1]) for p in status["points"] if p["backend_id"]}
        queue = sky_queue(os.environ["NRUN_TEST_SKY_CLUSTER"])
        return all(queue.get(j) in (None, "CANCELLED", "SUCCEEDED", "FAILED") for j in jobs)
    if b.sandbox == "docker":
        import docker

        client = docker.DockerClient(base_url=os.environ["DOCKER_HOST"], version="auto")
        try:
            return not client.containers.list(all=True, filters={"label": f"nrun.sweep={sweep}"})
        finally:
            client.close()
    if b.sandbox in KUBE:  # objects on the apiserver, processes of the fake operator
        return sweep_is_gone(sweep)
    if b.sandbox in CLOUD:  # the fake's containers of the sweep, in any state
        from cloud_fixtures import live_containers

        return not live_containers(sweep)
    if b.sandbox == "ssh":  # looked for inside each host's own PID namespace
        from ssh_fixtures import sandbox_hosts, sweep_processes

        env = dict(os.environ)
        return not any(sweep_processes(env, h, sweep) for h in sandbox_hosts(env))
    from nrun_core import procs

    return not any(p["pid"] and procs.alive(p["pid"], p["pid_start"]) for p in status["points"])
