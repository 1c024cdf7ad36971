"""The fake cloud APIs for the nrun_lepton and nrun_dgxcloud tests: one session fixture starts
both (stdlib HTTP servers on 127.0.0.1, in this pytest process) on the Docker sandbox's engine,
so the jobs they accept really run as containers. The shared storage both fakes mount into
those containers is pytest's base temp dir: every test's tmp_path lies under it, so sweep dirs
there are on the "shared storage" as the executors require.

Tests read the environment the executors need from ``CloudFakes.env(kind)`` and the options
every sweep takes from ``CloudFakes.args(kind)``; they count API calls on ``fakes.lepton.calls``
and ``fakes.runai.calls``.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
from dataclasses import dataclass
from typing import Dict, List

import pytest

from docker_fixtures import docker_sandbox  # noqa: F401  (requested below)
from require import missing, pointed_at

LEPTON_STORAGE = "node-nfs:nrun-test"
RUNAI_PVC = "nrun-test-pvc"
RUNAI_PROJECT = "nrun-test"
RUNAI_CLIENT = "nrun-test-app"


@dataclass
class CloudFakes:
    lepton: object
    runai: object
    storage: str
    lepton_env: Dict[str, str]
    runai_env: Dict[str, str]
    sandbox_env: Dict[str, str]

    def env(self, kind: str) -> Dict[str, str]:
        return {**self.sandbox_env, **(self.lepton_env if kind == "lepton" else self.runai_env),
                "NRUN_CLOUD_STORAGE_DIR": self.storage}

    def args(self, kind: str) -> List[str]:
        image = self.sandbox_env["NRUN_SANDBOX_IMAGE"]
        common = [f"hydra.launcher.image={image}", f"hydra.launcher.storage_dir={self.storage}",
                  "hydra.launcher.poll_s=0.5", "hydra.launcher.poll_max_s=4"]
        if kind == "lepton":
            return ["hydra/launcher=nrun_lepton", f"hydra.launcher.storage={LEPTON_STORAGE}", *common]
        return ["hydra/launcher=nrun_dgxcloud", f"hydra.launcher.project={RUNAI_PROJECT}",
                f"hydra.launcher.pvc={RUNAI_PVC}", f"hydra.launcher.client_id={RUNAI_CLIENT}", *common]

    def live_containers(self, sweep: str) -> List[object]:
        return self.lepton.live_containers(sweep) + self.runai.live_containers(sweep)  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def cloud_fakes(docker_sandbox, tmp_path_factory) -> CloudFakes:  # noqa: F811
    """Both fakes, started once per session; their jobs run on the Docker sandbox."""
    for module, need in (("leptonai", "lepton"), ("httpx", "dgxcloud")):
        if importlib.util.find_spec(module) is None:
            missing(need, f"{module} is not installed: pip install -e '.[{need}]' (the test extras have it)")
    from fakes.lepton_api import FakeLepton
    from fakes.runai_api import FakeRunai

    storage = str(tmp_path_factory.getbasetemp())
    host = docker_sandbox["DOCKER_HOST"]
    token, secret = "lt-" + secrets.token_hex(12), "rs-" + secrets.token_hex(12)
    lepton = FakeLepton(token=token, storages={LEPTON_STORAGE: storage}, docker_host=host)
    runai = FakeRunai(clients={RUNAI_CLIENT: secret}, projects=[RUNAI_PROJECT], pvcs={RUNAI_PVC: storage},
                      docker_host=host)
    lroot, rroot = lepton.start(), runai.start()
    fakes = CloudFakes(
        lepton=lepton, runai=runai, storage=storage, sandbox_env=dict(docker_sandbox),
        lepton_env={"LEPTON_WORKSPACE_ID": lepton.workspace, "LEPTON_WORKSPACE_URL": lepton.url(lroot),
                    "LEPTON_WORKSPACE_TOKEN": token},
        runai_env={"RUNAI_BASE_URL": rroot + "/api/v1", "RUNAI_CLIENT_SECRET": secret})
    yield fakes
    for fake in (lepton, runai):
        fake.stop()
        fake.docker.cleanup()


@pytest.fixture
def lepton_env(cloud_fakes, monkeypatch) -> CloudFakes:
    pointed_at(cloud_fakes.env("lepton"), monkeypatch)
    return cloud_fakes


@pytest.fixture
def dgx_env(cloud_fakes, monkeypatch) -> CloudFakes:
    pointed_at(cloud_fakes.env("dgxcloud"), monkeypatch)
    return cloud_fakes


__all__ = ["CloudFakes", "cloud_fakes", "lepton_env", "dgx_env", "os"]


def cloud_args(kind: str) -> List[str]:
    """Options every sweep on a fake takes, from the environment the fixture exported (the
    conformance suite builds its command lines from these; no hydra/launcher= in them)."""
    image, storage = os.environ["NRUN_SANDBOX_IMAGE"], os.environ["NRUN_CLOUD_STORAGE_DIR"]
    return [a for a in CloudFakes(None, None, storage, {}, {}, {"NRUN_SANDBOX_IMAGE": image}).args(kind)
            if not a.startswith("hydra/launcher=")]


def live_containers(sweep: str) -> List[object]:
    """Containers the fakes still hold for a sweep (what a cancelled sweep must not leave)."""
    import docker

    client = docker.DockerClient(base_url=os.environ["DOCKER_HOST"], version="auto")
    try:
        return client.containers.list(all=True, filters={"label": f"nrun-fake.sweep={sweep}"})
    finally:
        client.close()
