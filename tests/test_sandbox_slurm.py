"""The Slurm sandbox is a real cluster: jobs run on n1 and n2, accounting works, up is idempotent.

These tests share the one cluster with every other Slurm test, so none of them stops it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from nrun_core.errors import SandboxError
from nrun_core.sandbox import slurm
from slurm_fixtures import slurm_cluster, slurm_env  # noqa: F401  (fixtures)

FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL"}


def run(argv: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    """Run a Slurm client command; fail the test with its output if it fails."""
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{argv} exited {out.returncode}: {out.stdout}{out.stderr}"
    return out


def sacct_state(jobid: str, env: dict[str, str], timeout: float = 60) -> str:
    """The job's final state as sacct reports it (sacct lags squeue by about a second)."""
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        out = run(["sacct", "-n", "-X", "-P", "-j", jobid, "-o", "State"], env)
        state = out.stdout.strip().split(" ")[0]
        if state in FINAL:
            return state
        time.sleep(0.3)
    pytest.fail(f"job {jobid} not finished in sacct after {timeout} s (last state {state!r})")


@pytest.mark.slurm
def test_up_again_is_fast_and_keeps_the_same_daemons(slurm_env: dict[str, str]) -> None:
    before = slurm.pids()
    t0 = time.monotonic()
    env = slurm.up()
    elapsed = time.monotonic() - t0
    assert env == slurm.env() and Path(env["SLURM_CONF"]).is_file()
    assert sorted(before) == sorted(slurm.DAEMON_NAMES)
    assert slurm.pids() == before, "a second up must not restart running daemons"
    assert elapsed < 5, f"up on a running cluster took {elapsed:.1f} s"


@pytest.mark.slurm
def test_status_reports_every_daemon_and_both_nodes(slurm_env: dict[str, str]) -> None:
    ok, report = slurm.status()
    assert ok, report
    lines = report.splitlines()
    for name, pid in slurm.pids().items():
        assert any(ln.split()[:4] == [name, "up", "pid", str(pid)] for ln in lines), report
    for node in ("n1", "n2"):
        words = [ln.split() for ln in lines]
        assert any(w[:2] == ["node", node] and w[2] in slurm.USABLE for w in words), report


@pytest.mark.slurm
def test_node_names_resolve_to_loopback(slurm_cluster: dict[str, str]) -> None:
    assert socket.gethostbyname("n1") == "127.0.0.1"
    assert socket.gethostbyname("n2") == "127.0.0.1"


@pytest.mark.slurm
def test_sbatch_job_completes_and_shows_in_sacct(slurm_env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "job.out"
    submitted = run(
        ["sbatch", "--parsable", "-o", str(out), "--wrap", 'echo "hello from $SLURMD_NODENAME"'],
        slurm_env,
    )
    jobid = submitted.stdout.strip().split(";")[0]
    assert sacct_state(jobid, slurm_env) == "COMPLETED"
    assert out.read_text().strip() in {"hello from n1", "hello from n2"}


@pytest.mark.slurm
def test_srun_two_nodes_runs_one_task_on_each(slurm_env: dict[str, str]) -> None:
    out = run(
        ["srun", "-N2", "--ntasks-per-node=1", "-t", "2", "sh", "-c", "echo $SLURMD_NODENAME"],
        slurm_env,
    )
    assert sorted(out.stdout.split()) == ["n1", "n2"]


@pytest.mark.slurm
def test_submitit_job_returns_its_value(slurm_env: dict[str, str], tmp_path: Path) -> None:
    import submitit

    executor = submitit.AutoExecutor(folder=tmp_path)
    assert executor.cluster == "slurm"
    # timeout_min well above submitit's 90 s signal delay, or USR2 arrives at once (FACTS.md).
    executor.update_parameters(timeout_min=10, slurm_partition="debug")
    job = executor.submit(os.getenv, "SLURMD_NODENAME")
    assert job.result() in {"n1", "n2"}
    executor.update_parameters(nodes=2, tasks_per_node=1)
    job = executor.submit(os.getenv, "SLURMD_NODENAME")
    assert sorted(job.results()) == ["n1", "n2"]
    assert sacct_state(job.job_id, slurm_env) == "COMPLETED"


def test_too_long_sandbox_dir_is_refused_before_anything_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    long_dir = tmp_path / ("d" * 100)
    monkeypatch.setenv("NRUN_SANDBOX_DIR", str(long_dir))
    with pytest.raises(SandboxError, match="NRUN_SANDBOX_DIR"):
        slurm.up()
    assert not long_dir.exists()
