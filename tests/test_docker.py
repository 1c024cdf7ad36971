"""nrun_docker end to end on the real engine: Hydra apps run as a user runs them, real containers.

Every sweep's containers and networks carry nrun.sandbox=1 (so `nrun sandbox docker down` can
clean up after a crashed test run) besides nrun's own nrun.sweep=<id>; every test checks by
listing that none of its sweep's containers is left behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from conftest import APPS, NRUN, PYTHON, nrun, states, status_json, interruptible, wait_for, make_project
from docker_fixtures import docker_client, docker_env, docker_sandbox, docker_torch_image  # noqa: F401

pytestmark = pytest.mark.docker

DOCKER = "hydra/launcher=nrun_docker"
SANDBOX_LABEL = '++hydra.launcher.labels={nrun.sandbox:"1"}'

OOM_APP = """\
import hydra

@hydra.main(version_base=None, config_path=None, config_name=None)
def main(cfg):
    print("allocating", cfg.mb, "MB", flush=True)
    blocks = [bytearray(1024 * 1024) for _ in range(int(cfg.mb))]
    return len(blocks)

main()
"""


@pytest.fixture
def proj(tmp_path: Path) -> Path:
    """A project dir holding the test app (the default packager ships it); outputs go beside it."""
    return make_project(tmp_path)


def run(proj: Path, *args: str, app: str = "sweep_app.py", env: Optional[Dict[str, str]] = None,
        timeout: float = 240, check: bool = False) -> subprocess.CompletedProcess:
    """`python APP -m hydra/launcher=nrun_docker ARGS` in the project dir, like a user's shell."""
    image = os.environ["NRUN_SANDBOX_IMAGE"]
    cmd = [PYTHON, app, "-m", DOCKER, f"hydra.launcher.image={image}", SANDBOX_LABEL,
           "hydra.launcher.progress=lines", *args, f"hydra.sweep.dir={proj.parent}/multirun"]
    proc = subprocess.run(cmd, cwd=proj, env={**os.environ, **(env or {})}, capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def leftovers(client: Any, sweep_id: str) -> List[str]:
    """Containers and networks of the sweep still on the engine (any state)."""
    flt = {"label": f"nrun.sweep={sweep_id}"}
    return [c.name for c in client.containers.list(all=True, filters=flt)] + \
           [n.name for n in client.networks.list(filters=flt)]


# ------------------------------------------------------------------------------ the bars

def test_failures_are_isolated_named_and_leave_nothing(docker_env, docker_client, home, proj, tmp_path):
    proc = run(proj, "action=ok,raise,exit,sleep", "seconds=60", "hydra.launcher.timeout_s=4",
               "hydra.launcher.max_parallel=4")
    assert proc.returncode != 0
    assert states() == {0: "COMPLETED", 1: "FAILED", 2: "FAILED", 3: "TIMEOUT"}
    points = {p["idx"]: p for p in status_json()["points"]}
    assert "ValueError: boom at x=0" in points[1]["error"]
    assert "exited with code 3" in points[2]["error"] and points[2]["exit_code"] == 3
    assert "timeout_s=4" in points[3]["error"]
    assert points[3]["ended"] - points[3]["started"] < 4 + 5 + 5   # limit + grace + slack
    for idx in (1, 2, 3):
        assert f"#{idx} " in proc.stderr and str(tmp_path / "multirun" / str(idx) / "stderr.log") in proc.stderr
    assert leftovers(docker_client, status_json()["sweep"]["id"]) == []


def test_memory_capped_point_is_reported_as_oom(docker_env, docker_client, home, proj):
    (proj / "oom_app.py").write_text(OOM_APP)
    proc = run(proj, "+mb=8,400", "hydra.launcher.mem_limit=64m", app="oom_app.py")
    assert proc.returncode != 0
    st = status_json()
    points = {p["idx"]: p for p in st["points"]}
    assert points[0]["state"] == "COMPLETED" and points[0]["value_repr"] == "8"
    assert points[1]["state"] == "FAILED" and points[1]["exit_code"] == 137
    assert "out of memory (OOM)" in points[1]["error"]
    assert "hydra.launcher.mem_limit=64m" in points[1]["error"]                # names the setting
    assert "out of memory (OOM)" in proc.stderr
    assert leftovers(docker_client, st["sweep"]["id"]) == []


def test_torchrun_all_reduce_across_two_containers(docker_env, docker_client, docker_torch_image, home, tmp_path):
    proc = subprocess.run(
        [PYTHON, str(APPS / "torch_allreduce.py"), "-m", DOCKER, f"hydra.launcher.image={docker_torch_image}",
         SANDBOX_LABEL, "nrun/packager=passthrough", "nrun/launcher=torchrun", "hydra.launcher.nodes=2",
         "hydra.launcher.timeout_s=180", "+run=1", f"hydra.sweep.dir={tmp_path}/multirun",
         "++hydra.launcher.env={OMP_NUM_THREADS:'1'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    p = status_json()["points"][0]
    assert p["state"] == "COMPLETED"
    assert "'world_size': 2, 'sum': 3.0, 'expected': 3.0" in p["value_repr"]
    job = tmp_path / "multirun" / "0"
    logs = (job / "stdout.log").read_text() + (job / "stdout.node1.log").read_text()
    sweep_id = status_json()["sweep"]["id"]
    # two containers, each its own host, rendezvous on the first one's name
    assert f"host=nrun-{sweep_id}-0-0" in logs and f"host=nrun-{sweep_id}-0-1" in logs
    assert "rank 0/2" in logs and "rank 1/2" in logs
    assert leftovers(docker_client, sweep_id) == []


def test_ctrl_c_cancels_and_removes_the_containers(docker_env, docker_client, home, proj, tmp_path):
    image = os.environ["NRUN_SANDBOX_IMAGE"]
    launcher = subprocess.Popen(preexec_fn=interruptible, args=
        [PYTHON, "sweep_app.py", "-m", DOCKER, f"hydra.launcher.image={image}", SANDBOX_LABEL,
         "action=sleep", "seconds=120", "x=1,2,3", "hydra.launcher.max_parallel=2",
         f"hydra.sweep.dir={tmp_path}/multirun"],
        cwd=proj, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: nrun("list").stdout.count("\n") >= 2 and list(states().values()).count("RUNNING") == 2)
    sweep_id = status_json()["sweep"]["id"]
    assert len(leftovers(docker_client, sweep_id)) == 2                 # two running containers
    launcher.send_signal(signal.SIGINT)
    _, err = launcher.communicate(timeout=90)
    assert launcher.returncode == 130, err
    assert set(states().values()) == {"CANCELLED"}
    assert leftovers(docker_client, sweep_id) == []


def test_cancel_from_another_shell_when_the_supervisor_is_gone(docker_env, docker_client, home, proj):
    run(proj, "action=sleep", "seconds=120", "x=1", "hydra.launcher.wait=false", check=True)
    sweep_id = status_json()["sweep"]["id"]
    wait_for(lambda: states()[0] == "RUNNING")
    os.kill(status_json()["sweep"]["supervisor_pid"], signal.SIGKILL)  # nobody watches the sweep now
    time.sleep(0.5)
    # a shell without the sandbox's DOCKER_HOST asks the engine the sweep recorded, not its own
    # default socket (whose silence made the point LOST)
    bare = subprocess.run([*NRUN, "status", sweep_id, "--json"], capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")})
    assert bare.returncode == 0 and "did not answer" not in bare.stderr, bare.stderr
    assert json.loads(bare.stdout)["points"][0]["state"] == "RUNNING"
    assert states()[0] == "RUNNING"            # the engine says the container still runs
    out = nrun("cancel", sweep_id, timeout=90)
    assert out.returncode == 0, out.stdout + out.stderr
    assert states()[0] == "CANCELLED"
    assert leftovers(docker_client, sweep_id) == []


# ------------------------------------------------------------------------------ data paths

def test_files_written_by_the_container_belong_to_the_configured_user(docker_env, docker_client, home, proj,
                                                                      tmp_path):
    # Tests run as root, where the default is the image's user; a non-root caller gets its own
    # uid:gid by default. Here an explicit uid:gid shows what that default achieves.
    run(proj, "x=1", "action=cwd", "hydra.launcher.user=4321:4322", check=True)
    p = status_json()["points"][0]
    assert p["state"] == "COMPLETED" and p["value_repr"] == "'/nrun/code'"
    job = tmp_path / "multirun" / "0"
    written = [job / "stdout.log", job / "stderr.log", job / ".nrun" / status_json()["sweep"]["id"] / "result.json",
               job / ".hydra" / "config.yaml"]
    assert {(f.stat().st_uid, f.stat().st_gid) for f in written} == {(4321, 4322)}
    assert leftovers(docker_client, status_json()["sweep"]["id"]) == []


# ------------------------------------------------------------------------------ failure modes
def test_missing_image_is_refused_before_anything_runs(docker_env, home, proj, tmp_path):
    proc = run(proj, "x=1,2", "hydra.launcher.image=nrun-no-such-image:1", "hydra.launcher.pull=never")
    assert proc.returncode != 0
    assert "hydra.launcher.image=nrun-no-such-image:1 is not on the engine" in proc.stderr
    assert "hydra.launcher.pull=never" in proc.stderr and "docker build" in proc.stderr
    # pull impossible: a registry on a closed loopback port (never leaves this machine)
    proc = run(proj, "x=1", "hydra.launcher.image=127.0.0.1:9/nrun/missing:1")
    assert proc.returncode != 0
    assert "hydra.launcher.image=127.0.0.1:9/nrun/missing:1 is not on the engine and pulling it failed" \
        in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "multirun" / "0").exists()
    assert nrun("list").stdout.count("\n") <= 1                          # nothing recorded


def test_gpus_without_a_gpu_runtime_are_refused_with_the_setting(docker_env, docker_client, home, proj):
    proc = run(proj, "x=1", "hydra.launcher.num_gpus=1")
    assert proc.returncode != 0
    assert "hydra.launcher.num_gpus=1 asks for GPUs but the engine" in proc.stderr
    assert "no GPU runtime" in proc.stderr and "NVIDIA Container Toolkit" in proc.stderr
    proc = run(proj, "x=1", "hydra.launcher.runtime=nvidia")
    assert proc.returncode != 0 and "hydra.launcher.runtime=nvidia is not a runtime" in proc.stderr
    assert "runc" in proc.stderr                                         # lists the ones there are
    assert docker_client.containers.list(all=True, filters={"name": "gpu-probe"}) == []


FLAKY_APP = """\
import pathlib
import hydra
from hydra.core.hydra_config import HydraConfig

@hydra.main(version_base=None, config_path=None, config_name=None)
def main(cfg):
    marker = pathlib.Path(HydraConfig.get().runtime.output_dir) / "tried"
    if not marker.exists():
        marker.write_text("x")
        raise RuntimeError("first try fails")
    return "second try"

main()
"""


def test_retries_start_a_fresh_container(docker_env, docker_client, home, proj):
    (proj / "flaky.py").write_text(FLAKY_APP)
    run(proj, "+x=1", "hydra.launcher.retries=1", app="flaky.py", check=True)
    p = status_json()["points"][0]
    sweep_id = status_json()["sweep"]["id"]
    assert p["state"] == "COMPLETED" and p["attempts"] == 2 and p["value_repr"] == "'second try'"
    assert p["backend_id"] == f"nrun-{sweep_id}-0-0-a2"                # the retry's own container
    assert leftovers(docker_client, sweep_id) == []


def test_a_container_the_engine_refuses_fails_its_point_once_per_attempt(docker_env, docker_client, home, proj):
    proc = run(proj, "x=1,2", "hydra.launcher.ipc_mode=container:nrun-no-such-container",
               "hydra.launcher.retries=1", timeout=120)
    assert proc.returncode != 0
    points = status_json()["points"]
    assert [(p["state"], p["attempts"]) for p in points] == [("FAILED", 2), ("FAILED", 2)]
    assert all("the engine refused to create container" in p["error"] and "nrun-no-such-container" in p["error"]
               for p in points)
    assert leftovers(docker_client, status_json()["sweep"]["id"]) == []


def test_remove_on_success_keeps_only_the_failed_container_for_inspection(docker_env, docker_client, home, proj):
    run(proj, "action=ok,raise", "hydra.launcher.remove=on_success", "hydra.launcher.max_parallel=2")
    sweep_id = status_json()["sweep"]["id"]
    assert states() == {0: "COMPLETED", 1: "FAILED"}
    try:
        kept = docker_client.containers.list(all=True, filters={"label": f"nrun.sweep={sweep_id}"})
        assert [(c.name, c.status) for c in kept] == [(f"nrun-{sweep_id}-1-0", "exited")]
        assert kept[0].attrs["State"]["ExitCode"] == 1
    finally:
        for c in docker_client.containers.list(all=True, filters={"label": f"nrun.sweep={sweep_id}"}):
            c.remove(force=True)
