"""Fixtures for tests that need the Slurm sandbox: skip (or fail, if required) when it is down.

The tests never start the cluster themselves: bringing it up may install packages and takes
seconds, so it is an explicit step (`nrun sandbox slurm up`, or in CI before pytest). With
``NRUN_REQUIRE=slurm`` (comma-separated list) a missing cluster fails the test instead of
skipping it, so CI cannot pass by silently skipping the real backend.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from nrun_core.sandbox import slurm
from require import missing


@pytest.fixture(scope="session")
def slurm_cluster() -> dict[str, str]:
    """The sandbox's client environment ({"SLURM_CONF": ...}) once the cluster is usable."""
    ok, report = slurm.status()
    if not ok:
        msg = (
            "the Slurm sandbox is not up: run `nrun sandbox slurm up` "
            f"(or `python -m nrun_core.sandbox.slurm up`)\n{report}"
        )
        missing("slurm", msg)
    return slurm.env()


@pytest.fixture
def slurm_env(
    slurm_cluster: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    """os.environ pointed at the sandbox for one test (submitit and sbatch read SLURM_CONF)."""
    for key, value in slurm_cluster.items():
        monkeypatch.setenv(key, value)
    yield dict(os.environ)
