"""nrun_lepton without a workspace: the dry run's job bodies (pinned by golden files, exactly as
the leptonai SDK sends them) and setting errors caught before anything is submitted.

Golden files: tests/golden/lepton_*.txt; paths, ids and digests are normalised. After an
intended change, regenerate with NRUN_UPDATE_GOLDEN=1 and review the diff.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Dict, Optional

import pytest

import dryrun
from conftest import nrun
from dryrun import check_golden, normalised

NOWHERE = {"LEPTON_WORKSPACE_ID": "ws-golden", "LEPTON_WORKSPACE_URL": "http://127.0.0.1:9/api/v2/workspaces/ws-golden",
           "LEPTON_WORKSPACE_TOKEN": "golden-token-must-not-show"}


@pytest.fixture
def proj(tmp_path: Path) -> Path:
    return dryrun.project_needing(tmp_path, "leptonai", "lepton")


def launch(proj: Path, *args: str, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    base = ["hydra/launcher=nrun_lepton", "hydra.launcher.image=nvcr.io/nvidia/pytorch:24.05-py3",
            "hydra.launcher.storage=node-nfs:lepton-shared-fs", f"hydra.launcher.storage_dir={proj.parent}"]
    return dryrun.launch(proj, "sweep_app.py", *base, *args, env={**NOWHERE, **(env or {})})


def test_dry_run_prints_the_exact_job_bodies(home, proj, tmp_path):
    proc = launch(proj, "x=1,2", "hydra.launcher.dry_run=true", "hydra.launcher.resource_shape=gpu.8xh100-80gb",
                  "hydra.launcher.gpus_per_node=8", "hydra.launcher.node_group=ng-1234",
                  "hydra.launcher.allowed_nodes=[node-0,node-1]", "hydra.launcher.shared_memory_size=65536",
                  "hydra.launcher.secret_env=[WANDB_API_KEY]", "+hydra.launcher.secret_refs.HF_TOKEN=my-hf-token",
                  "hydra.launcher.image_pull_secrets=[ngc-pull]", "hydra.launcher.can_be_preempted=true",
                  "hydra.launcher.priority_class=mid-4000", "+hydra.launcher.env.MODE=fast",
                  env={"WANDB_API_KEY": "wandb-value-must-not-show"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "wandb-value-must-not-show" not in out and "golden-token-must-not-show" not in out
    assert nrun("list").stdout.count("\n") <= 1                                     # nothing submitted or recorded
    text = normalised(proc.stdout, tmp_path)
    body = json.loads(text[text.index("{"): text.index("\n}\n") + 2])               # the first point's body parses
    assert body["spec"]["affinity"] == {"allowed_dedicated_node_groups": ["ng-1234"],
                                        "allowed_nodes_in_node_group": ["node-0", "node-1"]}
    assert {"name": "WANDB_API_KEY", "value_from": {"secret_name_ref": "nrun-<SWEEP>-wandb-api-key"}} in body["spec"]["envs"]
    check_golden("lepton_dry_run.txt", text)


def test_dry_run_of_a_multi_node_point(home, proj, tmp_path):
    proc = launch(proj, "x=1", "hydra.launcher.dry_run=true", "hydra.launcher.nodes=2", "nrun/launcher=torchrun")
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = normalised(proc.stdout, tmp_path)
    assert '"completions": 2' in text and '"parallelism": 2' in text and '"intra_job_communication": true' in text
    body = json.loads(text[text.index("{\n"): text.index("\n}\n") + 2])
    env = {e["name"]: e.get("value") for e in body["spec"]["envs"]}
    # each replica maps LEPTON_JOB_WORKER_INDEX and replica 0's service name to torchrun's PET_* in the container
    assert env["NRUN_REPLICAS"] == "lepton" and env["NRUN_NODE_ENV"] == "pet" and env["NRUN_RDZV_PORT"] == "29500"
    script = body["spec"]["container"]["command"][2]
    assert "LEPTON_JOB_WORKER_INDEX" in script and 'PET_RDZV_ENDPOINT="$h:$p"' in script
    check_golden("lepton_dry_run_two_nodes.txt", text)


@pytest.mark.parametrize("args, message", [
    (["hydra.launcher.image=null"], "hydra.launcher.image is not set"),
    (["hydra.launcher.storage=null"], "hydra.launcher.storage is not set"),
    (["hydra.launcher.storage_dir=null"], "hydra.launcher.storage_dir is not set"),
    (["hydra.launcher.nodes=2", "nrun/launcher=torchrun", "hydra.launcher.launcher.nnodes=3"],
     "hydra.launcher.launcher.nnodes=3 but the executor asks for hydra.launcher.nodes=2"),
    (["hydra.launcher.nodes=2", "hydra.launcher.intra_job_communication=false"], "must reach replica 0"),
    (["hydra.launcher.allowed_nodes=[n1]"], "set hydra.launcher.node_group"),
    (["hydra.launcher.resource_shape=gpu.8xh100-80gb", "hydra.launcher.gpus_per_node=4"], "make them agree"),
])
def test_bad_settings_are_refused_naming_the_setting(home, proj, args, message):
    proc = launch(proj, "x=1", *args)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_a_sweep_dir_off_the_shared_storage_is_refused(home, proj, tmp_path):
    proc = launch(proj, "x=1", f"hydra.launcher.storage_dir={tmp_path}/elsewhere")
    assert proc.returncode != 0
    assert "is not under hydra.launcher.storage_dir" in proc.stderr and "hydra.sweep.dir=" in proc.stderr


def test_a_missing_token_is_refused_naming_the_variable(home, proj):
    proc = launch(proj, "x=1", "hydra.launcher.token_env=MY_LEPTON_TOKEN")
    assert proc.returncode != 0 and "$MY_LEPTON_TOKEN is not set" in proc.stderr, proc.stderr[-2000:]


@pytest.mark.parametrize("vendor_env, node_env, expected", [
    ({"NRUN_REPLICAS": "lepton", "NRUN_RDZV_PORT": "29500", "LEPTON_JOB_WORKER_INDEX": "1",
      "LEPTON_JOB_SERVICE_PREFIX": "job7", "LEPTON_SUBDOMAIN": "job7-job-svc"}, "pet",
     "PET_NODE_RANK=1 PET_RDZV_ENDPOINT=job7-0.job7-job-svc:29500 PET_RDZV_CONF=is_host=false"),
    ({"NRUN_REPLICAS": "lepton", "NRUN_RDZV_PORT": "29511", "LEPTON_JOB_WORKER_INDEX": "1",
      "LEPTON_JOB_NAME": "job8"}, "torch",
     "MASTER_ADDR=job8-0.job8-job-svc MASTER_PORT=29511 RANK=1 WORLD_SIZE=2"),
    ({"NRUN_REPLICAS": "pytorchjob", "RANK": "1", "MASTER_ADDR": "w-master-0", "MASTER_PORT": "23456"}, "pet",
     "PET_NODE_RANK=1 PET_RDZV_ENDPOINT=w-master-0:23456 PET_RDZV_CONF=is_host=false"),
])
def test_each_replica_maps_the_vendor_variables_to_its_launcher(tmp_path, vendor_env, node_env, expected):
    """The multi-node container script, run by sh as a replica would run it: the vendor's
    variables become the launcher's, and replica 1 writes its own node log."""
    from nrun_core.executors.cloudjob.command import MULTI_SCRIPT

    show = ('echo PET_NODE_RANK=$PET_NODE_RANK PET_RDZV_ENDPOINT=$PET_RDZV_ENDPOINT PET_RDZV_CONF=$PET_RDZV_CONF '
            'MASTER_ADDR=$MASTER_ADDR MASTER_PORT=$MASTER_PORT RANK=$RANK WORLD_SIZE=$WORLD_SIZE')
    env = {"PATH": os.environ["PATH"], "NRUN_POINT": "0", "NRUN_NODES": "2", "NRUN_NODE_ENV": node_env,
           "NRUN_STDOUT": str(tmp_path / "stdout.log"), "NRUN_STDERR": str(tmp_path / "stderr.log"), **vendor_env}
    proc = subprocess.run(["sh", "-c", MULTI_SCRIPT, "nrun-point", str(tmp_path), "sh", "-c", show], env=env,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert f"output in {tmp_path}/stdout.node1.log" in proc.stdout
    out = (tmp_path / "stdout.node1.log").read_text()
    assert all(word in out.split() for word in expected.split()), out
    assert not (tmp_path / "stdout.log").exists()
