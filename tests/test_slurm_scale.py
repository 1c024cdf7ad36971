"""nrun_slurm at scale on the real sandbox cluster: sweeps split over several arrays, and several
points packed into one array task (nrun_core/runtime/pack.py).

Needs `nrun sandbox slurm up` (skips otherwise; fails under NRUN_REQUIRE=slurm). A small
``max_array_size`` stands in for the cluster's MaxArraySize so a split needs only a few points.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Dict, List

import pytest

from conftest import nrun, run_app, states, status_json, wait_for
from slurm_fixtures import launch, slurm_cluster, slurm_env  # noqa: F401  (fixtures)

pytestmark = pytest.mark.slurm
SLURM = "hydra/launcher=nrun_slurm"
LINES = "hydra.launcher.progress=lines"


def _points(ref: str = "last") -> Dict[int, dict]:
    return {p["idx"]: p for p in status_json(ref)["points"]}


def _sacct(jobs: List[str], fields: str = "JobID,State") -> List[List[str]]:
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-o", fields, "-j", ",".join(jobs)],
                         capture_output=True, text=True, check=True)
    return [ln.split("|") for ln in out.stdout.splitlines() if ln.strip()]


def test_sweep_over_max_array_size_is_split_and_throttled_as_one_sweep(slurm_env, home, tmp_path):
    # 7 points, arrays of at most 2 tasks (max_array_size=3), at most 2 running at once in all.
    proc = run_app("slurm_app.py", SLURM, LINES, "x=range(0,7)", "action=sleep", "seconds=2",
                   "hydra.launcher.max_array_size=3", "hydra.launcher.array_parallelism=2",
                   "hydra.launcher.points_per_task=1", cwd=tmp_path, check=True)
    assert proc.returncode == 0
    pts = _points()
    assert {i: p["state"] for i, p in pts.items()} == {i: "COMPLETED" for i in range(7)}
    arrays = list(dict.fromkeys(p["backend_id"].split("_")[0] for p in pts.values()))
    assert len(arrays) == 4
    # each array starts at index 0: tasks <array>_0, <array>_1 (a one-task array is a plain job)
    assert [pts[i]["backend_id"] for i in range(7)] == [
        f"{arrays[0]}_0", f"{arrays[0]}_1", f"{arrays[1]}_0", f"{arrays[1]}_1",
        f"{arrays[2]}_0", f"{arrays[2]}_1", arrays[3]]
    assert status_json()["sweep"]["backend_id"] == ",".join(arrays)      # the sweep lists every array
    # Slurm's own record: never more than 2 tasks of the sweep running at the same time
    rows = wait_for(lambda: (lambda r: len(r) == 7 and all(x[2] != "Unknown" for x in r) and r)(
        _sacct(arrays, "JobID,Start,End")))
    spans = [(x[1], x[2]) for x in rows]
    most = max(sum(1 for s, e in spans if s < end and start < e) for start, end in spans)
    assert most <= 2, spans
    for i in range(7):
        assert f"point x={i}" in (tmp_path / "multirun" / str(i) / "stdout.log").read_text()


def test_a_sweep_over_max_submit_jobs_is_refused_before_anything_is_submitted(slurm_env, home, tmp_path):
    """A private account whose association allows 3 jobs (the shared default account is untouched)."""
    user = subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
    account = f"nrun_limit_{os.getpid()}"
    mgr = lambda *a: subprocess.run(["sacctmgr", "-i", *a], capture_output=True, text=True)  # noqa: E731
    assert mgr("add", "account", account).returncode == 0
    try:
        assert mgr("add", "user", user, f"account={account}", "MaxSubmitJobs=3").returncode == 0
        proc = run_app("slurm_app.py", SLURM, "x=range(0,5)", "hydra.launcher.points_per_task=1",
                       f"hydra.launcher.account={account}", cwd=tmp_path)
        (tmp_path / "fits").mkdir()
        fits = run_app("slurm_app.py", SLURM, "x=range(0,3)", "hydra.launcher.points_per_task=1",
                       f"hydra.launcher.account={account}", cwd=tmp_path / "fits")
    finally:
        mgr("delete", "user", user, f"account={account}")
        mgr("delete", "account", account)
    assert proc.returncode != 0
    assert "MaxSubmitJobs=3" in proc.stderr and "points_per_task" in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "multirun" / ".submitit").exists()               # nothing submitted
    assert fits.returncode == 0, fits.stderr[-2000:]                         # 3 jobs fit


def test_packed_points_keep_their_own_results_logs_ids_and_failures(slurm_env, home, tmp_path):
    # 6 points, 3 per array task: one warm Python per task, one fork per point
    proc = run_app("slurm_app.py", SLURM, LINES, "x=1,2,3", "action=jobid,raise",
                   "hydra.launcher.points_per_task=3", cwd=tmp_path)
    assert proc.returncode != 0                                      # the failed points fail the sweep
    pts = _points()
    by_state = {i: p["state"] for i, p in pts.items()}
    jobid = [i for i, p in pts.items() if "'job_id'" in (p["value_repr"] or "")]
    raised = [i for i, s in by_state.items() if s == "FAILED"]
    assert len(jobid) == 3 and len(raised) == 3 and set(jobid) | set(raised) == set(range(6))
    tasks = {p["backend_id"].split(":")[0] for p in pts.values()}
    assert len(tasks) == 2                                            # two array tasks, 3 points each
    for i in jobid:                                                   # hydra.job.id is the point's own id
        assert f"'job_id': '{pts[i]['backend_id']}'" in pts[i]["value_repr"]
    for i in raised:
        assert "ValueError: boom" in pts[i]["error"]
    for i, p in pts.items():                                          # each point's own logs
        out = Path(p["stdout"]).read_text()
        assert out.count("point x=") == 1
        assert "to-stderr" in Path(p["stderr"]).read_text()
        record = json.loads((Path(p["stdout"]).parent / ".nrun" / status_json()["sweep"]["id"] / "pack.json")
                            .read_text())
        assert record["exit_code"] == (0 if i in jobid else 1)


def test_a_failed_packed_point_is_retried(slurm_env, home, tmp_path):
    proc = run_app("slurm_app.py", SLURM, LINES, "x=1,2,3,4", "action=flaky", "hydra.launcher.retries=1",
                   "hydra.launcher.points_per_task=4", cwd=tmp_path, check=True)
    assert proc.returncode == 0
    pts = _points()
    assert all(p["state"] == "COMPLETED" and p["attempts"] == 2 for p in pts.values()), pts
    assert all(p["value_repr"] == "'second attempt'" for p in pts.values())   # alone, or in a new pack


def test_timeout_of_a_packed_point_stops_only_that_point(slurm_env, home, tmp_path):
    proc = run_app("slurm_app.py", SLURM, LINES, "x=1,2", "action=sleep", "seconds=600",
                   "hydra.launcher.timeout_s=2", "hydra.launcher.points_per_task=2", cwd=tmp_path)
    assert proc.returncode != 0
    pts = _points()
    assert {i: p["state"] for i, p in pts.items()} == {0: "TIMEOUT", 1: "TIMEOUT"}   # the pack went on
    assert "timeout_s=2" in pts[0]["error"]


def test_nrun_cancel_of_one_packed_point_stops_just_that_point(slurm_env, home, tmp_path, launch):
    proc = launch("x=1,2,3", "action=sleep", "seconds=600", "hydra.launcher.points_per_task=3")
    wait_for(lambda: states().get(0) == "RUNNING", timeout=120)
    out = nrun("cancel", "last", "0")
    assert out.returncode == 0, out.stderr
    wait_for(lambda: states().get(0) == "CANCELLED" and states().get(1) == "RUNNING", timeout=60)
    assert states()[2] == "QUEUED"                                    # the pack went on with its next point
    task = _points()[1]["backend_id"].split(":")[0]
    assert subprocess.run(["squeue", "-h", "-j", task], capture_output=True, text=True).stdout.strip()
    out = nrun("cancel", "last")                                      # the rest: scancel of the array task
    assert out.returncode == 0, out.stderr
    proc.communicate(timeout=120)
    assert states() == {0: "CANCELLED", 1: "CANCELLED", 2: "CANCELLED"}
    wait_for(lambda: not subprocess.run(["squeue", "-h", "-j", task], capture_output=True,
                                        text=True).stdout.strip(), timeout=60)


@pytest.mark.timeout(1200)
def test_thousand_points_end_to_end_nothing_lost(slurm_env, home, tmp_path):
    """1,000 trivial points, auto-packed, split if needed, every value back (about a minute)."""
    run_app("slurm_app.py", SLURM, "hydra.launcher.progress=quiet", "x=range(0,1000)", cwd=tmp_path,
            check=True, timeout=900)
    pts = _points()
    assert len(pts) == 1000 and all(p["state"] == "COMPLETED" for p in pts.values())
    assert sorted(int(p["value_repr"].split("'square': ")[1].rstrip("}")) for p in pts.values()) == \
        sorted(i * i for i in range(1000))
