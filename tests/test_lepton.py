"""nrun_lepton end to end against the fake Lepton workspace API (tests/fakes/lepton_api.py),
driven by the real leptonai v2 SDK; the fake's jobs run as containers on the Docker sandbox.

What a user checks: values come back from jobs that really ran; cancel stops them with the
documented calls; no secret (the workspace token, a secret_env value) reaches the store, the
sweep dir or the terminal; a wrong token is a clear error naming the variable; a job deleted
behind nrun's back is a lost point, not a crash; API calls per point stay bounded.
"""

from __future__ import annotations

import hashlib
import os
from functools import partial
import subprocess
from pathlib import Path

import pytest

from cloud_checks import (assert_in_no_file, cancel_running_sweep, check_call_budget, check_deleted_behind_nrun_is_lost,
                          check_status_that_cannot_ask_keeps_the_point,
                          check_two_node_allreduce, check_wrong_credential, cloud_sweep, twenty_point_calls, vanish)
from cloud_fixtures import cloud_fakes, lepton_env  # noqa: F401
from docker_fixtures import docker_sandbox, docker_torch_image  # noqa: F401
from conftest import PYTHON, make_project, nrun, states, status_json, wait_for


@pytest.fixture
def proj(tmp_path: Path) -> Path:
    return make_project(tmp_path)


sweep = partial(cloud_sweep, "lepton")  # (fakes, proj, *overrides, env=, timeout=, wait=)


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
    assert_in_no_file([home, tmp_path / "multirun"], [secret.encode(), token.encode()])
    out = proc.stdout + proc.stderr + nrun("show", "last", "--json").stdout
    assert secret not in out and token not in out


def test_cancel_stops_the_jobs_with_the_documented_calls(lepton_env, proj, home):
    fake = lepton_env.lepton
    sid = cancel_running_sweep(partial(sweep, lepton_env, proj))
    assert len(jobs_of(fake, sid, "PATCH")) >= 2 and len(jobs_of(fake, sid, "DELETE")) >= 2  # stop, then delete
    wait_for(lambda: not lepton_env.live_containers(sid), timeout=60)


def test_wrong_token_is_an_auth_error_naming_the_variable(lepton_env, proj, home, monkeypatch):
    fake = lepton_env.lepton
    check_wrong_credential(partial(sweep, lepton_env, proj), monkeypatch, "LEPTON_WORKSPACE_TOKEN",
                           lambda: len(fake.calls_matching("POST", r"/jobs$")))


def test_status_that_cannot_ask_the_service_keeps_the_running_point(lepton_env, proj, home):
    check_status_that_cannot_ask_keeps_the_point(partial(sweep, lepton_env, proj), "LEPTON_WORKSPACE_TOKEN")


def test_a_job_deleted_behind_nrun_is_a_lost_point(lepton_env, proj, home):
    fake = lepton_env.lepton
    check_deleted_behind_nrun_is_lost(partial(sweep, lepton_env, proj), lambda: vanish(
        fake, fake.jobs, f"nrun-{status_json()['sweep']['id']}-1"))


def test_twenty_points_cost_a_bounded_number_of_api_calls(lepton_env, proj, home):
    """Per point: one create, a few status polls (backoff), one delete; no list per poll."""
    fake = lepton_env.lepton
    calls = twenty_point_calls(fake, partial(sweep, lepton_env, proj))
    sid = status_json()["sweep"]["id"]
    creates = [c for c in calls if c.method == "POST" and c.path.endswith("/jobs")]
    gets = [c for c in calls if c.method == "GET" and f"nrun-{sid}-" in c.path]
    deletes = [c for c in calls if c.method == "DELETE"]
    lists = [c for c in calls if c.method == "GET" and c.path.endswith("/jobs")]
    per_point = {i: sum(1 for c in gets if c.path.endswith(f"-{i}")) for i in range(20)}
    check_call_budget("lepton", fake, calls, per_point, {"creates": len(creates), "status_gets": len(gets),
                                                         "deletes": len(deletes), "lists": len(lists)}, fixed_calls=1)
    assert len(creates) == 20 and len(deletes) == 20 and len(lists) == 1   # one auth check for the sweep


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


def test_two_node_torchrun_point_all_reduces_across_replicas(lepton_env, docker_torch_image, home, tmp_path):
    fake = lepton_env.lepton
    sid, logs = check_two_node_allreduce(lepton_env, fake, "lepton", tmp_path, docker_torch_image)
    jid = f"nrun-{sid.lower()}-0"
    # two replicas of one job, each its own host, met at replica 0's Lepton service name
    assert f"host={jid}-0 " in logs and f"host={jid}-1 " in logs
    created = fake.calls_matching("POST", r"/jobs$")
    assert len(jobs_of(fake, sid, "DELETE")) == 1 and created                 # one job, deleted once read
