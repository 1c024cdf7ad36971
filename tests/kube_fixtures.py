"""Fixtures for the nrun_kubeflow / nrun_kuberay tests: a real kube-apiserver + etcd on loopback
(`nrun sandbox kube`) with the upstream CRDs adapted for 1.20, and a fake operator playing the
Trainer and KubeRay controllers and the kubelet (tests/fakes/kube_operator.py).

The session fixture brings the sandbox up itself when the apiserver binary is already built (a
warm start takes seconds); the one-time build (7-16 min) is an explicit step: `nrun sandbox kube
up` (tests/run.sh does it in CI). A missing sandbox skips, or fails under NRUN_REQUIRE=kube.

The "volume" is a hostPath: pytest's base temp dir, mounted in the pods at the same path, so
every test's tmp_path is on it and the processes the fake operator starts write real values.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List

import pytest

from require import missing, pointed_at


@dataclass
class KubeSandbox:
    env: Dict[str, str]
    operator: object
    storage: str

    def args(self, option: str) -> List[str]:
        """Options every sweep on the sandbox takes (the image is never pulled: no kubelet)."""
        import sys

        return [f"hydra/launcher={option}", "hydra.launcher.image=nrun-test:never-pulled",
                f"hydra.launcher.host_path={self.storage}", f"hydra.launcher.storage_dir={self.storage}",
                f"hydra.launcher.python={sys.executable}", "hydra.launcher.poll_s=0.3",
                "hydra.launcher.poll_max_s=2"]


def _up() -> Dict[str, str]:
    from nrun_core.errors import NrunError
    from nrun_core.sandbox import kube, kube_build

    ok, report = kube.status()
    if ok:
        return kube.env()
    if not kube_build.binary_path().is_file():
        missing("kube", "the kube sandbox's apiserver is not built: run `nrun sandbox kube up` once "
                f"(builds kube-apiserver, 7-16 min, cached)\n{report}")
    try:
        return kube.up()
    except NrunError as exc:
        missing("kube", f"`nrun sandbox kube up` failed: {exc}")


@pytest.fixture(scope="session")
def kube_sandbox(tmp_path_factory) -> KubeSandbox:
    try:
        import kubernetes  # noqa: F401
    except ImportError:
        missing("kube", "the kubernetes client is not installed: pip install -e '.[kube]'")
    env = _up()
    from fakes.kube_operator import FakeOperator

    storage = str(tmp_path_factory.getbasetemp())
    # One operator per test process: pytest makes a session fixture imported into several modules
    # once per module, and two operators watching one apiserver would both run a point (its
    # output twice) or split a sweep's points between them.
    operator = _live.get("operator")
    owner = operator is None
    if owner:
        operator = FakeOperator(env["KUBECONFIG"]).start()
        _live["operator"] = operator
    yield KubeSandbox(env=env, operator=operator, storage=storage)
    if owner:
        _live.pop("operator", None)
        operator.stop()


_live: Dict[str, object] = {}  # the session's operator, for sweep_is_gone()


@pytest.fixture
def kube_env(kube_sandbox, monkeypatch) -> KubeSandbox:
    pointed_at({**kube_sandbox.env, "NRUN_KUBE_STORAGE_DIR": kube_sandbox.storage}, monkeypatch)
    return kube_sandbox


def kube_args(option: str) -> List[str]:
    """What kube_sandbox.args gives, rebuilt from the environment kube_env exported (the
    conformance suite builds its command lines from these; no hydra/launcher= in them)."""
    sandbox = KubeSandbox(env={}, operator=None, storage=os.environ["NRUN_KUBE_STORAGE_DIR"])
    return [a for a in sandbox.args(option) if not a.startswith("hydra/launcher=")]


def sweep_is_gone(sweep: str) -> bool:
    """No TrainJob or RayJob of the sweep is left on the apiserver, and no process of it runs."""
    from kubernetes import client, config

    operator = _live["operator"]
    api = client.CustomObjectsApi(config.new_client_from_config(config_file=os.environ["KUBECONFIG"]))
    for group, version, plural in (("trainer.kubeflow.org", "v1alpha1", "trainjobs"), ("ray.io", "v1", "rayjobs")):
        if api.list_cluster_custom_object(group, version, plural, label_selector=f"nrun.dev/sweep={sweep}")["items"]:
            return False
    return not operator.live(sweep)  # type: ignore[attr-defined]
