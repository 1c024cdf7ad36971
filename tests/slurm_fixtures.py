"""Fixtures for tests that need the Slurm sandbox: skip (or fail, if required) when it is down.

The tests never start the cluster themselves: bringing it up may install packages and takes
seconds, so it is an explicit step (`nrun sandbox slurm up`, or in CI before pytest). With
``NRUN_REQUIRE=slurm`` (comma-separated list) a missing cluster fails the test instead of
skipping it, so CI cannot pass by silently skipping the real backend.
"""

from __future__ import annotations

import signal
import subprocess
from typing import List

import pytest

from conftest import APPS, PYTHON, interruptible

from nrun_core.sandbox import slurm
from require import pointed_at, sandbox_env


@pytest.fixture(scope="session")
def slurm_cluster() -> dict[str, str]:
    """The sandbox's client environment ({"SLURM_CONF": ...}) once the cluster is usable."""
    return sandbox_env("slurm", "Slurm", slurm)


@pytest.fixture
def slurm_env(slurm_cluster: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """os.environ pointed at the sandbox for one test (submitit and sbatch read SLURM_CONF)."""
    return pointed_at(slurm_cluster, monkeypatch)


@pytest.fixture
def launch(tmp_path):
    """Start `slurm_app.py -m hydra/launcher=nrun_slurm ARGS` in the background like a user's
    terminal; Ctrl-C whatever is left at the end (that cancels its Slurm jobs too), so a failed
    test leaves nothing running on the shared cluster."""
    started: List[subprocess.Popen] = []

    def start(*args: str) -> subprocess.Popen:
        proc = subprocess.Popen([PYTHON, str(APPS / "slurm_app.py"), "-m", "hydra/launcher=nrun_slurm",
                                 "hydra.launcher.progress=lines", *args, f"hydra.sweep.dir={tmp_path}/multirun"],
                                cwd=tmp_path, preexec_fn=interruptible,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
