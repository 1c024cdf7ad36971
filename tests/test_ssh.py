"""nrun_ssh on real sshd hosts (`nrun sandbox ssh up`: two hosts, each in its own UTS, mount and
PID namespace on its own loopback address, private /tmp): what a user of a few GPU boxes checks.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from conftest import NRUN, PYTHON, interruptible, make_project, nrun, states, status_json, wait_for
from docker_fixtures import docker_client, docker_sandbox, docker_torch_image  # noqa: F401
from ssh_fixtures import on_host, sandbox_hosts, ssh_env, ssh_sandbox, sweep_processes  # noqa: F401

SSH = "hydra/launcher=nrun_ssh"


@pytest.fixture
def proj(tmp_path: Path) -> Path:
    return make_project(tmp_path, "torch_allreduce.py")


def sweep(proj: Path, *args: str, app: str = "sweep_app.py", timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, app, "-m", SSH, "hydra.launcher.progress=lines", *args,
                           f"hydra.sweep.dir={proj.parent}/multirun"],
                          cwd=proj, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def test_six_points_spread_over_two_hosts_return_six_values(ssh_env, home, proj):
    proc = ok(sweep(proj, "x=1,2,3,4,5,6", "action=cwd", "hydra.job.chdir=True"))
    points = status_json()["points"]
    assert [p["state"] for p in points] == ["COMPLETED"] * 6
    multirun = proj.parent / "multirun"
    # the task ran in its job dir, at the launcher's path, on the hosts
    assert [p["value_repr"] for p in points] == [repr(str(multirun / str(i))) for i in range(6)]
    used = {p["backend_id"].split("/")[0] for p in points}
    assert used == {"nrun-host1", "nrun-host2"}, used
    assert "hosts: nrun-host1 (2 slots), nrun-host2 (2 slots)" in proc.stderr
    for i in range(6):  # everything the point wrote came back; the hosts keep no copy
        job = multirun / str(i)
        assert (job / ".hydra" / "config.yaml").exists() and (job / "sweep_app.log").exists()
        assert f"point x={i + 1}" in (job / "stdout.log").read_text()
    for host in sandbox_hosts(ssh_env):
        assert on_host(ssh_env, host, f"ls {multirun} 2>/dev/null | wc -l").strip() == "0"


def test_code_is_shipped_once_per_host_and_reused_by_the_next_sweep(ssh_env, home, proj):
    ok(sweep(proj, "x=1,2,3,4"))
    digest = status_json()["sweep"]["artifact"]["digest"]
    marks = {}
    for host in sandbox_hosts(ssh_env):
        code = f"{host['remote_dir']}/code/{digest}"
        marks[host["name"]] = on_host(ssh_env, host, f"stat -c %Y {code}/.nrun-unpacked").strip()
    ok(sweep(proj, "x=5,6,7,8"))
    assert status_json()["sweep"]["artifact"]["digest"] == digest
    for host in sandbox_hosts(ssh_env):
        code = f"{host['remote_dir']}/code/{digest}"
        assert on_host(ssh_env, host, f"stat -c %Y {code}/.nrun-unpacked").strip() == marks[host["name"]]


def test_a_failing_point_keeps_the_others_and_shows_its_error(ssh_env, home, proj):
    proc = sweep(proj, "action=ok,raise,exit", "x=7")
    assert proc.returncode != 0
    assert states() == {0: "COMPLETED", 1: "FAILED", 2: "FAILED"}
    err = (proj.parent / "multirun" / "1" / "stderr.log").read_text()
    assert "ValueError: boom at x=7" in err and "ValueError: boom at x=7" in proc.stderr
    assert "exit code 3" in status_json()["points"][2]["error"] or "code 3" in status_json()["points"][2]["error"]


def test_changed_host_key_is_refused_naming_the_host(ssh_env, home, proj, tmp_path, monkeypatch):
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    fake = Path(f"{other}.pub").read_text().split()
    lines = Path(ssh_env["NRUN_SSH_KNOWN_HOSTS"]).read_text().splitlines()
    forged = [f"127.0.0.11 {fake[0]} {fake[1]}" if ln.startswith("127.0.0.11 ") else ln for ln in lines]
    known = tmp_path / "known_hosts"
    known.write_text("\n".join(forged) + "\n")
    proc = sweep(proj, "x=1,2,3,4", f"hydra.launcher.known_hosts={known}")
    assert proc.returncode != 0
    assert "nrun-host1" in proc.stderr and "does not match" in proc.stderr, proc.stderr[-3000:]
    assert "nothing was started" in proc.stderr.lower() or "Nothing was sent" in proc.stderr
    assert known.read_text() == "\n".join(forged) + "\n"          # never "fixed" by nrun
    for host in sandbox_hosts(ssh_env):                               # no point ran anywhere
        assert on_host(ssh_env, host, f"ls {proj.parent}/multirun 2>/dev/null | wc -l").strip() == "0"


def test_unreachable_host_fails_before_any_point_starts(ssh_env, home, proj):
    h = sandbox_hosts(ssh_env)[0]
    good = f"{{name:good,address:{h['address']},user:{h['user']},key_file:'{h['key_file']}',python:'{h['python']}',remote_dir:/tmp/nrun}}"
    bad = f"{{name:down,address:127.0.0.19,user:{h['user']},key_file:'{h['key_file']}'}}"
    proc = sweep(proj, "x=1,2", f"hydra.launcher.hosts=[{good},{bad}]", "hydra.launcher.connect_timeout_s=5")
    assert proc.returncode != 0
    assert "down:" in proc.stderr and "cannot reach" in proc.stderr, proc.stderr[-3000:]
    assert on_host(ssh_env, h, f"ls {proj.parent}/multirun 2>/dev/null | wc -l").strip() == "0"


def test_bad_hosts_setting_is_named_with_the_fix(ssh_env, home, proj):
    proc = sweep(proj, "x=1", "hydra.launcher.hosts=[{port:22}]")
    assert proc.returncode != 0 and "hydra.launcher.hosts[0] has no address" in proc.stderr
    proc = sweep(proj, "x=1", "hydra.launcher.nodes=3")
    assert proc.returncode != 0 and "hydra.launcher.nodes=3 but only 2 host(s)" in proc.stderr


def test_dry_run_shows_each_hosts_request_and_starts_nothing(ssh_env, home, proj, monkeypatch):
    monkeypatch.setenv("MY_TOKEN", "s3cr3t-value")
    proc = ok(sweep(proj, "x=1,2", "hydra.launcher.dry_run=true", "hydra.launcher.secret_env=[MY_TOKEN]"))
    out = proc.stdout + proc.stderr
    assert "ssh -p 22 root@127.0.0.11" in out and "nrun_host.py start <<'JSON'" in out
    assert '"MY_TOKEN": "<from the launching shell>"' in out and "s3cr3t-value" not in out
    assert '"NRUN_CODE_DIR": "/tmp/nrun/code/' in out
    assert not (proj.parent / "multirun" / "0" / "stdout.log").exists()


def test_secrets_reach_the_point_but_no_file(ssh_env, home, proj, monkeypatch):
    monkeypatch.setenv("MY_TOKEN", "s3cr3t-value")
    ok(sweep(proj, "x=1", "action=env", "+env_names=[MY_TOKEN]", "hydra.launcher.secret_env=[MY_TOKEN]"))
    value = status_json()["points"][0]["value_repr"]
    assert "MY_TOKEN" in value and "s3cr3t-value" not in value       # the app returns a digest
    leaks = subprocess.run(["grep", "-rl", "s3cr3t-value", str(proj.parent / "multirun"), str(home)],
                           capture_output=True, text=True)
    assert leaks.stdout == ""


def test_cancel_from_another_shell_ends_every_process_on_every_host(ssh_env, home, proj, tmp_path):
    """A detached sweep, `nrun cancel` from another shell: nothing of the sweep remains in either
    host's PID namespace."""
    ok(sweep(proj, "x=1,2,3,4", "action=sleep", "seconds=300", "hydra.launcher.wait=false"))
    sweep_id = status_json()["sweep"]["id"]
    wait_for(lambda: list(states().values()).count("RUNNING") == 4, timeout=120)
    hosts = sandbox_hosts(ssh_env)
    assert all(sweep_processes(ssh_env, h, sweep_id) for h in hosts)   # running on both hosts
    out = nrun("cancel", sweep_id, timeout=120)
    assert out.returncode == 0, out.stderr
    wait_for(lambda: set(states().values()) == {"CANCELLED"}, timeout=120)
    for h in hosts:
        wait_for(lambda: sweep_processes(ssh_env, h, sweep_id) == [], timeout=60)


def test_a_bare_shell_settles_nothing_it_cannot_ask_and_cancels_on_the_recorded_hosts(ssh_env, home, proj):
    """The supervisor is killed (-9) while the points run. From a shell without the sandbox's
    NRUN_SSH_* variables, `nrun status` asks the hosts of the hosts file the sweep recorded (it
    found no hosts, and called the running points LOST); `nrun cancel` from there ends them."""
    ok(sweep(proj, "x=1,2", "action=sleep", "seconds=300", "hydra.launcher.wait=false"))
    sweep_id = status_json()["sweep"]["id"]
    wait_for(lambda: list(states().values()).count("RUNNING") == 2, timeout=120)
    os.kill(status_json()["sweep"]["supervisor_pid"], signal.SIGKILL)
    bare = {k: v for k, v in os.environ.items() if not k.startswith("NRUN_SSH_")}
    status = subprocess.run([*NRUN, "status", sweep_id, "--json"], capture_output=True, text=True, env=bare, timeout=120)
    assert status.returncode == 0, status.stderr
    assert [p["state"] for p in json.loads(status.stdout)["points"]] == ["RUNNING", "RUNNING"], status.stderr
    out = subprocess.run([*NRUN, "cancel", sweep_id], capture_output=True, text=True, env=bare, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert set(states().values()) == {"CANCELLED"}
    for h in sandbox_hosts(ssh_env):
        wait_for(lambda: sweep_processes(ssh_env, h, sweep_id) == [], timeout=60)


def test_daemons_left_by_finished_points_are_ended_on_both_hosts(ssh_env, home, proj):
    """Each point double-forks a daemon (setsid) and returns: the host's keeper ends it."""
    ok(sweep(proj, "x=1,2,3,4", "action=daemon", "msg=/tmp/daemon.pid"))
    sweep_id = status_json()["sweep"]["id"]
    assert set(states().values()) == {"COMPLETED"}
    for h in sandbox_hosts(ssh_env):
        assert sweep_processes(ssh_env, h, sweep_id) == []


def sleeping_sweep(proj: Path, points: int) -> subprocess.Popen:
    """A launcher of POINTS sleeping points in the background, as in a terminal, once all run."""
    launcher = subprocess.Popen(
        [PYTHON, "sweep_app.py", "-m", SSH, "hydra.launcher.progress=lines", "action=sleep", "seconds=300",
         "x=" + ",".join(str(i + 1) for i in range(points)), f"hydra.sweep.dir={proj.parent}/multirun"],
        cwd=proj, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=interruptible)
    wait_for(lambda: nrun("list").stdout.count("\n") >= 2 and
             list(states().values()).count("RUNNING") == points, timeout=120)
    return launcher


def test_ctrl_c_cancels_running_points_on_both_hosts(ssh_env, home, proj):
    launcher = sleeping_sweep(proj, 4)
    sweep_id = status_json()["sweep"]["id"]
    hosts = sandbox_hosts(ssh_env)
    assert all(sweep_processes(ssh_env, h, sweep_id) for h in hosts)
    launcher.send_signal(signal.SIGINT)
    _, err = launcher.communicate(timeout=120)
    assert launcher.returncode == 130, err[-2000:]
    assert set(states().values()) == {"CANCELLED"}
    for h in hosts:
        wait_for(lambda: sweep_processes(ssh_env, h, sweep_id) == [], timeout=60)


def test_sigterm_to_the_launcher_cancels_running_points(ssh_env, home, proj):
    launcher = sleeping_sweep(proj, 3)
    sweep_id = status_json()["sweep"]["id"]
    launcher.send_signal(signal.SIGTERM)
    _, err = launcher.communicate(timeout=120)
    assert launcher.returncode != 0
    assert set(states().values()) == {"CANCELLED"}, err[-2000:]
    for h in sandbox_hosts(ssh_env):
        wait_for(lambda: sweep_processes(ssh_env, h, sweep_id) == [], timeout=60)


def test_timeout_kills_the_point_on_its_host(ssh_env, home, proj):
    proc = sweep(proj, "x=1", "action=sleep", "seconds=300", "hydra.launcher.timeout_s=3")
    assert proc.returncode != 0
    assert states() == {0: "TIMEOUT"}
    sweep_id = status_json()["sweep"]["id"]
    for h in sandbox_hosts(ssh_env):
        assert sweep_processes(ssh_env, h, sweep_id) == []


def test_torchrun_all_reduce_across_two_hosts(ssh_env, home, proj):
    proc = sweep(proj, "nrun/launcher=torchrun", "hydra.launcher.nodes=2", "hydra.launcher.timeout_s=240",
                 "+run=1", "++hydra.launcher.env={OMP_NUM_THREADS:'1'}", app="torch_allreduce.py", timeout=400)
    ok(proc)
    p = status_json()["points"][0]
    assert p["state"] == "COMPLETED" and p["backend_id"] == "nrun-host1,nrun-host2/a1"
    assert "'world_size': 2, 'sum': 3.0, 'expected': 3.0" in p["value_repr"]
    job = proj.parent / "multirun" / "0"
    logs = (job / "stdout.log").read_text() + (job / "stdout.node1.log").read_text()
    assert "host=nrun-host1" in logs and "host=nrun-host2" in logs   # each node on its own host
    assert "rank 0/2" in logs and "rank 1/2" in logs


def test_direct_launcher_on_two_hosts_gets_the_rank_contract(ssh_env, home, tmp_path):
    proj = make_project(tmp_path, "rank_env.py")
    proc = sweep(proj, "hydra.launcher.nodes=2", "+run=1", app="rank_env.py")
    ok(proc)
    job = proj.parent / "multirun" / "0"
    seen = (job / "stdout.log").read_text() + (job / "stdout.node1.log").read_text()
    for k in (0, 1):
        assert f"NODE_RANK={k} WORLD_SIZE=2 MASTER_ADDR=127.0.0.11 LOCAL_WORLD_SIZE=1 host=nrun-host{k + 1}" in seen


def test_points_in_containers_on_the_hosts_leave_no_container(ssh_env, home, proj, docker_sandbox, docker_client):
    image = docker_sandbox["NRUN_SANDBOX_IMAGE"]
    ok(sweep(proj, "x=1,2,3", f"hydra.launcher.container.image={image}"))
    points = status_json()["points"]
    assert [p["state"] for p in points] == ["COMPLETED"] * 3
    assert "'square': 9" in points[2]["value_repr"]
    sweep_id = status_json()["sweep"]["id"]
    assert docker_client.containers.list(all=True, filters={"label": f"nrun.sweep={sweep_id}"}) == []


def test_cancelled_container_points_leave_no_container(ssh_env, home, proj, docker_sandbox, docker_client):
    image = docker_sandbox["NRUN_SANDBOX_IMAGE"]
    ok(sweep(proj, "x=1,2", "action=sleep", "seconds=300", f"hydra.launcher.container.image={image}",
             "hydra.launcher.wait=false"))
    sweep_id = status_json()["sweep"]["id"]
    label = {"label": f"nrun.sweep={sweep_id}"}
    wait_for(lambda: len(docker_client.containers.list(filters=label)) == 2, timeout=120)
    assert nrun("cancel", sweep_id, timeout=120).returncode == 0
    wait_for(lambda: docker_client.containers.list(all=True, filters=label) == [], timeout=60)
    wait_for(lambda: set(states().values()) == {"CANCELLED"}, timeout=60)


def test_torchrun_across_two_containers_on_two_hosts(ssh_env, home, proj, docker_torch_image, docker_client):
    proc = sweep(proj, "nrun/launcher=torchrun", "hydra.launcher.nodes=2", "hydra.launcher.timeout_s=240",
                 f"hydra.launcher.container.image={docker_torch_image}", "+run=1",
                 "++hydra.launcher.env={OMP_NUM_THREADS:'1',GLOO_SOCKET_IFNAME:lo}",
                 app="torch_allreduce.py", timeout=400)
    ok(proc)
    p = status_json()["points"][0]
    assert "'world_size': 2, 'sum': 3.0, 'expected': 3.0" in p["value_repr"]
    sweep_id = status_json()["sweep"]["id"]
    assert docker_client.containers.list(all=True, filters={"label": f"nrun.sweep={sweep_id}"}) == []


def test_a_host_lost_mid_point_fails_its_point_over_to_another_host(ssh_env, home, proj, tmp_path, monkeypatch):
    """A third host joins, takes a point, and dies: its point ends as lost and its retry runs on
    a host still up; the sweep never hangs."""
    import yaml

    from nrun_core.sandbox import ssh, ssh_hosts

    n = ssh_hosts.count()
    monkeypatch.setenv(ssh_hosts.COUNT_ENV, str(n + 1))
    try:
        ssh.up()
        every = sandbox_hosts(ssh_env)
        hosts_file = tmp_path / "hosts.yaml"
        hosts_file.write_text(yaml.safe_dump({"hosts": [every[0], every[-1]]}))
        launcher = subprocess.Popen(
            [PYTHON, "sweep_app.py", "-m", SSH, "hydra.launcher.progress=lines", f"hydra.launcher.hosts_file={hosts_file}",
             "hydra.launcher.host_lost_s=5", "hydra.launcher.retries=1", "action=sleep", "seconds=20", "x=1,2",
             f"hydra.sweep.dir={proj.parent}/multirun"],
            cwd=proj, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=interruptible)
        wait_for(lambda: nrun("list").stdout.count("\n") >= 2 and
                 sorted(p["backend_id"] or "" for p in status_json()["points"] if p["state"] == "RUNNING") ==
                 ["nrun-host1/a1", f"nrun-host{n + 1}/a1"], timeout=120)
        monkeypatch.setenv(ssh_hosts.COUNT_ENV, str(n))
        ssh.up()  # the third host goes away with its processes
        _, err = launcher.communicate(timeout=180)
        assert launcher.returncode == 0, err[-3000:]
        points = status_json()["points"]
        assert [p["state"] for p in points] == ["COMPLETED", "COMPLETED"]
        moved = next(p for p in points if p["attempts"] == 2)
        assert moved["backend_id"] == "nrun-host1/a2"
        assert f"host nrun-host{n + 1} stopped answering" in err
    finally:
        monkeypatch.setenv(ssh_hosts.COUNT_ENV, str(n))
        ssh.up()


def test_gpus_per_node_gives_each_point_its_own_gpus_on_its_host(ssh_env, home, proj, tmp_path):
    """Hosts listed with 2 GPUs each, gpus_per_node=1: two points at a time per host, each with a
    GPU of its own there (CUDA_VISIBLE_DEVICES), never one a running point on that host holds."""
    import ast

    import yaml

    hosts = [{**h, "gpus": 2} for h in sandbox_hosts(ssh_env)]
    for h in hosts:
        h.pop("slots", None)  # slots follow from gpus // gpus_per_node
    hosts_file = tmp_path / "gpu_hosts.yaml"
    hosts_file.write_text(yaml.safe_dump({"hosts": hosts}))
    proc = ok(sweep(proj, "x=range(0,8)", "action=env", "env_names=[CUDA_VISIBLE_DEVICES]",
                    f"hydra.launcher.hosts_file={hosts_file}", "hydra.launcher.gpus_per_node=1"))
    assert all(f"{h['name']} (2 slots)" in proc.stderr for h in hosts), proc.stderr[-2000:]
    spans: dict = {}
    for p in status_json()["points"]:
        assert p["state"] == "COMPLETED", p
        gpu = ast.literal_eval(p["value_repr"])["CUDA_VISIBLE_DEVICES"]
        assert gpu in ("0", "1"), gpu
        spans.setdefault((p["backend_id"].split("/")[0], gpu), []).append((p["started"], p["ended"]))
    assert sum(map(len, spans.values())) == 8
    for held in spans.values():
        held.sort()
        assert not any(b[0] < a[1] for a, b in zip(held, held[1:])), held
