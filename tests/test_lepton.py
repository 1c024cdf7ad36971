"""nrun_lepton end to end against the fake Lepton workspace API (tests/fakes/lepton_api.py),
driven by the real leptonai v2 SDK; the fake's jobs run as containers on the Docker sandbox.

What a user checks: values come back from jobs that really ran; cancel stops them with the
documented calls; no secret (the workspace token, a secret_env value) reaches the store, the
sweep dir or the terminal; a wrong token is a clear error naming the variable; a job deleted
behind nrun's back is a lost point, not a crash; API calls per point stay bounded.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from cloud_fixtures import cloud_fakes, lepton_env  # noqa: F401
from docker_fixtures import docker_sandbox, docker_torch_image  # noqa: F401
from conftest import PYTHON, make_project, nrun, states, status_json, wait_for


@pytest.fixture
def proj(tmp_path: Path) -> Path:
    return make_project(tmp_path)


def sweep(fakes, proj: Path, *args: str, env=None, timeout: float = 300, wait: bool = True):
    cmd = [PYTHON, "sweep_app.py", "-m", *fakes.args("lepton"), "hydra.launcher.progress=lines", *args,
           f"hydra.sweep.dir={proj.parent}/multirun"]
    run = subprocess.run if wait else subprocess.Popen
    kw = dict(capture_output=True, text=True, timeout=timeout) if wait else \
        dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return run(cmd, cwd=proj, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}, **kw)


def jobs_of(fake, sweep_id: str, method: str, tail: str = "") -> list:
    return fake.calls_matching(method, rf"/jobs/nrun-{sweep_id}-\d+{tail}$")


def test_three_points_return_real_values_and_no_secret_leaks(lepton_env, proj, home, tmp_path):
    fakes, fake = lepton_env, lepton_env.lepton
    secret, start = "lepton-s3cret-7f3a", len(lepton_env.lepton.calls)
    proc = sweep(fakes, proj, "x=1,2,3", "action=env", "env_names=[MY_TOKEN]", "hydra.launcher.secret_env=[MY_TOKEN]",
                 env={"MY_TOKEN": secret})
    assert proc.returncode == 0, proc.stderr[-3000:]
    points = status_json()["points"]
    digest = "sha256:" + hashlib.sha256(secret.encode()).hexdigest()[:16]
    assert [p["state"] for p in points] == ["COMPLETED"] * 3
    assert all(f"'MY_TOKEN': '{digest}'" in p["value_repr"] for p in points)   # arrived through a Lepton secret
    sid = status_json()["sweep"]["id"]
    assert sum(c.method == "POST" and c.path.endswith("/jobs") for c in fake.calls[start:]) == 3
    assert len(jobs_of(fake, sid, "DELETE")) == 3
    made = [c for c in fake.calls[start:] if c.path.endswith("/usersecrets")]
    assert [c.method for c in made] == ["POST"]                                # one workspace secret per sweep
    assert not fake.secrets                                                    # the sweep's secret was removed
    for i in range(3):                                                         # logs came back through the storage
        assert f"point x={i + 1}" in (tmp_path / "multirun" / str(i) / "stdout.log").read_text()
    token = os.environ["LEPTON_WORKSPACE_TOKEN"]
    for path in [*home.rglob("*"), *(tmp_path / "multirun").rglob("*")]:
        if path.is_file():
            data = path.read_bytes()
            assert secret.encode() not in data and token.encode() not in data, path
    out = proc.stdout + proc.stderr + nrun("show", "last", "--json").stdout
    assert secret not in out and token not in out


def test_cancel_stops_the_jobs_with_the_documented_calls(lepton_env, proj, home):
    fake = lepton_env.lepton
    proc = sweep(lepton_env, proj, "x=1,2", "action=sleep", "seconds=300", "hydra.launcher.wait=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    wait_for(lambda: set(states().values()) == {"RUNNING"}, timeout=180)
    sid = status_json()["sweep"]["id"]
    out = nrun("cancel", "last", timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    wait_for(lambda: set(states().values()) == {"CANCELLED"}, timeout=90)
    assert len(jobs_of(fake, sid, "PATCH")) >= 2 and len(jobs_of(fake, sid, "DELETE")) >= 2  # stop, then delete
    wait_for(lambda: not lepton_env.live_containers(sid), timeout=60)


def test_wrong_token_is_an_auth_error_naming_the_variable(lepton_env, proj, home, monkeypatch):
    fake = lepton_env.lepton
    before = len(fake.calls_matching("POST", r"/jobs$"))
    monkeypatch.setenv("LEPTON_WORKSPACE_TOKEN", "not-the-token")
    proc = sweep(lepton_env, proj, "x=1")
    assert proc.returncode != 0
    assert "401" in proc.stderr and "LEPTON_WORKSPACE_TOKEN" in proc.stderr and "Fix:" in proc.stderr
    assert "Traceback" not in proc.stderr and "not-the-token" not in proc.stderr
    assert len(fake.calls_matching("POST", r"/jobs$")) == before               # nothing was submitted


def test_a_job_deleted_behind_nrun_is_a_lost_point(lepton_env, proj, home):
    fake = lepton_env.lepton
    launcher = sweep(lepton_env, proj, "x=1", "action=ok,sleep", "seconds=300", wait=False)
    try:
        wait_for(lambda: _state(1) == "RUNNING", timeout=180)
        sid = status_json()["sweep"]["id"]
        name = f"nrun-{sid}-1"
        with fake.lock:
            fake.jobs.pop(name)
            reps = fake.replicas.pop(name)
        fake.docker.remove(reps)                                                # gone, as if deleted in the UI
        out, err = launcher.communicate(timeout=120)
    finally:
        launcher.kill()
    assert launcher.returncode != 0 and "Traceback" not in err
    assert states() == {0: "COMPLETED", 1: "LOST"}
    assert "vanished" in status_json()["points"][1]["error"]


def _state(idx: int):
    try:
        return states().get(idx)
    except (AssertionError, ValueError):  # no sweep recorded yet
        return None


def test_twenty_points_cost_a_bounded_number_of_api_calls(lepton_env, proj, home):
    """Per point: one create, a few status polls (backoff), one delete; no list per poll."""
    fake = lepton_env.lepton
    start = len(fake.calls)
    fake.peak_jobs = 0
    proc = sweep(lepton_env, proj, "x=range(20)", "hydra.launcher.max_parallel=10")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert set(states().values()) == {"COMPLETED"}
    sid = status_json()["sweep"]["id"]
    calls = fake.calls[start:]
    creates = [c for c in calls if c.method == "POST" and c.path.endswith("/jobs")]
    gets = [c for c in calls if c.method == "GET" and f"nrun-{sid}-" in c.path]
    deletes = [c for c in calls if c.method == "DELETE"]
    lists = [c for c in calls if c.method == "GET" and c.path.endswith("/jobs")]
    per_point = {i: sum(1 for c in gets if c.path.endswith(f"-{i}")) for i in range(20)}
    report = {"creates": len(creates), "status_gets": len(gets), "deletes": len(deletes), "lists": len(lists),
              "max_gets_per_point": max(per_point.values()), "calls_per_point": round(len(calls) / 20, 2),
              "peak_jobs": fake.peak_jobs}
    print("lepton 20-point sweep API calls:", json.dumps(report))
    assert len(creates) == 20 and len(deletes) == 20 and len(lists) == 1   # one auth check for the sweep
    assert max(per_point.values()) <= 12                                   # backoff: 0.5 s, x1.5, capped at 4 s
    assert 2 <= fake.peak_jobs <= 10                                       # one job per point, max_parallel=10
    assert len(calls) <= 20 * 14 + 1


def test_leptonai_is_imported_only_when_nrun_lepton_runs(lepton_env, proj, home):
    """`-X importtime` of a dry run: nrun_local and nrun_dgxcloud never import leptonai."""
    def imported(*args: str, kind: str = "lepton") -> bool:
        proc = subprocess.run([PYTHON, "-X", "importtime", "sweep_app.py", "-m", *args, "x=1",
                               "hydra.launcher.dry_run=true", f"hydra.sweep.dir={proj.parent}/multirun"],
                              cwd=proj, capture_output=True, text=True, timeout=120,
                              env={**os.environ, **lepton_env.env(kind)})
        assert proc.returncode == 0, proc.stderr[-2000:]
        return any(line.split("|")[-1].strip().startswith("leptonai") for line in proc.stderr.splitlines()
                   if line.startswith("import time:"))

    assert imported(*lepton_env.args("lepton"))
    assert not imported("hydra/launcher=nrun_local")
    assert not imported(*lepton_env.args("dgxcloud"), kind="dgxcloud")


def test_status_and_logs_of_a_detached_sweep(lepton_env, proj, home, tmp_path):
    proc = sweep(lepton_env, proj, "x=4", "hydra.launcher.wait=false")
    assert proc.returncode == 0 and "nrun status" in proc.stderr
    wait_for(lambda: states() == {0: "COMPLETED"}, timeout=180)
    assert "'square': 16" in status_json()["points"][0]["value_repr"]
    logs = nrun("logs", "last", "0")
    assert logs.returncode == 0 and "point x=4" in logs.stdout, logs.stdout + logs.stderr


def allreduce_sweep(fakes, kind: str, tmp_path: Path, image: str) -> subprocess.CompletedProcess:
    """One 2-node torchrun point of tests/apps/torch_allreduce.py through the fake ``kind``."""
    proj = make_project(tmp_path, "torch_allreduce.py")
    args = [a for a in fakes.args(kind) if not a.startswith("hydra.launcher.image=")]
    cmd = [PYTHON, "torch_allreduce.py", "-m", *args, f"hydra.launcher.image={image}", "nrun/launcher=torchrun",
           "hydra.launcher.nodes=2", "hydra.launcher.timeout_s=300", "hydra.launcher.progress=lines", "+run=1",
           "++hydra.launcher.env={OMP_NUM_THREADS:'1'}", f"hydra.sweep.dir={tmp_path}/multirun"]
    return subprocess.run(cmd, cwd=proj, env={**os.environ, "PYTHONUNBUFFERED": "1"}, capture_output=True,
                          text=True, timeout=420)


def allreduce_logs(tmp_path: Path) -> str:
    job = tmp_path / "multirun" / "0"
    return (job / "stdout.log").read_text() + (job / "stdout.node1.log").read_text()


def test_two_node_torchrun_point_all_reduces_across_replicas(lepton_env, docker_torch_image, home, tmp_path):
    fake = lepton_env.lepton
    proc = allreduce_sweep(lepton_env, "lepton", tmp_path, docker_torch_image)
    assert proc.returncode == 0, proc.stderr[-3000:]
    p = status_json()["points"][0]
    assert p["state"] == "COMPLETED"
    assert "'world_size': 2, 'sum': 3.0, 'expected': 3.0" in p["value_repr"]
    sid = status_json()["sweep"]["id"]
    jid = f"nrun-{sid.lower()}-0"
    logs = allreduce_logs(tmp_path)
    # two replicas of one job, each its own host, met at replica 0's Lepton service name
    assert f"host={jid}-0 " in logs and f"host={jid}-1 " in logs
    assert "rank 0/2" in logs and "rank 1/2" in logs
    created = fake.calls_matching("POST", r"/jobs$")
    assert len(jobs_of(fake, sid, "DELETE")) == 1 and created                 # one job, deleted once read
    assert fake.live_containers(sid) == [] and fake.live_networks(sid) == []  # its network went with it
