"""nrun_kubeflow and nrun_kuberay against a real kube-apiserver (v1.20, `nrun sandbox kube`) with
the upstream Trainer and KubeRay CRDs; tests/fakes/kube_operator.py plays the operators and the
kubelet (no pods run here): it runs each object's command as a local process on the hostPath
volume and patches the object's status as the operator would.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any, Dict, List

import pytest

from conftest import PYTHON, nrun, states, status_json, wait_for, make_project
from kube_fixtures import kube_env, kube_sandbox  # noqa: F401  (fixtures)

KINDS = {"nrun_kubeflow": ("trainer.kubeflow.org", "v1alpha1", "trainjobs"),
         "nrun_kuberay": ("ray.io", "v1", "rayjobs")}


@pytest.fixture
def proj(tmp_path: Path) -> Path:
    return make_project(tmp_path)


def launch(kube, proj: Path, option: str, *args: str) -> subprocess.CompletedProcess:
    cmd = [PYTHON, "sweep_app.py", "-m", *kube.args(option), "hydra.launcher.progress=lines", *args,
           f"hydra.sweep.dir={proj.parent}/multirun"]
    return subprocess.run(cmd, cwd=proj, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


def objects(kube, option: str, sweep: str) -> List[Dict[str, Any]]:
    """The sweep's objects as the apiserver stores them."""
    from kubernetes import client, config

    api = client.CustomObjectsApi(config.new_client_from_config(config_file=kube.env["KUBECONFIG"]))
    items = api.list_namespaced_custom_object(*KINDS[option][:2], "default", KINDS[option][2],
                                              label_selector=f"nrun.dev/sweep={sweep}")["items"]
    return sorted(items, key=lambda o: int(o["metadata"]["labels"]["nrun.dev/point"]))


def running(kube) -> None:
    """Wait until every point runs; on failure say what nrun and the fake operator saw."""
    try:
        wait_for(lambda: set(states().values()) == {"RUNNING"}, timeout=120)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{nrun('status', 'last').stdout}\noperator errors: {kube.operator.errors}") from None


@pytest.mark.parametrize("option", ["nrun_kubeflow", "nrun_kuberay"])
def test_two_point_sweep_creates_objects_and_cancel_deletes_them(kube_env, home, proj, option):
    proc = launch(kube_env, proj, option, "x=1,2", "action=sleep", "seconds=300", "hydra.launcher.wait=false",
                  "hydra.launcher.nodes=2", "hydra.launcher.gpus_per_node=4", "hydra.launcher.memory=2Gi")
    assert proc.returncode == 0, proc.stderr[-3000:]
    running(kube_env)
    sweep = status_json()["sweep"]["id"]
    objs = objects(kube_env, option, sweep)
    assert [o["metadata"]["labels"]["nrun.dev/point"] for o in objs] == ["0", "1"]
    for i, obj in enumerate(objs):
        assert status_json()["points"][i]["backend_id"] == f"default/{obj['metadata']['name']}"
        if option == "nrun_kubeflow":
            trainer = obj["spec"]["trainer"]
            assert trainer["numNodes"] == 2 and trainer["image"] == "nrun-test:never-pulled"
            assert trainer["resourcesPerNode"] == {"requests": {"memory": "2Gi", "nvidia.com/gpu": "4"},
                                                   "limits": {"nvidia.com/gpu": "4"}}
            assert trainer["command"][-1].endswith(f"multirun/{i}/.nrun/{sweep}/point.json")
            assert obj["spec"]["managedBy"] == "trainer.kubeflow.org/trainjob-controller"  # the CRD's default
        else:
            cluster = obj["spec"]["rayClusterSpec"]
            assert cluster["workerGroupSpecs"][0]["replicas"] == 1
            head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
            assert head["resources"]["limits"] == {"nvidia.com/gpu": "4"}
            assert f"multirun/{i}/.nrun/{sweep}/point.json" in obj["spec"]["entrypoint"]
    try:
        wait_for(lambda: all("point x=" in Path(p["stdout"]).read_text() for p in status_json()["points"]
                             if Path(p["stdout"]).exists()) and len(kube_env.operator.live(sweep)) == 2, timeout=120)
    except AssertionError as exc:
        runs = {r.name: (r.proc and r.proc.poll(), r.ended) for r in kube_env.operator.runs.values()}
        raise AssertionError(f"{exc}\n{nrun('status', 'last').stdout}\noperator: {runs} {kube_env.operator.errors}")
    out = nrun("cancel", "last", timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    wait_for(lambda: set(states().values()) == {"CANCELLED"}, timeout=60)
    wait_for(lambda: not objects(kube_env, option, sweep), timeout=30)
    wait_for(lambda: not kube_env.operator.live(sweep), timeout=30)


@pytest.mark.parametrize("option", ["nrun_kubeflow", "nrun_kuberay"])
def test_finished_objects_give_the_sweep_its_real_values(kube_env, home, proj, option):
    proc = launch(kube_env, proj, option, "x=2", "action=ok,raise")
    assert proc.returncode != 0                                     # the raising point fails the sweep
    points = status_json()["points"]
    assert [p["state"] for p in points] == ["COMPLETED", "FAILED"]
    assert "'square': 4" in points[0]["value_repr"]
    assert "ValueError: boom at x=2" in points[1]["error"]
    assert not objects(kube_env, option, status_json()["sweep"]["id"])   # deleted once read
    logs = nrun("logs", "last", "1", "--stderr")
    assert "ValueError: boom at x=2" in logs.stdout + logs.stderr      # from the volume


def test_max_parallel_bounds_the_objects_alive_at_once(kube_env, home, proj):
    proc = launch(kube_env, proj, "nrun_kuberay", "x=1,2,3", "action=sleep", "seconds=1", "hydra.launcher.max_parallel=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert set(states().values()) == {"COMPLETED"}
    assert kube_env.operator.peak[status_json()["sweep"]["id"]] == 1


def test_an_invalid_field_is_refused_by_the_apiserver_with_its_message(kube_env, home, proj):
    proc = launch(kube_env, proj, "nrun_kubeflow", "x=1", "++hydra.launcher.spec_overrides={trainer: {numNodes: two}}")
    assert proc.returncode != 0
    point = status_json()["points"][0]
    assert point["state"] == "FAILED"
    for text in (point["error"], proc.stderr):
        assert "422" in text and "spec.trainer.numNodes" in text and "must be of type integer" in text, text[-2000:]


def test_a_missing_crd_is_named_before_anything_is_submitted(kube_env, home, proj):
    proc = launch(kube_env, proj, "nrun_kubeflow", "x=1", "hydra.launcher.namespace=no-such-ns")
    assert proc.returncode != 0
    assert "hydra.launcher.namespace=no-such-ns" in proc.stderr, proc.stderr[-2000:]
    assert nrun("list").stdout.count("\n") <= 1                          # nothing was recorded or submitted


def test_secret_env_reaches_the_point_through_a_secret_object(kube_env, home, proj):
    secret = "kube-secret-value-7f1e"
    cmd_env = {"MY_TOKEN": secret}
    cmd = [PYTHON, "sweep_app.py", "-m", *kube_env.args("nrun_kuberay"), "x=1", "action=env",
           "env_names=[MY_TOKEN]", "hydra.launcher.secret_env=[MY_TOKEN]", f"hydra.sweep.dir={proj.parent}/multirun"]
    proc = subprocess.run(cmd, cwd=proj, capture_output=True, text=True, timeout=300, env={**os.environ, **cmd_env})
    assert proc.returncode == 0, proc.stderr[-3000:]
    import hashlib

    digest = "sha256:" + hashlib.sha256(secret.encode()).hexdigest()[:16]
    assert f"'MY_TOKEN': '{digest}'" in status_json()["points"][0]["value_repr"]
    from kubernetes import client, config

    core = client.CoreV1Api(config.new_client_from_config(config_file=kube_env.env["KUBECONFIG"]))
    sweep = status_json()["sweep"]["id"]
    assert not core.list_namespaced_secret("default", label_selector=f"nrun.dev/sweep={sweep}").items  # removed
