"""Fixtures for tests that need the Docker sandbox: skip (or fail, if required) when it is down.

Tests never bring the engine up themselves: the first `up` may install docker.io and build the
base image (minutes), so it is an explicit step (`nrun sandbox docker up`, or CI before pytest).
With ``NRUN_REQUIRE=docker`` (comma-separated list) a missing engine or base image FAILS the
test instead of skipping it, so CI cannot pass by silently skipping the real backend. The torch
image is required too when CI also sets ``NRUN_SANDBOX_TORCH=1`` (it asked `up` to build it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from nrun_core.sandbox import docker as docker_sandbox_mod
from require import pointed_at, required, sandbox_env


@pytest.fixture(scope="session")
def docker_sandbox() -> dict[str, str]:
    """The sandbox's client environment (DOCKER_HOST, NRUN_SANDBOX_IMAGE, ...) once usable."""
    return sandbox_env("docker", "Docker", docker_sandbox_mod)


@pytest.fixture
def docker_env(docker_sandbox: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """os.environ pointed at the sandbox engine for one test (docker-py and the CLI read it)."""
    return pointed_at(docker_sandbox, monkeypatch)


@pytest.fixture(scope="session")
def docker_torch_image(docker_sandbox: dict[str, str]) -> str:
    """Tag of the torch CPU image; built by `NRUN_SANDBOX_TORCH=1 nrun sandbox docker up`."""
    tag = docker_sandbox.get("NRUN_SANDBOX_TORCH_IMAGE")
    if not tag:
        msg = ("the Docker sandbox has no torch image: run "
               "`NRUN_SANDBOX_TORCH=1 nrun sandbox docker up`")
        if required("docker") and os.environ.get("NRUN_SANDBOX_TORCH") == "1":
            pytest.fail(f"NRUN_REQUIRE=docker and NRUN_SANDBOX_TORCH=1 but {msg}", pytrace=False)
        pytest.skip(msg)
    return tag


@pytest.fixture
def docker_client(docker_sandbox: dict[str, str]) -> Iterator[Any]:
    """A docker-py client on the sandbox engine (API version negotiated), closed afterwards."""
    import docker

    client = docker.DockerClient(base_url=docker_sandbox["DOCKER_HOST"], version="auto",
                                 timeout=120)
    try:
        yield client
    finally:
        client.close()
