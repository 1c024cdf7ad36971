"""nrun_dgxcloud end to end against the fake Run:ai API (tests/fakes/runai_api.py); the fake's
workloads run as containers on the Docker sandbox.

What a user checks: values come back from workloads that really ran; cancel uses the documented
POST .../suspend, then DELETE; the client secret and tokens reach no file or terminal; a wrong
secret is a clear error naming the variable; the token is fetched once and renewed on expiry,
not per status call; only retryable errors are retried; a vanished workload is a lost point.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import pytest

from cloud_checks import (assert_in_no_file, cancel_running_sweep, check_call_budget, check_deleted_behind_nrun_is_lost,
                          check_status_that_cannot_ask_keeps_the_point,
                          check_two_node_allreduce, check_wrong_credential, cloud_sweep, twenty_point_calls, vanish)
from cloud_fixtures import RUNAI_CLIENT, RUNAI_PROJECT, cloud_fakes, dgx_env  # noqa: F401
from docker_fixtures import docker_sandbox, docker_torch_image  # noqa: F401
from conftest import make_project, nrun, status_json, wait_for
from nrun_core.errors import BackendError, ConfigError


@pytest.fixture
def proj(tmp_path: Path) -> Path:
    return make_project(tmp_path)


sweep = partial(cloud_sweep, "dgxcloud")  # (fakes, proj, *overrides, env=, timeout=, wait=)


def client(fakes):
    from nrun_core.executors.dgxcloud.api import RunAI

    return RunAI(SimpleNamespace(base_url=None, client_id=RUNAI_CLIENT, client_secret_env="RUNAI_CLIENT_SECRET",
                                 request_timeout_s=10.0))


def test_three_points_return_real_values_and_no_secret_leaks(dgx_env, proj, home, tmp_path):
    fake = dgx_env.runai
    start = len(fake.calls)
    proc = sweep(dgx_env, proj, "x=1,2,3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    points = status_json()["points"]
    assert [p["state"] for p in points] == ["COMPLETED"] * 3
    assert ["'square': 1" in points[0]["value_repr"], "'square': 9" in points[2]["value_repr"]] == [True, True]
    calls = fake.calls[start:]
    assert sum(c.method == "POST" and c.path.endswith("/workloads/trainings") for c in calls) == 3
    assert sum(c.method == "DELETE" for c in calls) == 3
    assert sum(c.path.endswith("/token") for c in calls) == 1                   # one token for the whole sweep
    assert "point x=2" in (tmp_path / "multirun" / "1" / "stdout.log").read_text()
    secret = os.environ["RUNAI_CLIENT_SECRET"]
    with fake.lock:
        tokens = [t.encode() for t in fake.tokens]                             # every token the fake issued
    assert_in_no_file([home, tmp_path / "multirun"], [secret.encode(), *tokens])
    assert secret not in proc.stdout + proc.stderr + nrun("show", "last", "--json").stdout
    assert "HTTP Request" not in proc.stdout + proc.stderr                     # no line per API call


def test_cancel_suspends_with_post_then_deletes(dgx_env, proj, home):
    fake = dgx_env.runai
    start = len(fake.calls)
    sid = cancel_running_sweep(partial(sweep, dgx_env, proj))
    calls = fake.calls[start:]
    suspends = [c for c in calls if c.path.endswith("/suspend")]
    assert len(suspends) >= 2 and {c.method for c in suspends} == {"POST"} and all(c.status == 202 for c in suspends)
    assert sum(c.method == "DELETE" for c in calls) >= 2
    wait_for(lambda: not dgx_env.live_containers(sid), timeout=60)


def test_wrong_secret_is_an_auth_error_naming_the_variable(dgx_env, proj, home, monkeypatch):
    fake = dgx_env.runai
    check_wrong_credential(partial(sweep, dgx_env, proj), monkeypatch, "RUNAI_CLIENT_SECRET",
                           lambda: len(fake.calls_matching("POST", r"/workloads/")))


def test_status_that_cannot_ask_the_service_keeps_the_running_point(dgx_env, proj, home):
    check_status_that_cannot_ask_keeps_the_point(partial(sweep, dgx_env, proj), "RUNAI_CLIENT_SECRET")


def test_token_is_cached_and_renewed_once_it_expires(dgx_env):
    fake, api = dgx_env.runai, client(dgx_env)
    try:
        assert api.project(RUNAI_PROJECT)[0]
        for _ in range(5):
            api.request("GET", "/workloads?offset=0&limit=5")
        assert api.token_fetches == 1                                       # not one per call
        fake.expire_tokens()                                                # the server stops honouring it
        api.request("GET", "/workloads?offset=0&limit=5")
        assert api.token_fetches == 2                                       # renewed on the 401, once
    finally:
        api.close()


def test_only_retryable_errors_are_retried(dgx_env):
    fake, api = dgx_env.runai, client(dgx_env)
    try:
        n = len(fake.calls_matching("GET", r"/workloads$"))
        fake.fail_next("GET", r"/workloads$", 503, count=2)
        assert "workloads" in api.request("GET", "/workloads?offset=0&limit=5")   # 503, 503, then 200
        assert len(fake.calls_matching("GET", r"/workloads$")) == n + 3
        fake.fail_next("GET", r"/workloads$", 400, count=1)
        with pytest.raises(BackendError, match="400"):
            api.request("GET", "/workloads?offset=0&limit=5")
        assert len(fake.calls_matching("GET", r"/workloads$")) == n + 4         # a 400 is not retried
        with pytest.raises(ConfigError, match="no such Run:ai project"):
            api._project = None
            api.project("no-such-project")
    finally:
        api.close()


def test_a_workload_deleted_behind_nrun_is_a_lost_point(dgx_env, proj, home):
    fake = dgx_env.runai
    check_deleted_behind_nrun_is_lost(partial(sweep, dgx_env, proj), lambda: vanish(
        fake, fake.workloads, status_json()["points"][1]["backend_id"].split("/", 1)[1]))


def test_twenty_points_cost_a_bounded_number_of_api_calls(dgx_env, proj, home):
    """Per point: one create, a few status polls (backoff), one delete; one token per sweep."""
    fake = dgx_env.runai
    calls = twenty_point_calls(fake, partial(sweep, dgx_env, proj))
    creates = [c for c in calls if c.method == "POST" and c.path.endswith("/workloads/trainings")]
    gets = [c for c in calls if c.method == "GET" and "/workloads/trainings/" in c.path]
    deletes = [c for c in calls if c.method == "DELETE"]
    tokens = [c for c in calls if c.path.endswith("/token")]
    per_point: dict = {}
    for c in gets:
        per_point[c.path] = per_point.get(c.path, 0) + 1
    check_call_budget("dgxcloud", fake, calls, per_point, {"creates": len(creates), "status_gets": len(gets),
                                                           "deletes": len(deletes), "tokens": len(tokens)}, fixed_calls=5)
    assert len(creates) == 20 and len(deletes) == 20 and len(tokens) == 1


def test_a_command_that_cannot_start_is_explained(dgx_env, proj, home):
    """No result from the point: the failure quotes the end of its stderr on the shared storage."""
    proc = sweep(dgx_env, proj, "x=1", "hydra.launcher.python=nosuchpython")
    assert proc.returncode != 0
    p = status_json()["points"][0]
    assert p["state"] == "FAILED" and "nosuchpython: not found" in p["error"], p["error"]


def test_two_node_torchrun_point_all_reduces_across_replicas(dgx_env, docker_torch_image, home, tmp_path):
    fake = dgx_env.runai
    sid, logs = check_two_node_allreduce(dgx_env, fake, "dgxcloud", tmp_path, docker_torch_image)
    name = f"nrun-{sid.lower()}-0"
    # a distributed workload's master and worker, each its own pod, met at the master's address
    assert f"host={name}-master-0 " in logs and f"host={name}-worker-0 " in logs
    assert len(fake.calls_matching("POST", r"/workloads/distributed$")) >= 1
