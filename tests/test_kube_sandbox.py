"""`nrun sandbox kube`: a real kube-apiserver + etcd on loopback serving the upstream CRDs (adapted
for 1.20), with credentials only its owner can read, restarted warm with its state kept."""

from __future__ import annotations

import json
import os
import stat
import subprocess

from conftest import nrun
from kube_fixtures import kube_sandbox  # noqa: F401  (fixture)

CRDS = ("trainjobs.trainer.kubeflow.org", "clustertrainingruntimes.trainer.kubeflow.org", "rayjobs.ray.io",
        "rayclusters.ray.io")


def test_status_reports_a_ready_apiserver_with_every_crd(kube_sandbox):
    out = nrun("sandbox", "kube", "status")
    assert out.returncode == 0, out.stdout + out.stderr
    for name in CRDS:
        assert f"CRD {name}: Established" in out.stdout
    env = nrun("sandbox", "kube", "env").stdout
    assert f"export KUBECONFIG={kube_sandbox.env['KUBECONFIG']}" in env


def test_credentials_are_readable_by_their_owner_only(kube_sandbox):
    from nrun_core.sandbox import kube

    lay = kube.layout()
    for path in (lay.kubeconfig, lay.tokens, lay.key, lay.sa_key):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_kubectl_sees_the_crds_and_loopback_only(kube_sandbox):
    """A client other than nrun's (kubectl, if installed) works with the kubeconfig as is."""
    import shutil

    if shutil.which("kubectl") is None:
        import pytest

        pytest.skip("kubectl is not installed (the sandbox itself does not need it)")
    out = subprocess.run(["kubectl", "get", "crds", "-o", "json"], capture_output=True, text=True, timeout=60,
                         env={**os.environ, **kube_sandbox.env})
    assert out.returncode == 0, out.stderr
    names = {c["metadata"]["name"] for c in json.loads(out.stdout)["items"]}
    assert set(CRDS) <= names
    server = subprocess.run(["kubectl", "config", "view", "-o", "jsonpath={.clusters[0].cluster.server}"],
                            capture_output=True, text=True, env={**os.environ, **kube_sandbox.env}).stdout
    assert server.startswith("https://127.0.0.1:")


def test_down_then_up_keeps_objects_and_crds(kube_sandbox):
    """A warm restart (binary cached, etcd data kept): what was stored is still there."""
    from kubernetes import client, config

    from nrun_core.sandbox import kube

    def core():
        return client.CoreV1Api(config.new_client_from_config(config_file=kube_sandbox.env["KUBECONFIG"]))

    name = "nrun-sandbox-restart-probe"
    core().create_namespaced_config_map("default", {"metadata": {"name": name}, "data": {"k": "v"}})
    try:
        kube.down()
        ok, report = kube.status()
        assert not ok and "kube-apiserver: not running" in report and "Fix: nrun sandbox kube up" in report
        assert kube.up() == kube_sandbox.env
        assert core().read_namespaced_config_map(name, "default").data == {"k": "v"}
        assert kube.status()[0]
    finally:
        kube.up()
        core().delete_namespaced_config_map(name, "default")
