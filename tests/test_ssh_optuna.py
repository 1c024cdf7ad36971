"""Hydra's Optuna sweeper on nrun (examples/optuna_ssh): a real study whose trials run in
parallel batches, on this machine and over both SSH sandbox hosts, and whose result is built from
the values nrun handed back. The sampler's seed is fixed in the example's config and the
objective is deterministic, so every run asks the same trials: nothing here holds by chance."""

from __future__ import annotations

import os
import runpy
import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict, List

import pytest
import yaml

from conftest import PYTHON, ROOT, status_json
from ssh_fixtures import ssh_env, ssh_sandbox  # noqa: F401

EXAMPLE = ROOT / "examples" / "optuna_ssh"
SWEEPER = yaml.safe_load((EXAMPLE / "conf" / "fit.yaml").read_text())["hydra"]["sweeper"]
BATCH = SWEEPER["n_jobs"]


@pytest.fixture
def proj(tmp_path: Path) -> Path:
    """The example as a user's project of its own (nrun_ssh ships this directory)."""
    return Path(shutil.copytree(EXAMPLE, tmp_path / "proj",
                                ignore=shutil.ignore_patterns("__pycache__", "multirun", "outputs")))


def study(proj: Path, *args: str) -> Path:
    """Run the example's study as its README says; the sweep dir."""
    sweep_dir = proj.parent / "multirun"
    proc = subprocess.Popen([PYTHON, "fit.py", "-m", *args, "hydra.launcher.progress=lines",
                             f"hydra.sweep.dir={sweep_dir}"], cwd=proj, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        out, err = proc.communicate(timeout=480)
    except subprocess.TimeoutExpired:  # stop it as a user would (its points too), and show why
        proc.terminate()
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        raise AssertionError(f"the study did not end within 480 s\n{out[-3000:]}\n{err[-6000:]}")
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out[-3000:]}\n{err[-5000:]}"
    return sweep_dir


def check_study(proj: Path, sweep_dir: Path) -> List[Dict[str, Any]]:
    """What a user of the study checks, from `nrun status --json` and the sweeper's own result."""
    points = status_json()["points"]
    assert len(points) == SWEEPER["n_trials"] >= 8
    assert [p["state"] for p in points] == ["COMPLETED"] * len(points)
    values = [float(p["value_repr"]) for p in points]
    for i, v in enumerate(values):  # each value is what the trial itself computed and printed
        assert f"val_mse={v:.6f}" in (sweep_dir / str(i) / "stdout.log").read_text()
    result = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    best = min(values)
    assert result["best_value"] == best
    # ... and the best parameters are that trial's own: values reached the trials they belong to
    overrides = dict(o.split("=", 1) for o in points[values.index(best)]["overrides"])
    assert {k: float(v) for k, v in overrides.items()} == {k: float(v) for k, v in result["best_params"].items()}
    # the sweeper learnt from the values: later batches beat the first (random) one, near the optimum
    assert best < min(values[:BATCH])
    optimum = runpy.run_path(str(proj / "fit.py"), run_name="fit_objective")["known_optimum"]()
    assert optimum <= best <= 1.1 * optimum, (best, optimum)
    return points


@pytest.mark.timeout(600)
def test_optuna_study_over_two_ssh_hosts(ssh_env, home, proj):
    sweep_dir = study(proj, "hydra/launcher=nrun_ssh")
    points = check_study(proj, sweep_dir)
    hosts = [p["backend_id"].split("/")[0] for p in points]
    assert {"nrun-host1", "nrun-host2"} <= set(hosts), hosts
    for i in range(0, len(points), BATCH):  # every batch ran in parallel, spread over the hosts
        assert len(set(hosts[i:i + BATCH])) >= 2, hosts
    for i, host in enumerate(hosts):  # ... really there: the trial saw that host's own hostname
        assert f"on {host}" in (sweep_dir / str(i) / "stdout.log").read_text()


@pytest.mark.timeout(600)
def test_optuna_study_on_this_machine(home, proj):
    sweep_dir = study(proj, "hydra/launcher=nrun_local")
    check_study(proj, sweep_dir)
