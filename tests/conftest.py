"""Shared test helpers: run Hydra apps the way a user does (a subprocess), with a private store."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import sys
from pathlib import Path
from typing import Callable, Dict, Optional

import pytest

ROOT = Path(__file__).resolve().parents[1]
APPS = ROOT / "tests" / "apps"
PYTHON = sys.executable
NRUN = [PYTHON, "-m", "nrun_core.cli"]


def interruptible() -> None:
    """preexec_fn of a launcher a test will Ctrl-C: SIGINT's default disposition, whatever the
    suite inherited (a suite started as a background job inherits SIGINT ignored, and Python
    then never raises KeyboardInterrupt)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A private NRUN_HOME for the test and every process it starts."""
    h = tmp_path / "nrun_home"
    monkeypatch.setenv("NRUN_HOME", str(h))
    return h


def run_app(app: str, *args: str, cwd: Path, env: Optional[Dict[str, str]] = None,
            timeout: float = 180, check: Optional[bool] = None) -> subprocess.CompletedProcess:
    """`python APP -m ARGS` in cwd (outputs land there), like a user's shell."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.run([PYTHON, str(APPS / app), "-m", *args, f"hydra.sweep.dir={cwd}/multirun"],
                          cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
    if check is True and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def nrun(*args: str, env: Optional[Dict[str, str]] = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*NRUN, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def status_json(ref: str = "last") -> dict:
    out = nrun("status", ref, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def wait_for(cond: Callable[[], object], timeout: float = 90, step: float = 0.2) -> object:
    """Poll ``cond`` until it returns something true (errors of a not-yet-ready state count as
    not yet); fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = cond()
            if last:
                return last
        except (AssertionError, KeyError, IndexError, OSError, json.JSONDecodeError):
            pass
        time.sleep(step)
    raise AssertionError(f"condition not met within {timeout}s (last: {last!r})")


def make_project(tmp_path: Path, *apps: str) -> Path:
    """A user's project dir holding test apps and their conf/ (packagers ship it)."""
    p = tmp_path / "proj"
    p.mkdir()
    for name in ("sweep_app.py", *apps):
        src = APPS / name
        (shutil.copytree(src, p / name, ignore=shutil.ignore_patterns("__pycache__")) if src.is_dir()
         else shutil.copy(src, p))
    shutil.copytree(APPS / "conf", p / "conf")
    return p


def states(ref: str = "last") -> Dict[int, str]:
    return {p["idx"]: p["state"] for p in status_json(ref)["points"]}


from slurm_fixtures import slurm_cluster, slurm_env  # noqa: E402,F401  (shared backend fixtures)
