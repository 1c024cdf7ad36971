"""nrun_slurm end to end on the real local Slurm cluster, run the way a user runs a sweep.

Needs `nrun sandbox slurm up` (skips otherwise; fails under NRUN_REQUIRE=slurm). Every test uses a
private NRUN_HOME and its own sweep dir; Slurm ids are matched per sweep, so other users of the
cluster do not disturb the checks.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Dict, List

import pytest

from conftest import APPS, PYTHON, nrun, run_app, states, status_json, interruptible, wait_for
from slurm_fixtures import launch, slurm_cluster, slurm_env  # noqa: F401  (fixtures)

pytestmark = pytest.mark.slurm
SLURM = "hydra/launcher=nrun_slurm"
QUIET = "hydra.launcher.progress=lines"


def _backend_ids(ref: str = "last") -> Dict[int, str]:
    return {p["idx"]: p["backend_id"] for p in status_json(ref)["points"]}


def _queued(job_id: str) -> List[str]:
    """Tasks of this Slurm job still pending, running or completing (what `squeue` shows)."""
    out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%i|%T"], capture_output=True, text=True)
    return [ln for ln in out.stdout.splitlines() if ln.strip()]


def _sacct_states(job_id: str) -> Dict[str, str]:
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", job_id],
                         capture_output=True, text=True, check=True)
    return dict(ln.split("|")[0:2] for ln in out.stdout.splitlines() if ln.strip())


def test_twenty_points_one_array_real_values(slurm_env, home, tmp_path):
    record = tmp_path / "record.json"
    xs = ",".join(str(i) for i in range(20))
    proc = run_app("slurm_app.py", SLURM, QUIET, f"x={xs}", "hydra/sweeper=nrun_test_record",
                   "hydra.sweeper.max_batch_size=20", cwd=tmp_path, check=True,
                   env={"RECORD_FILE": str(record), "PYTHONPATH": str(APPS)})
    seen = json.loads(record.read_text())
    assert [r["value"]["square"] for r in seen] == [i * i for i in range(20)]
    assert all(r["status"] == "COMPLETED" for r in seen)
    ids = _backend_ids()
    array = ids[0].split("_")[0]
    assert ids == {i: f"{array}_{i}" for i in range(20)}          # one array, task i = point i
    assert wait_for(lambda: len(_sacct_states(array)) == 20 and set(_sacct_states(array).values())) == {"COMPLETED"}
    assert "point x=7" in (tmp_path / "multirun" / "7" / "stdout.log").read_text()
    assert "to-stderr" in (tmp_path / "multirun" / "7" / "stderr.log").read_text()
    assert proc.returncode == 0


@pytest.mark.parametrize("mode", ["inprocess", "command"])
def test_job_id_is_the_slurm_id_and_app_values_come_back_as_themselves(slurm_env, home, tmp_path, mode):
    run_app("slurm_app.py", SLURM, QUIET, "action=jobid,point", "x=3", f"hydra.launcher.mode={mode}",
            cwd=tmp_path, check=True)
    points = status_json()["points"]
    assert f"'job_id': '{points[0]['backend_id']}'" in points[0]["value_repr"]
    assert points[1]["value_repr"] == "Point(x=3, y=9)"   # the app's own class, unpickled here


def test_command_mode_and_crashes_are_named(slurm_env, home, tmp_path):
    proc = run_app("sweep_app.py", SLURM, QUIET, "action=ok,exit,segv", "hydra.launcher.mode=command",
                   cwd=tmp_path)
    assert proc.returncode != 0
    assert states() == {0: "COMPLETED", 1: "FAILED", 2: "FAILED"}
    points = status_json()["points"]
    assert "exit code 3" in points[1]["error"]
    assert "SIGSEGV" in points[2]["error"]
    points_ip = run_app("sweep_app.py", SLURM, QUIET, "action=exit", cwd=tmp_path)
    assert points_ip.returncode != 0
    assert "exited with code 3" in status_json()["points"][0]["error"]   # in-process: the worker died


def test_unsupervised_sweep_is_probed_and_cancelled_from_slurm_ids(slurm_env, home, tmp_path):
    run_app("slurm_app.py", SLURM, "action=sleep", "seconds=120", "x=1,2",
            "hydra.launcher.wait=false", cwd=tmp_path, check=True)
    ids = wait_for(lambda: all(_backend_ids().values()) and _backend_ids())
    os.kill(status_json()["sweep"]["supervisor_pid"], signal.SIGKILL)   # nobody watches it now
    time.sleep(0.5)
    assert set(states().values()) == {"RUNNING"}                       # Slurm says they still run
    out = nrun("cancel", "last", timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    wait_for(lambda: not _queued(ids[0].split("_")[0]), timeout=10)
    assert set(states().values()) == {"CANCELLED"}


def test_ctrl_c_cancels_the_array_and_says_so(slurm_env, home, tmp_path, launch):
    launcher = launch("action=sleep", "seconds=120", "x=1,2")
    ids = wait_for(lambda: all(_backend_ids().values()) and _backend_ids())
    array = ids[0].split("_")[0]
    wait_for(lambda: sum("RUNNING" in q for q in _queued(array)) == 2)
    launcher.send_signal(signal.SIGINT)
    _, err = launcher.communicate(timeout=60)
    assert launcher.returncode == 130
    assert f"scancel {array}" in err and "cancelled by Ctrl-C" in err
    wait_for(lambda: not _queued(array), timeout=10)
    assert set(states().values()) == {"CANCELLED"}


def test_retries_resubmit_a_failed_point(slurm_env, home, tmp_path):
    run_app("slurm_app.py", SLURM, QUIET, "action=flaky", "x=1", "hydra.launcher.retries=1",
            cwd=tmp_path, check=True)
    p = status_json()["points"][0]
    assert p["state"] == "COMPLETED" and p["attempts"] == 2 and "second attempt" in p["value_repr"]


def test_requeued_point_still_finishes_with_its_result(slurm_env, home, tmp_path, launch):
    launcher = launch("action=requeue_once", "seconds=120", "x=1,2")
    ids = wait_for(lambda: all(_backend_ids().values()) and _backend_ids())
    wait_for(lambda: "restarts=0" in (tmp_path / "multirun" / "0" / "stdout.log").read_text())
    subprocess.run(["scontrol", "requeue", ids[0]], check=True)           # as preemption would
    _expedite(ids[0])
    wait_for(lambda: states()[0] == "COMPLETED", timeout=150)  # Slurm may wait for its next scheduling pass
    launcher.send_signal(signal.SIGINT)                                   # point 1 sleeps on: stop it
    launcher.communicate(timeout=60)
    p = status_json()["points"][0]
    assert f"'restarts': 1, 'job_id': '{ids[0]}'" in p["value_repr"]    # same id, second run
    log = (tmp_path / "multirun" / "0" / "stdout.log").read_text()
    assert "restarts=0" in log and "restarts=1" in log                  # both attempts logged


def test_timeout_is_checkpointed_and_requeued_by_submitit(slurm_env, home, tmp_path, launch):
    # time=1 min, warned 55 s before the limit: submitit's USR2 handler requeues the point
    launcher = launch("action=requeue_once", "seconds=300", "x=1", "hydra.launcher.time=1",
                      "hydra.launcher.max_num_timeout=1", "hydra.launcher.signal_delay_s=55")
    bid = wait_for(lambda: _backend_ids()[0])
    _wait_state(bid, "RUNNING", timeout=150)  # the start may wait for a free node
    # Slurm sends the warning from its periodic time-limit check (every 30 s or so), a little
    # after the 5 s mark; submitit's handler then requeues the point: pending, reason BeginTime
    _wait_state(bid, "BeginTime", timeout=120)
    _expedite(bid)
    out, err = launcher.communicate(timeout=180)
    assert launcher.returncode == 0, err
    p = status_json()["points"][0]
    assert p["state"] == "COMPLETED" and "'restarts': 1" in p["value_repr"]
    job = tmp_path / "multirun" / "0"
    out = (job / "stdout.log").read_text()
    assert out.index("restarts=0") < out.index("restarts=1")          # one run, requeued, run again
    assert "this job is timed-out" in (job / "stderr.log").read_text()  # submitit's USR2 handler saw it


def test_a_shell_that_cannot_reach_slurm_leaves_the_points_as_recorded(slurm_env, home, tmp_path, launch):
    """The launcher died (-9) with its point running. `nrun status` from a shell whose Slurm does
    not answer (its SLURM_CONF names ports nothing listens on) says so and keeps the point
    RUNNING: silence is not an ending (it was marked LOST, "ended unwatched without a result").
    Once Slurm answers, the point is still RUNNING, and `nrun cancel` stops it."""
    launcher = launch("action=sleep", "seconds=300", "x=1")
    bid = wait_for(lambda: _backend_ids()[0])
    wait_for(lambda: states() == {0: "RUNNING"}, timeout=150)  # as the launcher recorded it
    launcher.kill()
    launcher.communicate(timeout=30)
    try:
        _status_without_slurm_then_cancel(bid, tmp_path)
    finally:
        subprocess.run(["scancel", bid.split(":")[0]], capture_output=True)  # whatever happened above


def _status_without_slurm_then_cancel(bid: str, tmp_path: Path) -> None:
    conf = Path(os.environ["SLURM_CONF"]).read_text()
    closed = [str(_closed_port()) for _ in range(2)]
    unreachable = tmp_path / "unreachable-slurm.conf"
    unreachable.write_text(re.sub(r"(?m)^AccountingStoragePort=\d+", f"AccountingStoragePort={closed[1]}",
                                  re.sub(r"(?m)^SlurmctldPort=\d+", f"SlurmctldPort={closed[0]}", conf)))
    out = nrun("status", "last", "--json", env={"SLURM_CONF": str(unreachable)}, timeout=180)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["points"][0]["state"] == "RUNNING"
    assert "Slurm did not answer" in out.stderr and "SLURM_CONF" in out.stderr, out.stderr
    assert states() == {0: "RUNNING"}                                   # asked again, Slurm answers
    cancel = nrun("cancel", "last", timeout=120)
    assert cancel.returncode == 0, cancel.stdout + cancel.stderr
    assert states() == {0: "CANCELLED"}
    wait_for(lambda: not _queue_state(bid), timeout=60)


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then let go)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_node_torchrun_gloo_allreduce(slurm_env, home, tmp_path):
    pytest.importorskip("torch") if not os.environ.get("NRUN_REQUIRE") else __import__("torch")
    run_app("torch_allreduce.py", SLURM, QUIET, "nrun/launcher=torchrun", "hydra.launcher.nodes=2", "+run=1",
            cwd=tmp_path, check=True, env={"OMP_NUM_THREADS": "1"}, timeout=240)
    p = status_json()["points"][0]
    assert p["state"] == "COMPLETED"
    assert "'world_size': 2, 'sum': 3.0" in p["value_repr"]
    job = tmp_path / "multirun" / "0"
    assert "rank 0/2" in (job / "stdout.log").read_text() + (job / "stdout.rank1.log").read_text()
    nodes = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "NNodes,NodeList", "-j", p["backend_id"]],
                           capture_output=True, text=True).stdout.split("|")
    assert nodes[0] == "2"


def test_dependencies_behave_per_type(slurm_env, home, tmp_path):
    gate = tmp_path / "upstream-may-end"  # the upstream points end only once every dependent is queued
    for name, action in (("up_ok", "sleep"), ("up_fail", "late_raise")):
        (tmp_path / name).mkdir()
        run_app("slurm_app.py", SLURM, f"action={action}", "seconds=1", "x=1,2", "hydra.launcher.wait=false",
                f"+gate={gate}", f"hydra.launcher.sweep_name={name}", cwd=tmp_path / name, check=True)
    cases = {"ok_afterok": "afterok:up_ok", "ok_afternotok": "afternotok:up_ok",
             "fail_afterok": "afterok:up_fail", "fail_afternotok": "afternotok:up_fail",
             "fail_afterany": "afterany:up_fail"}
    procs: Dict[str, subprocess.Popen] = {}
    for name, dep in cases.items():
        (tmp_path / name).mkdir()
        procs[name] = subprocess.Popen(preexec_fn=interruptible, args=
            [PYTHON, str(APPS / "slurm_app.py"), "-m", SLURM, QUIET, "x=1", f"hydra.launcher.dependencies=[{dep}]",
             f"hydra.launcher.sweep_name={name}", f"hydra.sweep.dir={tmp_path / name}/multirun"],
            cwd=tmp_path / name, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: all(nrun("status", n).returncode == 0 and states(n).get(0) == "QUEUED" for n in cases),
                 timeout=180)
        gate.touch()
        codes = {name: (p.wait(timeout=180), p.stderr.read()) for name, p in procs.items()}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
                p.wait(timeout=60)
    final = {name: states(name)[0] if nrun("status", name).returncode == 0 else codes[name] for name in cases}
    assert final == {"ok_afterok": "COMPLETED", "ok_afternotok": "CANCELLED", "fail_afterok": "CANCELLED",
                     "fail_afternotok": "COMPLETED", "fail_afterany": "COMPLETED"}, codes
    assert "never be satisfied" in status_json("fail_afterok")["points"][0]["error"]
    # it really waited: each dependent point started after its upstream points ended
    up_end = {n: max(p["ended"] for p in status_json(n)["points"]) for n in ("up_ok", "up_fail")}
    for name in ("ok_afterok", "fail_afternotok", "fail_afterany"):
        start = _slurm_start(status_json(name)["points"][0]["backend_id"])
        assert start >= int(up_end["up_" + name.split("_")[0]]) - 1, name
    # a finished upstream is decided from the store (Slurm may have forgotten it)
    late = run_app("slurm_app.py", SLURM, QUIET, "x=1", "hydra.launcher.dependencies=[afterok:up_fail]",
                   cwd=tmp_path / "ok_afterok")
    assert late.returncode != 0 and "can never be satisfied" in late.stderr


def test_unknown_partition_fails_before_anything_is_submitted(slurm_env, home, tmp_path):
    proc = run_app("slurm_app.py", SLURM, "x=1,2", "hydra.launcher.partition=nosuchpart", cwd=tmp_path)
    assert proc.returncode != 0
    assert "nosuchpart" in proc.stderr or "partition" in proc.stderr
    assert "hydra.launcher.partition" in proc.stderr and "Nothing was submitted" in proc.stderr
    assert nrun("list").stdout.count("\n") <= 1        # nothing recorded either


def _queue_state(job_id: str) -> str:
    """The job's state and reason as squeue shows them ("PENDING BeginTime"); empty once gone."""
    return subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T %r"], capture_output=True, text=True).stdout.strip()


def _wait_state(job_id: str, want: str, timeout: float) -> None:
    """Wait until squeue's state-and-reason of the job says `want`; fail with what Slurm last said."""
    seen: List[str] = []
    try:
        wait_for(lambda: want in (seen.append(_queue_state(job_id)) or seen[-1]), timeout=timeout)
    except AssertionError:
        job = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True)
        nodes = subprocess.run(["squeue", "-h", "-o", "%i %T %r %N %j"], capture_output=True, text=True)
        raise AssertionError(f"job {job_id} not {want} within {timeout}s; states seen: {sorted(set(seen))}\n"
                             f"{job.stdout}{job.stderr}\nthe queue:\n{nodes.stdout}") from None


def _expedite(job_id: str) -> None:
    """Slurm holds a requeued job back (reason BeginTime, ~2 min here) before it may start again;
    start it now, as an operator would, once the first run's processes are gone from the node
    (launching it again while they exit fails the new run)."""
    _wait_state(job_id, "BeginTime", timeout=30)
    wait_for(lambda: not _job_processes(job_id), timeout=30)
    time.sleep(1.0)  # slurmstepd reports the end to slurmd after its processes exit
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=True)


def _job_processes(job_id: str) -> List[int]:
    """Processes on this host that Slurm started for this job (they carry its ids in their environment)."""
    array, _, task = job_id.partition("_")
    needles = [f"SLURM_ARRAY_JOB_ID={array}\0".encode(), f"SLURM_ARRAY_TASK_ID={task}\0".encode()] if task \
        else [f"SLURM_JOB_ID={array}\0".encode()]
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if all(n in env for n in needles):
            found.append(int(pid))
    return found


def _slurm_start(job_id: str) -> int:
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "Start", "-j", job_id], capture_output=True,
                         text=True, check=True).stdout.split()[0]
    return int(time.mktime(time.strptime(out, "%Y-%m-%dT%H:%M:%S")))


def test_a_task_waiting_in_the_queue_shows_queued_without_a_clock(slurm_env, home, tmp_path, launch):
    """array_parallelism=1: the second task waits (JobArrayTaskLimit). Until it runs it is QUEUED
    with no start time, not RUNNING with a clock."""
    launch("x=1,2", "action=sleep", "seconds=6", "hydra.launcher.array_parallelism=1")
    wait_for(lambda: sorted(states().values()) == ["QUEUED", "RUNNING"], timeout=60, step=0.2)
    queued = [p for p in status_json()["points"] if p["state"] == "QUEUED"][0]
    assert queued["started"] is None and queued["backend_id"]
    assert "QUEUED" in nrun("status", "last").stdout
    wait_for(lambda: set(states().values()) == {"COMPLETED"}, timeout=90)
    p0, p1 = status_json()["points"]
    assert p1["started"] >= p0["ended"] - 1.0            # its clock started when it ran, not at submission


def test_without_time_or_timeout_the_partitions_limit_applies_and_is_said(home, tmp_path):
    proc = run_app("slurm_app.py", SLURM, "hydra.launcher.dry_run=true", "x=1", cwd=tmp_path, check=True,
                   env={"SLURM_CONF": "/nonexistent/slurm.conf"})
    assert "--time" not in proc.stdout
    assert "time limit of each point: the partition's default (hydra.launcher.time and timeout_s unset)" in proc.stdout
    proc = run_app("slurm_app.py", SLURM, "hydra.launcher.dry_run=true", "x=1", "hydra.launcher.timeout_s=90",
                   cwd=tmp_path, check=True, env={"SLURM_CONF": "/nonexistent/slurm.conf"})
    assert "#SBATCH --time=3" in proc.stdout and "nrun stops the point at timeout_s" in proc.stdout
