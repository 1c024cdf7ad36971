"""nrun installed from its built wheel (not editable) runs the README's example sweep, and an
executor of another package, installed beside it, gets its own `hydra/launcher=` option."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(600)
def test_wheel_install_runs_example_sweep(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(dist), str(ROOT)], check=True, capture_output=True)
    wheel = next(dist.glob("hydra_nrun-*.whl"))
    names = subprocess.run([sys.executable, "-m", "zipfile", "-l", str(wheel)], capture_output=True,
                           text=True, check=True).stdout
    assert "nrun_conf/nrun/launcher/torchrun.yaml" in names and "hydra_plugins/nrun_launcher/" in names
    for init in sorted((ROOT / "nrun_core").rglob("__init__.py")):  # every subpackage is in the wheel
        package = init.parent.relative_to(ROOT).as_posix()
        assert f"{package}/__init__.py" in names, f"{package} is missing from [tool.setuptools] packages"
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)],
                   check=True, capture_output=True, timeout=480)
    app = tmp_path / "app"
    shutil.copytree(ROOT / "examples", app, ignore=shutil.ignore_patterns("multirun", "outputs"))
    env = {"NRUN_HOME": str(tmp_path / "home"), "PATH": f"{venv}/bin:/usr/bin:/bin"}
    subprocess.run([str(py), "train.py", "-m", "hydra/launcher=nrun_local", "lr=0.1,0.01", "seed=1",
                    "nrun/packager=passthrough", "hydra.launcher.progress=lines", "step_time=0"],
                   cwd=app, env=env, check=True, capture_output=True, timeout=120)
    out = subprocess.run([str(venv / "bin" / "nrun"), "status", "last", "--json"], env=env,
                         capture_output=True, text=True, check=True).stdout
    points = json.loads(out)["points"]
    assert [p["state"] for p in points] == ["COMPLETED", "COMPLETED"]
    assert all(float(p["value_repr"]) < 0 for p in points)

    # An executor of a separate package: pip install it, and the same app sweeps through it.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(dist), str(ROOT / "examples" / "executor_plugin")], check=True, capture_output=True)
    plugin = next(dist.glob("nrun_example_executor-*.whl"))
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps", str(plugin)],
                   check=True, capture_output=True, timeout=240)
    proc = subprocess.run([str(py), "train.py", "-m", "hydra/launcher=nice_spawn", "hydra.launcher.niceness=3",
                           "lr=0.1", "seed=1,2", "hydra.launcher.progress=lines", "step_time=0"],
                          cwd=app, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(subprocess.run([str(venv / "bin" / "nrun"), "status", "last", "--json"], env=env,
                                    capture_output=True, text=True, check=True).stdout)
    assert out["sweep"]["executor"] == "nice_spawn"
    assert [p["state"] for p in out["points"]] == ["COMPLETED", "COMPLETED"]
