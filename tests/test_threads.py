"""The thread budget: each point gets cores // points-at-once threads unless the user said
otherwise, in command mode (variables) and fork mode (torch already imported by the launcher)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from conftest import PYTHON, run_app, status_json
from nrun_core import threads
from nrun_core.placement import Placement
from nrun_core.spec import JobSpec

LOCAL = "hydra/launcher=nrun_local"
CORES = threads.host_cores()

TORCH_APP = '''
import os
import hydra
import torch  # imported by the launcher before any point forks, as a training script does

@hydra.main(version_base=None, config_path=None, config_name=None)
def main(cfg):
    return {"torch": torch.get_num_threads(), "omp": os.environ.get("OMP_NUM_THREADS"),
            "mkl": os.environ.get("MKL_NUM_THREADS")}

if __name__ == "__main__":
    main()
'''


def _spec(**kw) -> JobSpec:
    return JobSpec(sweep_id="s", index=0, overrides=[], job_dir="/tmp/j", **kw)


def test_budget_shares_the_cores_and_never_drops_below_one():
    assert threads.budget(16, 4) == 4
    assert threads.budget(2, 4) == 1
    assert threads.budget(7.5, 1) == 7
    assert threads.local_budget(max_parallel=8, points=1) == CORES  # one point: every core
    assert threads.local_budget(max_parallel=CORES * 4, points=CORES * 4) == 1


def test_a_users_value_wins_over_the_budget():
    env = threads.thread_env(3, {"OMP_NUM_THREADS": "8"}, shell_env={"MKL_NUM_THREADS": "5"})
    assert "OMP_NUM_THREADS" not in env and "MKL_NUM_THREADS" not in env
    assert env["OPENBLAS_NUM_THREADS"] == "3" and env["NUMEXPR_NUM_THREADS"] == "3"
    assert threads.thread_env(None, {}, shell_env={}) == {}
    assert "your own value kept for OMP_NUM_THREADS" in threads.describe(3, {"OMP_NUM_THREADS": "8"}, {})


def test_placement_env_defaults_to_the_points_cpus(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    where = Placement(python="python3", runtime="/r.py", code_dir="/code")
    assert where.env(_spec(cpus_per_task=6), token="t")["OMP_NUM_THREADS"] == "6"   # Slurm's cpus_per_task
    assert "OMP_NUM_THREADS" not in where.env(_spec(), token="t")                    # nothing known: untouched
    assert where.env(_spec(env={"OMP_NUM_THREADS": "2"}, cpus_per_task=6), token="t")["OMP_NUM_THREADS"] == "2"
    monkeypatch.setenv("OMP_NUM_THREADS", "9")  # the launching shell's (inherited by the point)
    assert "OMP_NUM_THREADS" not in where.env(_spec(cpus_per_task=6), token="t")


def test_container_budget_follows_the_cpu_limit():
    assert threads.container_budget(7.5, None, None) == 7
    assert threads.container_budget(None, 3, None) == 3
    assert threads.container_budget(None, None, None) == 1            # one container per CPU by default
    assert threads.container_budget(None, None, 1) == CORES


def test_fork_apply_sets_torch_threads_only_when_torch_is_loaded(monkeypatch):
    class FakeTorch:
        n = None

        def set_num_threads(self, n):
            FakeTorch.n = n

    monkeypatch.delitem(sys.modules, "torch", raising=False)
    assert threads.apply_in_fork({"OMP_NUM_THREADS": "2"}) is None
    assert "torch" not in sys.modules  # never imported on its own
    monkeypatch.setitem(sys.modules, "torch", FakeTorch())
    assert threads.apply_in_fork({"OMP_NUM_THREADS": "2"}) == 2 and FakeTorch.n == 2
    assert threads.apply_in_fork({"OMP_NUM_THREADS": "lots"}) is None


@pytest.fixture
def shell_without_thread_vars(monkeypatch):
    for name in threads.THREAD_VARS:
        monkeypatch.delenv(name, raising=False)


def _torch_app(tmp_path: Path) -> Path:
    pytest.importorskip("torch")
    app = tmp_path / "torch_app.py"
    app.write_text(TORCH_APP)
    return app


def _values() -> dict:
    import ast

    return {p["idx"]: ast.literal_eval(p["value_repr"]) for p in status_json()["points"]}


def _launch(app: Path, tmp_path: Path, *args: str):
    import subprocess

    proc = subprocess.run([PYTHON, str(app), "-m", LOCAL, *args, f"hydra.sweep.dir={tmp_path}/multirun"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr
    return proc


def test_forked_points_get_the_budget_in_torch_and_the_variables(home, tmp_path, shell_without_thread_vars):
    app = _torch_app(tmp_path)
    n = CORES * 2
    proc = _launch(app, tmp_path, f"+x=range({n})", f"hydra.launcher.max_parallel={n}", "hydra.launcher.mode=fork")
    assert "threads per point: 1" in proc.stdout + proc.stderr  # the sweep's header says it
    for value in _values().values():
        assert value == {"torch": 1, "omp": "1", "mkl": "1"}


def test_one_point_alone_keeps_every_core_and_users_value_wins(home, tmp_path, shell_without_thread_vars):
    app = _torch_app(tmp_path)
    _launch(app, tmp_path, "+x=1", "hydra.launcher.mode=fork")
    assert _values()[0]["torch"] == CORES
    _launch(app, tmp_path, "+x=1,2,3,4", "hydra.launcher.max_parallel=4", "hydra.launcher.mode=fork",
            "+hydra.launcher.env.OMP_NUM_THREADS=3")
    for value in _values().values():
        assert value["omp"] == "3" and value["torch"] == 3      # the user's, in torch too
        assert value["mkl"] == str(max(1, CORES // 4))          # the ones left unset: the budget


def test_command_mode_points_get_the_variables(home, tmp_path, shell_without_thread_vars):
    proc = run_app("sweep_app.py", LOCAL, "action=env", "+env_names=[OMP_NUM_THREADS,OPENBLAS_NUM_THREADS]",
                   "x=1,2,3,4", "hydra.launcher.max_parallel=4", "hydra.launcher.mode=command",
                   cwd=tmp_path, check=True)
    want = str(max(1, CORES // 4))
    for p in status_json()["points"]:
        assert f"'OMP_NUM_THREADS': '{want}'" in p["value_repr"], p["value_repr"]
    dry = run_app("sweep_app.py", LOCAL, "x=1,2", "hydra.launcher.max_parallel=2", "hydra.launcher.dry_run=true",
                  cwd=tmp_path, check=True)
    assert f"threads per point: {max(1, CORES // 2)}" in dry.stdout
    assert f"OMP_NUM_THREADS={max(1, CORES // 2)}" in dry.stdout
    assert proc.returncode == 0
