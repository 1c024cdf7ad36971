"""`nrun/launcher=ft` (NVIDIA's ft_launcher) and the launcher checks every executor shares.

ft_launcher runs here without a GPU (CPU torch, gloo; its GPU and NIC health checks say they are
disabled and go on), so the restart tests are real: a worker crashes once (a marker file plants
the crash for the first run only) and the point still finishes with its value. On nrun_local the
crash is absorbed by ft_launcher's own restart (max_restarts); on Slurm by the requeue loop
(max_retries: the job requeues itself once). torchrun's --max-restarts gets the same test.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import nrun, run_app, status_json
from require import missing
from slurm_fixtures import slurm_cluster, slurm_env  # noqa: F401  (fixtures)

LOCAL = "hydra/launcher=nrun_local"
SLURM = "hydra/launcher=nrun_slurm"
QUIET = "hydra.launcher.progress=lines"
NO_NIC = "hydra.launcher.launcher.enable_nic_monitor=false"  # no InfiniBand here: skip its monitor

CRASH_ONCE = '''\
import os
import pathlib

import hydra


@hydra.main(version_base=None, config_path=None, config_name=None)
def main(cfg):
    marker = pathlib.Path(cfg.marker)
    if not marker.exists():  # the planted crash: the first run only
        marker.write_text("crashed")
        os._exit(3)          # the worker dies without a word, as a segfault or an OOM kill would
    return {"x": cfg.x, "restarts": int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "-1")),
            "requeues": int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)}


main()
'''


def _crash_once_app(tmp_path: Path) -> Path:
    app = tmp_path / "crash_once.py"
    app.write_text(CRASH_ONCE)
    return app


def _needs(module: str) -> None:
    """torch and nvidia-resiliency-ext come with the test extra: CI (NRUN_REQUIRE=torch) fails without them."""
    import importlib.util

    if importlib.util.find_spec(module) is None:  # found, not imported (torch's import is slow)
        missing("torch", f"{module} is not installed: pip install -e '.[test]'")


@pytest.mark.torch
@pytest.mark.parametrize("launcher, extra", [("ft", [NO_NIC]), ("torchrun", [])])
def test_a_crashed_worker_is_restarted_and_the_point_finishes(home, tmp_path, launcher, extra):
    _needs("torch")
    if launcher == "ft":
        _needs("nvidia_resiliency_ext")
    app = _crash_once_app(tmp_path)
    run_app(str(app), LOCAL, QUIET, f"nrun/launcher={launcher}", "hydra.launcher.launcher.max_restarts=1",
            *extra, f"+marker={tmp_path}/marker", "+x=5", cwd=tmp_path, check=True,
            env={"OMP_NUM_THREADS": "1"}, timeout=240)
    p = status_json()["points"][0]
    assert p["state"] == "COMPLETED"
    assert p["value_repr"] == "{'x': 5, 'restarts': 1, 'requeues': 0}"   # the value of the second run
    assert (tmp_path / "marker").read_text() == "crashed"                 # the first one did crash
    err = (tmp_path / "multirun" / "0" / "stderr.log").read_text()
    assert "failed (exitcode: 3)" in err                                   # the agent saw the crash


def test_ft_dry_run_shows_the_exact_command(home, tmp_path):
    proc = run_app("sweep_app.py", LOCAL, "x=1", "nrun/launcher=ft", "hydra.launcher.dry_run=true",
                   "hydra.launcher.launcher.max_restarts=3", "hydra.launcher.launcher.restart_policy=min-healthy",
                   "hydra.launcher.launcher.initial_rank_heartbeat_timeout=600",
                   "hydra.launcher.launcher.rank_heartbeat_timeout=60",
                   "+hydra.launcher.launcher.rank_section_timeouts={setup:600,step:180}",
                   "hydra.launcher.launcher.rank_termination_signal=SIGKILL", NO_NIC, cwd=tmp_path, check=True)
    line = next(ln for ln in proc.stdout.splitlines() if "fault_tolerance.launcher" in ln)
    assert line.split(" -m nvidia_resiliency_ext.fault_tolerance.launcher ")[1].split(" /")[0] == (
        "--nnodes=1 --nproc-per-node=1 --max-restarts=3 --standalone --ft-restart-policy=min-healthy "
        "--ft-initial-rank-heartbeat-timeout=600 --ft-rank-heartbeat-timeout=60 "
        "--ft-rank-section-timeouts=setup:600,step:180 --ft-rank-termination-signal=SIGKILL "
        "--ft-enable-nic-monitor=false")
    assert line.endswith("point.json") and "runtime/point.py" in line   # the portable point runtime


@pytest.mark.parametrize("args, words", [
    (["nrun/launcher=ray"], ["nrun/launcher=ray cannot run on hydra/launcher=nrun_local",
                             "Slurm allocation", "direct, ft, torchrun"]),
    (["nrun/launcher=ft", "hydra.launcher.launcher.max_retries=2"],
     ["hydra.launcher.launcher.max_retries=2", "nrun_slurm", "hydra.launcher.retries"]),
    (["nrun/launcher=ft", "hydra.launcher.launcher.restart_policy=sometimes"],
     ["restart_policy='sometimes'", "any-failed, min-healthy"]),
    (["nrun/launcher=ft", "hydra.launcher.launcher.rank_heartbeat_timeout=-5"],
     ["rank_heartbeat_timeout=-5", "seconds > 0"]),
    (["nrun/launcher=ft", "+hydra.launcher.launcher.heartbeat=5"], ["heartbeat", "rank_heartbeat_timeout"]),
])
def test_a_launcher_that_cannot_run_is_refused_before_anything(home, tmp_path, args, words):
    proc = run_app("sweep_app.py", LOCAL, "x=1,2", *args, cwd=tmp_path)
    assert proc.returncode != 0
    for word in words:
        assert word in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "multirun").exists()
    assert nrun("list").stdout.count("\n") <= 1        # nothing recorded


@pytest.mark.slurm
def test_ft_requeue_loop_on_slurm_finishes_the_point(slurm_env, home, tmp_path):
    """max_restarts=0, max_retries=1: the crash fails ft_launcher, the job requeues itself once
    (same Slurm id), and the second run returns the value."""
    _needs("nvidia_resiliency_ext")
    app = _crash_once_app(tmp_path)
    run_app(str(app), SLURM, QUIET, "nrun/launcher=ft", "hydra.launcher.launcher.max_retries=1", NO_NIC,
            f"+marker={tmp_path}/marker", "+x=5", cwd=tmp_path, check=True, timeout=240)
    p = status_json()["points"][0]
    assert p["state"] == "COMPLETED"
    assert p["value_repr"] == "{'x': 5, 'restarts': 0, 'requeues': 1}"   # ran again in the requeued job
    err = (tmp_path / "multirun" / "0" / "stderr.log").read_text()
    assert f"requeueing Slurm job {p['backend_id']} (1 of hydra.launcher.launcher.max_retries=1)" in err


def test_ft_on_slurm_multinode_script_golden(home, tmp_path):
    """Two nodes of ft_launcher (PET_* per Slurm task, as torchrun) and the requeue loop."""
    from test_slurm_render import _dry_run, _golden

    text = _dry_run(tmp_path, "x=1", "nrun/launcher=ft", "hydra.launcher.nodes=2", "hydra.launcher.gpus_per_node=8",
                    "hydra.launcher.launcher.max_restarts=2", "hydra.launcher.launcher.max_retries=3",
                    "hydra.launcher.launcher.rank_heartbeat_timeout=300", "hydra.launcher.job_name=ft")
    assert ("-m nvidia_resiliency_ext.fault_tolerance.launcher --nnodes=2 --nproc-per-node=8 --max-restarts=2 "
            "--rdzv-backend=c10d --rdzv-id=<SWEEP_ID>-0 --ft-rank-heartbeat-timeout=300 <ROOT>/nrun_core/runtime/point.py"
            ) in text
    assert "PET_NODE_RANK=$SLURM_NODEID PET_RDZV_ENDPOINT=<first node>:29500+SLURM_JOB_ID%1000 (ft)" in text
    assert "requeues its own job (task 0: scontrol requeue $SLURM_JOB_ID; same Slurm id), at most 3 time(s)" in text
    _golden("ft_2nodes", text)


def test_ft_on_two_ssh_hosts_golden(home, tmp_path):
    """ft on nrun_ssh: the same agent argv on both hosts, their rank and rendezvous as PET_*."""
    from test_docker_dryrun import check_golden
    from test_ssh_dryrun import dry_run

    text = dry_run(tmp_path, "x=1", "nrun/launcher=ft", "hydra.launcher.nodes=2",
                   "hydra.launcher.launcher.max_restarts=1", "hydra.launcher.launcher.workload_check_interval=5")
    assert text.count('"nvidia_resiliency_ext.fault_tolerance.launcher",') == 2       # one agent per host
    assert '"PET_NODE_RANK": "1"' in text and '"PET_RDZV_ENDPOINT": "10.99.0.1:29500"' in text
    assert '"--ft-workload-check-interval=5",' in text
    check_golden("ssh_ft_2hosts.txt", text)
