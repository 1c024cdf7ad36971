"""nrun_dgxcloud without a Run:ai API: the dry run's workload bodies (golden files) and setting
errors caught before anything is submitted.

Golden files: tests/golden/dgxcloud_*.txt (NRUN_UPDATE_GOLDEN=1 regenerates them).
"""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path
from typing import Dict, Optional

import pytest

import dryrun
from conftest import nrun
from dryrun import check_golden, normalised

NOWHERE = {"RUNAI_BASE_URL": "http://127.0.0.1:9/api/v1", "RUNAI_CLIENT_SECRET": "golden-secret-must-not-show"}


@pytest.fixture
def proj(tmp_path: Path) -> Path:
    return dryrun.project_needing(tmp_path, "httpx", "dgxcloud")


def launch(proj: Path, *args: str, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    base = ["hydra/launcher=nrun_dgxcloud", "hydra.launcher.image=nvcr.io/nvidia/pytorch:24.05-py3",
            "hydra.launcher.project=my-project", "hydra.launcher.pvc=my-pvc", "hydra.launcher.client_id=my-app",
            f"hydra.launcher.storage_dir={proj.parent}"]
    return dryrun.launch(proj, "sweep_app.py", *base, *args, env={**NOWHERE, **(env or {})})


def test_dry_run_prints_the_exact_training_bodies(home, proj, tmp_path):
    tricky = """a b; $(touch /tmp/nrun_pwned) `x` 'q'"""
    value = "'" + tricky.replace("\\", "\\\\").replace("'", "\\'") + "'"
    proc = launch(proj, "x=1,2", f"msg={value}", "hydra.launcher.dry_run=true", "hydra.launcher.gpus_per_node=8",
                  "+hydra.launcher.secret_refs.HF_TOKEN=hf-secret:token", "hydra.launcher.node_pools=[h100]",
                  "hydra.launcher.cpu_memory_request=64G")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "golden-secret-must-not-show" not in proc.stdout + proc.stderr
    assert nrun("list").stdout.count("\n") <= 1
    text = normalised(proc.stdout, tmp_path)
    assert "POST http://127.0.0.1:9/api/v1/workloads/trainings" in text
    body = json.loads(text[text.index("{\n"): text.index("\n}\n") + 2])
    assert body["spec"]["compute"]["gpuDevicesRequest"] == 8
    assert {"name": "HF_TOKEN", "secret": {"name": "hf-secret", "key": "token"}} in body["spec"]["environmentVariables"]
    words = [body["spec"]["command"], *shlex.split(body["spec"]["args"])]           # what the container runs
    assert words[:2] == ["sh", "-c"] and words[-1].endswith("point.json")
    check_golden("dgxcloud_dry_run.txt", text)


def test_dry_run_of_a_distributed_point(home, proj, tmp_path):
    proc = launch(proj, "x=1", "hydra.launcher.dry_run=true", "hydra.launcher.nodes=2", "nrun/launcher=torchrun")
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = normalised(proc.stdout, tmp_path)
    assert "/workloads/distributed" in text and '"distributedFramework": "PyTorch"' in text
    body = json.loads(text[text.index("{\n"): text.index("\n}\n") + 2])
    env = {e["name"]: e.get("value") for e in body["spec"]["environmentVariables"]}
    # each replica maps the PyTorchJob's RANK / MASTER_ADDR:MASTER_PORT to torchrun's PET_* in the container
    assert env["NRUN_REPLICAS"] == "pytorchjob" and env["NRUN_NODE_ENV"] == "pet" and env["NRUN_NODES"] == "2"
    assert 'PET_RDZV_ENDPOINT="$h:$p"' in body["spec"]["args"] and "--nnodes=2" in body["spec"]["args"]
    check_golden("dgxcloud_dry_run_distributed.txt", text)


@pytest.mark.parametrize("args, message", [
    (["hydra.launcher.project=null"], "hydra.launcher.project is not set"),
    (["hydra.launcher.pvc=null"], "hydra.launcher.pvc is not set"),
    (["hydra.launcher.storage_dir=null"], "hydra.launcher.storage_dir is not set"),
    (["hydra.launcher.nodes=2", "nrun/launcher=torchrun", "hydra.launcher.launcher.nnodes=3"],
     "hydra.launcher.launcher.nnodes=3 but the executor asks for hydra.launcher.nodes=2"),
    (["+hydra.launcher.secret_refs.X=nokey"], "secret_refs.X"),
    (["hydra.launcher.secret_env=[MY_TOKEN]"], "workload's spec"),
])
def test_bad_settings_are_refused_naming_the_setting(home, proj, args, message):
    proc = launch(proj, "x=1", *args, env={"MY_TOKEN": "set"})
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_a_missing_secret_is_refused_naming_the_variable(home, proj):
    proc = launch(proj, "x=1", env={"RUNAI_CLIENT_SECRET": ""})
    assert proc.returncode != 0 and "$RUNAI_CLIENT_SECRET is not set" in proc.stderr, proc.stderr[-2000:]
