"""The Docker sandbox is a real engine with cached offline Python images; `up` is idempotent.

The engine is shared with every other Docker test, so none of these tests stops it. Containers
they start carry the label nrun.sandbox=1 (removed by `nrun sandbox docker down`) and remove
themselves.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from docker_fixtures import (  # noqa: F401  (fixtures)
    docker_client,
    docker_env,
    docker_sandbox,
    docker_torch_image,
)
from nrun_core.errors import SandboxError
from nrun_core.sandbox import docker as sandbox
from nrun_core.sandbox import docker_image

APPS = Path(__file__).resolve().parent / "apps"
LABELS = {"nrun.sandbox": "1"}

HYDRA_APP = """\
import sys
import hydra
import omegaconf
from omegaconf import DictConfig


@hydra.main(version_base=None, config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    with open("/data/result.txt", "w") as out:
        out.write(f"x={cfg.x} lr={cfg.lr} hydra={hydra.__version__} "
                  f"omegaconf={omegaconf.__version__} py={sys.version_info[0]}.{sys.version_info[1]}")


if __name__ == "__main__":
    main()
"""


def run_in(client: Any, image: str, command: list[str], **kwargs: Any) -> str:
    """Run COMMAND in a fresh container of IMAGE the way nrun's executor does; return its output."""
    out = client.containers.run(image, command, labels=LABELS, init=True, remove=True,
                                stderr=True, **kwargs)
    return out.decode()


@pytest.mark.docker
def test_up_is_idempotent_fast_and_keeps_the_same_engine(
    docker_sandbox: dict[str, str], docker_client: Any
) -> None:
    engine_id, pid = docker_client.info()["ID"], sandbox.engine_pid()
    first = sandbox.up()
    started = time.perf_counter()
    second = sandbox.up()
    elapsed = time.perf_counter() - started
    assert elapsed < 2.0, f"a second `up` on a running sandbox took {elapsed:.1f}s"
    assert first == second == docker_sandbox
    assert sandbox.engine_pid() == pid, "up() restarted (or lost track of) the engine"
    assert docker_client.info()["ID"] == engine_id


@pytest.mark.docker
def test_base_image_runs_a_hydra_app_that_writes_to_a_bind_mount(
    docker_sandbox: dict[str, str], docker_client: Any, tmp_path: Path
) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.yaml").write_text("x: 1\nlr: 0.1\n")
    (tmp_path / "app.py").write_text(HYDRA_APP)
    run_in(docker_client, docker_sandbox["NRUN_SANDBOX_IMAGE"],
           ["python3", "/data/app.py", "x=2", "hydra.run.dir=/tmp/run"],
           volumes={str(tmp_path): {"bind": "/data", "mode": "rw"}})
    result = (tmp_path / "result.txt").read_text()
    assert result == "x=2 lr=0.1 hydra=1.3.2 omegaconf=2.3.1 py=3.11"


@pytest.mark.docker
def test_base_image_reports_its_recipe_and_python(
    docker_sandbox: dict[str, str], docker_client: Any
) -> None:
    tag = docker_sandbox["NRUN_SANDBOX_IMAGE"]
    image = docker_client.images.get(tag)
    assert image.labels["nrun.recipe"] == tag.split(":")[1]
    out = run_in(docker_client, tag, ["python3", "-c", "import yaml, sys; print(yaml.__version__,"
                                      " sys.executable, sys.dont_write_bytecode)"])
    assert out.split() == ["6.0.3", "/usr/bin/python3", "False"]


def test_image_tag_is_stable_and_follows_the_recipe() -> None:
    tag = docker_image.base_tag()
    assert re.fullmatch(r"nrun-python:[0-9a-f]{12}", tag)
    assert sandbox.env()["NRUN_SANDBOX_IMAGE"] == tag == docker_image.base_tag()
    reordered = dict(reversed(list(docker_image.BASE_RECIPE.items())))
    assert docker_image.base_tag(reordered) == tag
    changed = {**docker_image.BASE_RECIPE,
               "pip": [*docker_image.BASE_RECIPE["pip"], "rich==13.9.4"]}
    assert docker_image.base_tag(changed) != tag
    # The torch image is keyed on its base too: a new base means a new torch image.
    assert docker_image.torch_tag(base="nrun-python:000000000000") != docker_image.torch_tag()


@pytest.mark.docker
def test_status_reports_the_engine_and_its_images(docker_sandbox: dict[str, str]) -> None:
    ok, report = sandbox.status()
    assert ok, report
    assert "Docker engine" in report and docker_sandbox["DOCKER_HOST"] in report
    assert f"base image {docker_sandbox['NRUN_SANDBOX_IMAGE']}: present" in report


@pytest.mark.docker
def test_torch_image_runs_torchrun_all_reduce(
    docker_client: Any, docker_torch_image: str
) -> None:
    out = run_in(docker_client, docker_torch_image,
                 ["torchrun", "--standalone", "--nproc-per-node=2", "/apps/torch_allreduce.py",
                  "hydra.run.dir=/tmp/run", "hydra/job_logging=disabled"],
                 volumes={str(APPS): {"bind": "/apps", "mode": "ro"}})
    assert "rank 0/2" in out and "rank 1/2" in out, out
    assert out.count("sum=3.0") == 2, out
    version = run_in(docker_client, docker_torch_image,
                     ["python3", "-c", "import torch; print(torch.__version__)"])
    assert version.strip() == "2.13.0+cpu"


@pytest.mark.docker
def test_a_second_sandbox_dir_does_not_start_a_second_engine(
    docker_sandbox: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if sandbox.engine_pid() is None:
        pytest.skip("the engine in use was not started by nrun on this machine")
    monkeypatch.delenv("NRUN_DOCKER_HOST", raising=False)
    monkeypatch.setenv("NRUN_SANDBOX_DIR", str(tmp_path))
    with pytest.raises(SandboxError, match="another dockerd is running.*NRUN_DOCKER_HOST"):
        sandbox.up()


@pytest.mark.docker
def test_down_from_another_sandbox_dir_leaves_the_engine_running(
    docker_sandbox: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NRUN_DOCKER_HOST", raising=False)
    monkeypatch.setenv("NRUN_SANDBOX_DIR", str(tmp_path))
    sandbox.down()
    monkeypatch.undo()
    assert sandbox.engine_version(docker_sandbox["DOCKER_HOST"]), \
        "down() stopped an engine it did not start"


def test_an_engine_that_does_not_answer_is_named_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = f"unix://{tmp_path}/nothing.sock"
    monkeypatch.setenv("NRUN_DOCKER_HOST", host)
    with pytest.raises(SandboxError, match=f"NRUN_DOCKER_HOST={re.escape(host)}.*unset"):
        sandbox.up()
    ok, report = sandbox.status()
    assert not ok and host in report and "unset NRUN_DOCKER_HOST" in report


def test_a_socket_path_too_long_names_nrun_sandbox_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NRUN_DOCKER_HOST", raising=False)
    monkeypatch.setenv("NRUN_SANDBOX_DIR", str(tmp_path / ("d" * 110)))
    with pytest.raises(SandboxError, match="NRUN_SANDBOX_DIR"):
        sandbox.up()


def test_env_prints_shell_exports() -> None:
    out = subprocess.run([sys.executable, "-m", "nrun_core.sandbox.docker", "env"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    exported = {}
    for line in out.splitlines():
        word, assignment = shlex.split(line)
        assert word == "export"
        key, value = assignment.split("=", 1)
        exported[key] = value
    assert exported == sandbox.env()
