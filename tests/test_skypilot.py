"""nrun_skypilot against real SkyPilot: the sandbox's API server with the Slurm sandbox as its
infra (`nrun sandbox skypilot up`). Exercised for real: sky.launch of a cluster (a Slurm job of
the user nrun-sky), sky.exec per point, workdir sync, sky.tail_logs (live logs, the point's files
and exit code), sky.cancel from another shell, Ctrl-C during a launch, sky.down, clusters per
point, a retry on the sweep's cluster, a 2-node cluster with torchrun. Clouds, spot and GPUs are
only rendered (tests/test_skypilot_render.py): none is reachable here. Managed jobs are rendered,
and refused on Slurm: SkyPilot 0.14 will not run its jobs controller there (seen on the sandbox:
NotSupportedError host_controllers, then a launch retried every 30 s forever).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from conftest import NRUN, PYTHON, interruptible, make_project, nrun, states, status_json, wait_for
from require import missing
from skypilot_fixtures import sky_env, sky_queue, sky_sandbox  # noqa: F401


def sweep(proj: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "sweep_app.py", "-m", "hydra/launcher=nrun_skypilot", "hydra.launcher.progress=lines",
                           f"hydra.launcher.cluster_name={os.environ['NRUN_TEST_SKY_CLUSTER']}", *args,
                           f"hydra.sweep.dir={proj.parent}/multirun"],
                          cwd=proj, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


def sweep_on(proj: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """A sweep on clusters nrun makes for it (no cluster_name)."""
    return subprocess.run([PYTHON, "sweep_app.py", "-m", "hydra/launcher=nrun_skypilot", "hydra.launcher.progress=lines",
                           *args, f"hydra.sweep.dir={proj.parent}/multirun"],
                          cwd=proj, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


pytestmark = pytest.mark.timeout(900)  # a cluster launch under load takes minutes


def test_three_point_sweep_returns_real_values(sky_env, home, tmp_path):
    proj = make_project(tmp_path)
    proc = sweep(proj, "x=1,2,3")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    points = status_json()["points"]
    assert {p["idx"]: p["value_repr"] for p in points} == {
        i: f"{{'x': {x}, 'msg': '', 'square': {x * x}}}" for i, x in enumerate((1, 2, 3))}
    for i, p in enumerate(points):
        job = tmp_path / "multirun" / str(i)
        assert f"point x={i + 1} action=ok" in (job / "stdout.log").read_text()      # the point's own output
        assert "to-stderr" in (job / "stderr.log").read_text()
        assert (job / ".hydra" / "overrides.yaml").read_text() == f"- x={i + 1}\n"  # Hydra's files came back
        assert p["backend_id"].startswith(os.environ["NRUN_TEST_SKY_CLUSTER"] + "/")
    assert not (home / "skypilot" / status_json()["sweep"]["id"]).exists()  # the staging dir went with the sweep


def test_failing_point_names_its_error(sky_env, home, tmp_path):
    proj = make_project(tmp_path)
    proc = sweep(proj, "x=2", "action=raise")
    assert proc.returncode != 0
    p = status_json()["points"][0]
    assert p["state"] == "FAILED" and "ValueError: boom at x=2" in p["error"], p
    assert "boom at x=2" in (tmp_path / "multirun" / "0" / "stderr.log").read_text()


def test_cancel_from_another_shell_leaves_nothing_queued(sky_env, home, tmp_path):
    """Detached sweep, logs streamed while it runs, `nrun cancel`: no job of it left in the
    cluster's SkyPilot queue, and no Slurm step of it left in squeue."""
    proj = make_project(tmp_path)
    proc = sweep(proj, "x=1,2", "action=sleep", "seconds=300", "hydra.launcher.wait=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Both submitted; SkyPilot may queue the second behind the first on the one node.
    wait_for(lambda: all(p["state"] == "RUNNING" for p in status_json()["points"])
             and any("point x=" in Path(p["stdout"]).read_text() for p in status_json()["points"]
                     if Path(p["stdout"]).exists()), timeout=600, step=1.0)
    jobs = [int(p["backend_id"].rsplit("/", 1)[1]) for p in status_json()["points"]]
    out = nrun("cancel", "last", timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    wait_for(lambda: set(states().values()) == {"CANCELLED"}, timeout=120, step=1.0)
    cluster = os.environ["NRUN_TEST_SKY_CLUSTER"]
    queue = sky_queue(cluster)
    assert all(queue[j] in ("CANCELLED", "SUCCEEDED", "FAILED") for j in jobs), queue
    steps = subprocess.run(["squeue", "-h", "-s", "-u", "nrun-sky", "-o", "%j"], capture_output=True, text=True)
    assert steps.returncode == 0, steps.stderr
    assert not {f"sky-{j}" for j in jobs} & set(steps.stdout.split()), steps.stdout


def test_ctrl_c_cancels_the_running_point(sky_env, home, tmp_path):
    """Ctrl-C while waiting, as on Slurm: the point's SkyPilot job is cancelled, the sweep records
    it, the launcher exits 130."""
    proj = make_project(tmp_path)
    proc = subprocess.Popen([PYTHON, "sweep_app.py", "-m", "hydra/launcher=nrun_skypilot", "hydra.launcher.progress=lines",
                             f"hydra.launcher.cluster_name={os.environ['NRUN_TEST_SKY_CLUSTER']}", "x=1",
                             "action=sleep", "seconds=300", f"hydra.sweep.dir={tmp_path}/multirun"],
                            cwd=proj, preexec_fn=interruptible, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        log = tmp_path / "multirun" / "0" / "stdout.log"
        wait_for(lambda: log.exists() and "point x=1" in log.read_text(), timeout=600, step=1.0)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=240)
    finally:
        proc.kill()
    assert proc.returncode == 130, out[-2000:] + err[-3000:]
    assert states() == {0: "CANCELLED"}
    job = int(status_json()["points"][0]["backend_id"].rsplit("/", 1)[1])
    assert sky_queue(os.environ["NRUN_TEST_SKY_CLUSTER"])[job] == "CANCELLED"


def test_a_bare_shell_asks_the_sweeps_own_server_after_the_launcher_died(sky_env, home, tmp_path):
    """The launcher is killed (-9) while its point runs. `nrun status` and `nrun cancel` from a shell
    with none of SkyPilot's settings ask the API server the sweep went to (recorded with it): the
    point is RUNNING, not lost; then it is cancelled at SkyPilot. No local server is started for
    that shell (SkyPilot's client would start one on its default port)."""
    proj = make_project(tmp_path)
    proc = subprocess.Popen([PYTHON, "sweep_app.py", "-m", "hydra/launcher=nrun_skypilot", "hydra.launcher.progress=lines",
                             f"hydra.launcher.cluster_name={os.environ['NRUN_TEST_SKY_CLUSTER']}", "x=1",
                             "action=sleep", "seconds=300", f"hydra.sweep.dir={tmp_path}/multirun"],
                            cwd=proj, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        log = tmp_path / "multirun" / "0" / "stdout.log"
        wait_for(lambda: log.exists() and "point x=1" in log.read_text(), timeout=600, step=1.0)
    finally:
        proc.kill()
        proc.wait()
    bare_sky = tmp_path / "bare-shell-sky"
    bare = {k: v for k, v in os.environ.items() if not k.startswith(("SKYPILOT_", "SKY_", "NRUN_SKYPILOT"))}
    bare["SKY_RUNTIME_DIR"] = str(bare_sky)  # where a server SkyPilot started for this shell would live
    status = subprocess.run([*NRUN, "status", "last", "--json"], capture_output=True, text=True, env=bare, timeout=120)
    assert status.returncode == 0, status.stderr
    point = json.loads(status.stdout)["points"][0]
    assert point["state"] == "RUNNING", point
    job = int(point["backend_id"].rsplit("/", 1)[1])
    cancel = subprocess.run([*NRUN, "cancel", "last"], capture_output=True, text=True, env=bare, timeout=180)
    assert cancel.returncode == 0, cancel.stdout + cancel.stderr
    assert states() == {0: "CANCELLED"}
    wait_for(lambda: sky_queue(os.environ["NRUN_TEST_SKY_CLUSTER"])[job] == "CANCELLED", timeout=120, step=2.0)
    assert not list(bare_sky.rglob("*server*")), sorted(map(str, bare_sky.rglob("*")))


@pytest.mark.torch
def test_two_node_torchrun_on_a_cluster_of_its_own(sky_env, home, tmp_path):
    """nodes=2 + torchrun: a fresh 2-node SkyPilot cluster (two Slurm nodes), rendezvous from
    SKYPILOT_NODE_IPS, a gloo all-reduce across both; each point's value comes back from whichever
    node held rank 0, every node's lines are in nodes.log, and the cluster nrun made is gone after."""
    try:
        import torch  # noqa: F401
    except ImportError:
        missing("torch", "torch is not installed: pip install -e '.[test]'")
    proj = make_project(tmp_path, "torch_allreduce.py")
    proc = subprocess.run([PYTHON, "torch_allreduce.py", "-m", "hydra/launcher=nrun_skypilot", "hydra.launcher.progress=lines",
                           "nrun/launcher=torchrun", "hydra.launcher.nodes=2", "+x=1,2", "+hydra.launcher.env.OMP_NUM_THREADS=1",
                           f"hydra.sweep.dir={tmp_path}/multirun"],
                          cwd=proj, capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    points = status_json()["points"]
    assert [p["state"] for p in points] == ["COMPLETED", "COMPLETED"]
    assert all("'world_size': 2, 'sum': 3.0" in p["value_repr"] for p in points)
    for i in (0, 1):
        nodes_log = (tmp_path / "multirun" / str(i) / "nodes.log").read_text()
        assert "[node 0] rank " in nodes_log and "[node 1] rank " in nodes_log
        assert (tmp_path / "multirun" / str(i) / ".hydra" / "overrides.yaml").exists()
    cluster = points[0]["backend_id"].rsplit("/", 1)[0]
    code = f"import sky; print([r['name'] for r in sky.get(sky.status(cluster_names=[{cluster!r}]))])"
    left = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=120)
    assert left.returncode == 0 and left.stdout.strip().splitlines()[-1] == "[]", left.stdout + left.stderr


def _clusters_left(names) -> list:
    """Which of these SkyPilot clusters still exist (any state)."""
    code = f"import sky; print([r['name'] for r in sky.get(sky.status(cluster_names={list(names)!r}))])"
    out = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    return __import__("ast").literal_eval(out.stdout.strip().splitlines()[-1])


def test_a_retry_runs_on_the_cluster_the_sweep_made_and_it_is_gone_after(sky_env, home, tmp_path):
    """The one point fails, and while its retry waits nothing is live: the cluster nrun launched
    must stay up for the retry (teardown comes when the sweep is over, not when it is idle)."""
    proj = make_project(tmp_path, "flaky_app.py")
    proc = subprocess.run([PYTHON, "flaky_app.py", "-m", "hydra/launcher=nrun_skypilot", "hydra.launcher.progress=lines",
                           "hydra.launcher.retries=1", "+x=1", f"hydra.sweep.dir={tmp_path}/multirun"],
                          cwd=proj, capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    p = status_json()["points"][0]
    assert p["state"] == "COMPLETED" and p["attempts"] == 2 and "attempt 2" in p["value_repr"], p
    assert _clusters_left([p["backend_id"].rsplit("/", 1)[0]]) == []


def test_clusters_per_point_each_point_its_own_cluster_gone_when_it_ends(sky_env, home, tmp_path):
    proj = make_project(tmp_path)
    proc = sweep_on(proj, "x=1,2", "hydra.launcher.clusters=per_point")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    points = status_json()["points"]
    assert [p["state"] for p in points] == ["COMPLETED", "COMPLETED"]
    assert "'square': 4" in points[1]["value_repr"]
    clusters = {p["backend_id"].rsplit("/", 1)[0] for p in points}
    assert len(clusters) == 2
    assert _clusters_left(clusters) == []
    jobs = subprocess.run(["squeue", "-h", "-u", "nrun-sky", "-o", "%j"], capture_output=True, text=True)
    assert jobs.returncode == 0, jobs.stderr
    assert not [j for j in jobs.stdout.split() if any(j.startswith(c + "-") for c in clusters)], jobs.stdout


def test_ctrl_c_during_the_cluster_launch_cancels_it_and_leaves_no_cluster(sky_env, home, tmp_path):
    """Ctrl-C while the sweep's cluster launch waits in the Slurm queue (a job of ours holds a CPU
    on each node, the cluster wants a whole node): the launch is cancelled, the launcher exits 130
    instead of waiting for the launch, and the pending cluster nrun started is gone."""
    blocker = subprocess.run(["sbatch", "--parsable", "-N2", "--ntasks-per-node=1", "-c1", "-J", "nrun-test-blocker",
                              "-o", "/dev/null", "--wrap", "sleep 900"], capture_output=True, text=True)
    assert blocker.returncode == 0, blocker.stderr
    job = blocker.stdout.strip().split(";")[0]
    proj = make_project(tmp_path)
    try:
        wait_for(lambda: subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True,
                                        text=True).stdout.strip() == "RUNNING", timeout=120)
        proc = subprocess.Popen([PYTHON, "sweep_app.py", "-m", "hydra/launcher=nrun_skypilot", "hydra.launcher.progress=lines",
                                 "hydra.launcher.cpus=16", "x=1", f"hydra.sweep.dir={tmp_path}/multirun"], cwd=proj,
                                preexec_fn=interruptible, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            def pending() -> bool:
                q = subprocess.run(["squeue", "-h", "-u", "nrun-sky", "-t", "PD", "-o", "%j"], capture_output=True, text=True)
                return any(j.startswith("nrun-2") for j in q.stdout.split())
            wait_for(pending, timeout=300, step=1.0)  # the cluster's allocation waits for a free node
            proc.send_signal(signal.SIGINT)
            out, _ = proc.communicate(timeout=240)
        finally:
            proc.kill()
    finally:
        subprocess.run(["scancel", job], capture_output=True)
    assert proc.returncode == 130, out[-3000:]
    assert states() == {0: "CANCELLED"}
    sweep_id = status_json()["sweep"]["id"]
    assert _clusters_left([f"nrun-{sweep_id}"]) == []
    left = subprocess.run(["squeue", "-h", "-u", "nrun-sky", "-o", "%j"], capture_output=True, text=True).stdout.split()
    assert not [j for j in left if j.startswith(f"nrun-{sweep_id}")], left
