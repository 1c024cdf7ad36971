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


def required(backend: str) -> bool:
    """True if NRUN_REQUIRE names BACKEND: its tests must fail, not skip, when it is missing."""
    wanted = os.environ.get("NRUN_REQUIRE", "")
    return backend in {w.strip() for w in wanted.split(",")}


@pytest.fixture(scope="session")
def slurm_cluster() -> dict[str, str]:
    """The sandbox's client environment ({"SLURM_CONF": ...}) once the cluster is usable."""
    ok, report = slurm.status()
    if not ok:
        msg = (
            "the Slurm sandbox is not up: run `nrun sandbox slurm up` "
            f"(or `python -m nrun_core.sandbox.slurm up`)\n{report}"
        )
        if required("slurm"):
            pytest.fail(f"NRUN_REQUIRE=slurm but {msg}", pytrace=False)
        pytest.skip(msg)
    return slurm.env()


@pytest.fixture
def slurm_env(
    slurm_cluster: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    """os.environ pointed at the sandbox for one test (submitit and sbatch read SLURM_CONF)."""
    for key, value in slurm_cluster.items():
        monkeypatch.setenv(key, value)
    yield dict(os.environ)
