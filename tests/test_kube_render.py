"""nrun_kubeflow and nrun_kuberay without a cluster: the dry run's manifests (pinned by golden
files), validated offline against the UNMODIFIED upstream CRD schemas (a wrong-typed field is
rejected), and setting errors caught before anything is submitted.

Golden files: tests/golden/kube*.txt; paths, ids and digests are normalised. After an intended
change, regenerate with NRUN_UPDATE_GOLDEN=1 and review the diff.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any, Dict, List

import pytest
import yaml

from conftest import PYTHON, make_project
from require import missing
from dryrun import check_golden, normalised

NO_CLUSTER = {"KUBECONFIG": "/nonexistent/nrun-test-kubeconfig"}  # proves no cluster is needed


def dry_run(proj: Path, option: str, *args: str) -> subprocess.CompletedProcess:
    store = proj.parent
    cmd = [PYTHON, "sweep_app.py", "-m", f"hydra/launcher={option}", "hydra.launcher.image=example.org/train:1.0",
           f"hydra.launcher.storage_dir={store}", f"hydra.sweep.dir={store}/multirun", "hydra.launcher.dry_run=true",
           *args]
    return subprocess.run(cmd, cwd=proj, env={**os.environ, **NO_CLUSTER}, capture_output=True, text=True,
                          timeout=120)


def manifests(stdout: str) -> List[Dict[str, Any]]:
    """The objects the dry run printed (one YAML document after each `## point` title)."""
    docs = []
    for chunk in stdout.split("\n## point ")[1:]:
        body = chunk.split("\n", 1)[1]
        docs.append(yaml.safe_load(body))
    return docs


def schema(kind_file: str, version: str) -> Dict[str, Any]:
    from nrun_core.errors import SandboxError
    from nrun_core.sandbox import kube_crds

    try:
        return kube_crds.schema_of(kind_file, version)
    except (SandboxError, OSError) as exc:
        missing("kube", f"the upstream CRDs are not readable: {exc} (set NRUN_K8S_CRDS)")


def errors(obj: Dict[str, Any], kind_file: str, version: str) -> List[str]:
    import jsonschema

    validator = jsonschema.Draft7Validator(schema(kind_file, version))
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]


@pytest.fixture
def proj(tmp_path: Path) -> Path:
    return make_project(tmp_path)


def test_trainjob_dry_run_is_golden_and_valid_against_the_crd(home, proj, tmp_path):
    proc = dry_run(proj, "nrun_kubeflow", "x=1,2", "hydra.launcher.host_path=/mnt/shared", "hydra.launcher.nodes=2",
                   "hydra.launcher.gpus_per_node=8", "hydra.launcher.cpu=16", "hydra.launcher.memory=64Gi",
                   "++hydra.launcher.secret_refs={HF_TOKEN: 'hf-secret:token'}",
                   "++hydra.launcher.node_selector={nvidia.com/gpu.product: H100}")
    assert proc.returncode == 0, proc.stderr
    objs = manifests(proc.stdout)
    assert [o["metadata"]["labels"]["nrun.dev/point"] for o in objs] == ["0", "1"]
    trainer = objs[0]["spec"]["trainer"]
    assert trainer["numNodes"] == 2 and trainer["resourcesPerNode"]["limits"] == {"nvidia.com/gpu": "8"}
    assert {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-secret", "key": "token"}}} in trainer["env"]
    for obj in objs:
        assert errors(obj, "trainjobs.yaml", "v1alpha1") == []
    check_golden("kubeflow_points.txt", normalised(proc.stdout, tmp_path))


def test_rayjob_dry_run_is_golden_and_valid_against_the_crd(home, proj, tmp_path):
    proc = dry_run(proj, "nrun_kuberay", "x=1", "hydra.launcher.pvc=team-pvc", "hydra.launcher.mount_path=/mnt/pvc",
                   "hydra.launcher.nodes=3", "hydra.launcher.gpus_per_node=1",
                   "++hydra.launcher.runtime_env={pip: [torch]}", "++hydra.launcher.head_start_params={num-cpus: '0'}")
    assert proc.returncode == 0, proc.stderr
    (obj,) = manifests(proc.stdout)
    cluster = obj["spec"]["rayClusterSpec"]
    assert cluster["workerGroupSpecs"][0]["replicas"] == 2
    assert yaml.safe_load(obj["spec"]["runtimeEnvYAML"])["pip"] == ["torch"]
    assert obj["spec"]["entrypoint"].startswith("sh -c ") and "/mnt/pvc/multirun/0/" in obj["spec"]["entrypoint"]
    assert errors(obj, "rayjobs.yaml", "v1") == []
    check_golden("kuberay_point.txt", normalised(proc.stdout, tmp_path))


def test_a_wrong_typed_field_is_rejected_by_the_crd_schema(home, proj):
    proc = dry_run(proj, "nrun_kubeflow", "x=1", "hydra.launcher.host_path=/mnt/shared",
                   "++hydra.launcher.spec_overrides={trainer: {numNodes: two}}")
    assert proc.returncode == 0, proc.stderr
    (obj,) = manifests(proc.stdout)
    assert errors(obj, "trainjobs.yaml", "v1alpha1") == ["spec.trainer.numNodes: 'two' is not of type 'integer'"]
    proc = dry_run(proj, "nrun_kuberay", "x=1", "hydra.launcher.host_path=/mnt/shared",
                   "++hydra.launcher.spec_overrides={rayClusterSpec: {workerGroupSpecs: {replicas: 1}}}")
    (obj,) = manifests(proc.stdout)
    assert any("is not of type 'array'" in e for e in errors(obj, "rayjobs.yaml", "v1"))


@pytest.mark.parametrize("option,args,expect", [
    ("nrun_kubeflow", ["hydra.launcher.host_path=/x", "hydra.launcher.pvc=p"], "exactly one volume"),
    ("nrun_kubeflow", [], "hydra.launcher.host_path=<dir on every node>"),
    ("nrun_kubeflow", ["hydra.launcher.host_path=/x", "hydra.launcher.runtime_kind=Nope"], "runtime_kind=Nope"),
    ("nrun_kuberay", ["hydra.launcher.host_path=/x", "hydra.launcher.submission_mode=Fast"], "submission_mode=Fast"),
    ("nrun_kuberay", ["hydra.launcher.host_path=/x", "++hydra.launcher.labels={team: 'a b'}"], "labels.team"),
    ("nrun_kuberay", ["hydra.launcher.host_path=/x", "++hydra.launcher.secret_refs={TOK: nocolon}"], "secret_refs.TOK"),
])
def test_bad_settings_are_refused_before_anything_is_sent(home, proj, option, args, expect):
    proc = dry_run(proj, option, "x=1", *args)
    assert proc.returncode != 0
    assert expect in proc.stderr, proc.stderr[-2000:]
