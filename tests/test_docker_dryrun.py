"""nrun_docker without an engine: the dry run's container specs (pinned by golden files), and
every setting error caught before anything is submitted.

Golden files: tests/golden/docker_*.txt; paths, ids and digests are normalised. After an
intended change, regenerate with NRUN_UPDATE_GOLDEN=1 and review the diff.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Dict, Optional

import pytest

import dryrun
from conftest import APPS, PYTHON, nrun, make_project
from dryrun import TRICKY, check_golden, normalised

DOCKER = "hydra/launcher=nrun_docker"
NO_ENGINE = {"DOCKER_HOST": "unix:///nonexistent/nrun-test-docker.sock"}  # proves no engine is needed


@pytest.fixture
def proj(tmp_path: Path) -> Path:
    p = make_project(tmp_path)
    (p / "sub").mkdir()
    (p / "sub" / "data.txt").write_text("data\n")
    return p


def launch(cwd: Path, app: str, *args: str, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    return dryrun.launch(cwd, app, DOCKER, *args, env={**NO_ENGINE, **(env or {})})


# ------------------------------------------------------------------------------ golden specs
def test_dry_run_of_a_packaged_sweep(home, proj, tmp_path):
    value = "'" + TRICKY.replace("\\", "\\\\").replace("'", "\\'") + "'"
    proc = launch(proj, "sweep_app.py", "hydra.launcher.image=example.org/team/train:1.0", "hydra.launcher.user=",
                  "x=1,2", f"msg={value}", "hydra.launcher.dry_run=true")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("docker run") == 2
    check_golden("docker_point.txt", normalised(proc.stdout, tmp_path))
    assert not (tmp_path / "multirun" / "0" / "stdout.log").exists()   # nothing ran
    assert not Path("/tmp/nrun_pwned").exists()


def test_dry_run_with_every_container_option(home, proj, tmp_path):
    (tmp_path / "data").mkdir()
    secret = "never-printed-4c1a"
    proc = launch(proj, "sweep_app.py", "hydra.launcher.dry_run=true", "x=1",
                  "hydra.launcher.image=nvcr.io/nvidia/pytorch:24.05-py3", "hydra.launcher.python=/opt/conda/bin/python",
                  "hydra.launcher.command_prefix=[nsys,profile,-o,prof]", "hydra.launcher.num_gpus=-1",
                  "++hydra.launcher.device_requests=[{driver:nvidia,device_ids:['2','3'],capabilities:[[gpu,utility]]}]",
                  "hydra.launcher.runtime=nvidia", "hydra.launcher.ipc_mode=host", "hydra.launcher.shm_size=16g",
                  "++hydra.launcher.ulimits={memlock:-1,stack:'67108864:67108864'}",
                  f"hydra.launcher.volumes=[{tmp_path}/data:/data:ro,./sub:/sub,hfcache:/root/.cache]",
                  "hydra.launcher.network=mynet", "hydra.launcher.user=1000:1000", "hydra.launcher.working_dir=/work",
                  "hydra.launcher.mem_limit=32g", "hydra.launcher.cpus=7.5", "hydra.launcher.pull=always",
                  "hydra.launcher.remove=on_success", "hydra.launcher.timeout_s=3600",
                  "++hydra.launcher.env={WANDB_MODE:offline,GREETING:'hello world'}",
                  "hydra.launcher.secret_env=[MY_TOKEN]", '++hydra.launcher.labels={team:"vision"}',
                  env={"MY_TOKEN": secret})
    assert proc.returncode == 0, proc.stderr
    assert secret not in proc.stdout + proc.stderr
    check_golden("docker_options.txt", normalised(proc.stdout, tmp_path))


def test_dry_run_of_a_two_node_torchrun_point(home, tmp_path):
    (tmp_path / "run").mkdir()
    proc = launch(tmp_path / "run", str(APPS / "torch_allreduce.py"), "hydra.launcher.image=nrun-python-torch:test",
                  "hydra.launcher.user=", "nrun/packager=passthrough", "nrun/launcher=torchrun",
                  "hydra.launcher.nodes=2", "+run=1", "hydra.launcher.dry_run=true")
    assert proc.returncode == 0, proc.stderr
    text = normalised(proc.stdout, tmp_path)
    check_golden("docker_torchrun_2nodes.txt", text)
    assert text.count("docker run") == 2 and "docker network create" in text
    assert "PET_RDZV_ENDPOINT=nrun-<SWEEP>-0-0:29500" in text      # rendezvous on the first container


# ------------------------------------------------------------------------------ setting errors
@pytest.mark.parametrize("args, expected", [
    ([], "hydra.launcher.image is not set"),
    (["hydra.launcher.pull=sometimes"], "hydra.launcher.pull='sometimes': choose one of missing, always, never"),
    (["hydra.launcher.remove=later"], "hydra.launcher.remove='later'"),
    (["hydra.launcher.num_gpus=-2"], "hydra.launcher.num_gpus=-2"),
    (["hydra.launcher.mem_limit=lots"], "hydra.launcher.mem_limit='lots': a size like 512m"),
    (["hydra.launcher.volumes=[/data]"], "hydra.launcher.volumes[0]='/data': use HOST:CONTAINER"),
    (["hydra.launcher.volumes=[/nonexistent/nrun:/data]"], "/nonexistent/nrun does not exist on this machine"),
    (["hydra.launcher.volumes=[/tmp:/nrun/code]"], "/nrun is nrun's own"),
    (["++hydra.launcher.ulimits={nofile:many}"], "hydra.launcher.ulimits.nofile='many'"),
    (["hydra.launcher.nodes=2"], "add nrun/launcher=torchrun"),
    (["hydra.launcher.nodes=2", "nrun/launcher=torchrun", "hydra.launcher.network=bridge"],
     "hydra.launcher.network=bridge: containers of a multi-node point must find each other"),
    (["hydra.launcher.imag=x"], "Key 'imag' not in 'DockerConf'"),  # Hydra's own typo check
])
def test_bad_settings_are_named_before_anything_runs(home, proj, tmp_path, args, expected):
    image = [] if not args else ["hydra.launcher.image=python:3.11"]
    proc = launch(proj, "sweep_app.py", *image, *args, "x=1,2")
    assert proc.returncode != 0
    assert expected in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "multirun" / "0").exists()
    assert nrun("list").stdout.count("\n") <= 1


def test_app_outside_the_packaged_tree_is_refused(home, proj):
    proc = launch(proj, str(APPS / "sweep_app.py"), "hydra.launcher.image=python:3.11", "x=1")
    assert proc.returncode != 0
    assert "outside the packaged directory" in proc.stderr and "nrun/packager=passthrough" in proc.stderr
    assert "sweep_app.py" in proc.stderr and "task function __main__.main" in proc.stderr


def test_engine_not_running_says_how_to_start_it(home, proj):
    proc = launch(proj, "sweep_app.py", "hydra.launcher.image=python:3.11", "x=1")
    assert proc.returncode != 0
    assert "no Docker engine answers at unix:///nonexistent/nrun-test-docker.sock ($DOCKER_HOST)" in proc.stderr
    assert "Fix: start the engine" in proc.stderr and "hydra.launcher.docker_host" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert nrun("list").stdout.count("\n") <= 1


def test_launcher_config_is_visible_to_hydra_with_the_shipping_packager(tmp_path):
    out = subprocess.run([PYTHON, str(APPS / "sweep_app.py"), "--cfg", "hydra", DOCKER], capture_output=True,
                         text=True, cwd=tmp_path, check=True).stdout
    assert "_executor_: docker" in out and "shm_size" in out and "ulimits" in out
    assert re.search(r"packager:\n\s+name: workdir", out)            # code is shipped by default
