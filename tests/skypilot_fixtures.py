"""Fixtures for tests that run real SkyPilot on the SkyPilot sandbox (its infra: the Slurm sandbox).

The tests never start the sandbox (`nrun sandbox skypilot up`, or CI before pytest); with
NRUN_REQUIRE=skypilot a missing one fails instead of skipping. One SkyPilot cluster serves the
whole session (the first sweep launches it, ~1 min); it is taken down when the session ends.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Dict, Iterator

import pytest

from require import missing


@pytest.fixture(scope="session")
def sky_sandbox() -> Iterator[Dict[str, str]]:
    """The client environment of the sandbox plus NRUN_TEST_SKY_CLUSTER, the session's cluster."""
    from nrun_core.sandbox import skypilot, slurm

    ok, report = skypilot.status()
    if not ok:
        missing("skypilot", "the SkyPilot sandbox is not up: run `nrun sandbox slurm up` then "
                f"`nrun sandbox skypilot up`\n{report}")
    cluster = f"nrun-test-{os.getpid()}"
    env = {**skypilot.env(), **slurm.env(), "NRUN_TEST_SKY_CLUSTER": cluster}
    yield env
    sky = Path(os.environ.get("VIRTUAL_ENV") or Path(__import__("sys").executable).parent.parent) / "bin" / "sky"
    subprocess.run([str(sky), "down", "-y", cluster], env={**os.environ, **env}, capture_output=True, timeout=300)


@pytest.fixture
def sky_env(sky_sandbox: Dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Dict[str, str]:
    """os.environ pointed at the sandbox for one test: `hydra/launcher=nrun_skypilot` alone targets it."""
    for k, v in sky_sandbox.items():
        monkeypatch.setenv(k, v)
    return sky_sandbox


def sky_queue(cluster: str) -> Dict[int, str]:
    """Job id -> state (SUCCEEDED, CANCELLED, RUNNING, ...) in the cluster's SkyPilot queue."""
    import json
    import sys

    code = ("import json, sky; print(json.dumps({int(r['job_id']): str(r['status']).rsplit('.', 1)[-1] "
            f"for r in sky.get(sky.queue({cluster!r}))}}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return {int(k): v for k, v in json.loads(out.stdout.strip().splitlines()[-1]).items()}
