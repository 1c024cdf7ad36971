"""nrun_local end to end: real Hydra apps, real processes, the real store, as a user runs them."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Dict

import pytest

from conftest import APPS, PYTHON, nrun, run_app, states, status_json, interruptible, wait_for
from require import missing

LOCAL = "hydra/launcher=nrun_local"


def test_failures_are_isolated_and_named(home, tmp_path):
    proc = run_app("sweep_app.py", LOCAL, "action=ok,raise,exit,segv,sleep", "seconds=30",
                   "hydra.launcher.timeout_s=2", "hydra.launcher.max_parallel=5", cwd=tmp_path)
    assert proc.returncode != 0
    assert states() == {0: "COMPLETED", 1: "FAILED", 2: "FAILED", 3: "FAILED", 4: "TIMEOUT"}
    points = {p["idx"]: p for p in status_json()["points"]}
    assert "'square': 0" in points[0]["value_repr"]
    assert "ValueError: boom at x=0" in points[1]["error"]
    assert "exited with code 3" in points[2]["error"]
    assert "SIGSEGV" in points[3]["error"]
    assert "timeout_s=2" in points[4]["error"]
    # the summary names every failed point and its log files
    for idx in (1, 2, 3, 4):
        assert f"#{idx} " in proc.stderr
        assert str(tmp_path / "multirun" / str(idx) / "stderr.log") in proc.stderr
    assert "ValueError: boom at x=0" in (tmp_path / "multirun" / "1" / "stderr.log").read_text()
    # the timed-out point's process is gone
    assert not _pid_alive(points[4]["pid"])


def test_max_parallel_bounds_concurrency(home, tmp_path):
    run_app("sweep_app.py", LOCAL, "action=sleep", "seconds=0.6", "x=1,2,3,4,5",
            "hydra.launcher.max_parallel=2", cwd=tmp_path, check=True)
    spans = [(p["started"], p["ended"]) for p in status_json()["points"]]
    most = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert most == 2


def test_unknown_launcher_key_fails_before_anything_runs(home, tmp_path):
    proc = run_app("sweep_app.py", LOCAL, "x=1,2", "hydra.launcher.max_paralel=2", cwd=tmp_path)
    assert proc.returncode != 0 and "max_paralel" in proc.stderr
    proc = run_app("sweep_app.py", LOCAL, "x=1,2", "nrun/launcher=torchrun",
                   "+hydra.launcher.launcher.nproc_per_nod=2", cwd=tmp_path)
    assert proc.returncode != 0
    assert "nproc_per_nod" in proc.stderr and "nproc_per_node" in proc.stderr  # the key and the valid ones
    proc = run_app("sweep_app.py", LOCAL, "x=1,2", "hydra.launcher.retries=-1", cwd=tmp_path)
    assert proc.returncode != 0 and "hydra.launcher.retries=-1" in proc.stderr
    assert not (tmp_path / "multirun" / "0").exists()
    assert nrun("list").stdout.count("\n") <= 1  # header only: no sweep recorded


def test_dry_run_prints_every_command_and_runs_nothing(home, tmp_path):
    proc = run_app("sweep_app.py", LOCAL, "x=1,2", "hydra.launcher.dry_run=true", cwd=tmp_path, check=True)
    assert proc.stdout.count("## point") == 2
    assert f"# point #0: x=1 -> {tmp_path}/multirun/0 (hydra.job.name=sweep_app, hydra.job.num=0)" in proc.stdout
    assert "# task function: __main__.main (" in proc.stdout and "nrun_point.py" not in proc.stdout
    assert "hydra.job.num=1" in proc.stdout
    assert not (tmp_path / "multirun" / "0" / "stdout.log").exists()


def test_retries_rerun_a_failed_point(home, tmp_path):
    marker = tmp_path / "ran-once"
    app = tmp_path / "flaky.py"
    app.write_text(
        "import hydra, pathlib\n"
        "@hydra.main(version_base=None, config_path=None, config_name=None)\n"
        "def main(cfg):\n"
        f"    m = pathlib.Path({str(marker)!r})\n"
        "    if not m.exists():\n"
        "        m.write_text('x'); raise RuntimeError('first try fails')\n"
        "    return 'second try'\n"
        "main()\n")
    subprocess.run([PYTHON, str(app), "-m", LOCAL, "+x=1", "hydra.launcher.retries=1",
                    f"hydra.sweep.dir={tmp_path}/multirun"], cwd=tmp_path, check=True,
                   capture_output=True, timeout=120)
    p = status_json()["points"][0]
    assert p["state"] == "COMPLETED" and p["attempts"] == 2 and "second try" in p["value_repr"]


def test_cancel_one_point_of_a_detached_sweep(home, tmp_path):
    run_app("sweep_app.py", LOCAL, "action=sleep", "seconds=3", "x=1,2",
            "hydra.launcher.wait=false", cwd=tmp_path, check=True)
    wait_for(lambda: list(states().values()).count("RUNNING") == 2)
    assert nrun("cancel", "last", "0").returncode == 0
    wait_for(lambda: states()[1] == "COMPLETED", timeout=30)
    assert states() == {0: "CANCELLED", 1: "COMPLETED"}


def test_sigkill_of_the_launcher_leaves_a_consistent_store(home, tmp_path):
    launcher = subprocess.Popen(preexec_fn=interruptible, args=
        [PYTHON, str(APPS / "sweep_app.py"), "-m", LOCAL, "action=sleep", "seconds=2", "x=1,2,3",
         "hydra.launcher.max_parallel=1", f"hydra.sweep.dir={tmp_path}/multirun"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: nrun("list").stdout.count("\n") >= 2 and 0 in states() and states()[0] == "RUNNING")
    launcher.kill()
    launcher.wait()
    wait_for(lambda: "RUNNING" not in states().values(), timeout=30)  # the orphan finishes, then settles
    final = states()
    assert final[0] == "COMPLETED"                      # settled from its result file
    assert status_json()["points"][0]["usage"]["wall_s"] >= 2  # with what it used, as if watched
    assert final[1] == final[2] == "LOST"               # never started: named, not forgotten
    assert status_json()["sweep"]["state"] == "FAILED"


def test_ctrl_c_cancels_running_points(home, tmp_path):
    launcher = subprocess.Popen(preexec_fn=interruptible, args=
        [PYTHON, str(APPS / "sweep_app.py"), "-m", LOCAL, "action=sleep", "seconds=60", "x=1,2,3",
         "hydra.launcher.max_parallel=2", f"hydra.sweep.dir={tmp_path}/multirun"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: nrun("list").stdout.count("\n") >= 2 and list(states().values()).count("RUNNING") == 2)
    pids = [p["pid"] for p in status_json()["points"] if p["state"] == "RUNNING"]
    launcher.send_signal(signal.SIGINT)
    _, err = launcher.communicate(timeout=60)
    assert launcher.returncode == 130
    assert "cancel" in err.lower()
    assert set(states().values()) == {"CANCELLED"}
    assert not any(_pid_alive(pid) for pid in pids)


def test_resume_skips_points_that_completed(home, tmp_path):
    run_app("sweep_app.py", LOCAL, "x=1,2", "hydra.launcher.sweep_name=resumable", cwd=tmp_path, check=True)
    first = {p["idx"]: p["pid"] for p in status_json()["points"]}
    run_app("sweep_app.py", LOCAL, "x=1,2,3", "hydra.launcher.sweep_name=resumable",
            "hydra.launcher.resume=true", cwd=tmp_path / "again" if (tmp_path / "again").mkdir() is None else tmp_path,
            check=True)
    second = status_json()["points"]
    assert [p["state"] for p in second] == ["COMPLETED"] * 3
    assert [p["pid"] for p in second][:2] == [None, None]      # not run again
    assert second[2]["pid"] is not None and first


def test_plugin_is_registered_with_hydra(tmp_path):
    out = subprocess.run([PYTHON, str(APPS / "sweep_app.py"), "--info", "plugins"], capture_output=True,
                         text=True, cwd=tmp_path, check=True).stdout
    assert "NrunLauncher" in out and "NrunSearchPath" in out
    cfg = subprocess.run([PYTHON, str(APPS / "sweep_app.py"), "--cfg", "hydra", LOCAL, "nrun/launcher=torchrun"],
                         capture_output=True, text=True, cwd=tmp_path, check=True).stdout
    assert "NrunLauncher" in cfg and "_executor_: local" in cfg
    assert "nproc_per_node" in cfg and "max_parallel" in cfg


@pytest.mark.torch
def test_torchrun_two_process_gloo_allreduce(home, tmp_path):
    try:
        import torch  # noqa: F401
    except ImportError:
        missing("torch", "torch is not installed: pip install -e '.[test]'")
    run_app("torch_allreduce.py", LOCAL, "nrun/launcher=torchrun", "+run=1", cwd=tmp_path, check=True,
            env={"OMP_NUM_THREADS": "1"}, timeout=240)
    p = status_json()["points"][0]
    assert p["state"] == "COMPLETED"
    assert "'world_size': 2" not in p["value_repr"]  # nproc defaults to 1 without GPUs ...
    run_app("torch_allreduce.py", LOCAL, "nrun/launcher=torchrun", "hydra.launcher.launcher.nproc_per_node=2",
            "+run=1", cwd=tmp_path, check=True, env={"OMP_NUM_THREADS": "1"}, timeout=240)
    p = status_json()["points"][0]
    assert p["state"] == "COMPLETED"
    assert "'world_size': 2, 'sum': 3.0" in p["value_repr"]   # ... and 2 workers when asked
    log = (tmp_path / "multirun" / "0" / "stdout.log").read_text()
    assert "rank 0/2" in log and "rank 1/2" in log


def _pid_alive(pid) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, TypeError):
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def _git(cwd, *args):
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@e"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


def _repo_with_app(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / "src").mkdir(parents=True)
    (repo / "src" / "app.py").write_text(
        "import hydra, pathlib, time\n"
        "@hydra.main(version_base=None, config_path=None, config_name=None)\n"
        "def main(cfg):\n"
        "    time.sleep(cfg.get('wait', 0))\n"
        "    return pathlib.Path('version.txt').read_text().strip()\n"
        "main()\n")
    (repo / "src" / "version.txt").write_text("v1\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "v1")
    return repo


def test_git_snapshot_keeps_running_points_on_the_launched_code(home, tmp_path):
    repo = _repo_with_app(tmp_path)
    launcher = subprocess.Popen(preexec_fn=interruptible, args=
        [PYTHON, "app.py", "-m", LOCAL, "nrun/packager=git", "+x=1,2", "+wait=3",
         f"hydra.sweep.dir={tmp_path}/multirun", "hydra.launcher.progress=lines"],
        cwd=repo / "src", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: nrun("list").stdout.count("\n") >= 2 and "RUNNING" in states().values())
    (repo / "src" / "version.txt").write_text("v2 edited during the sweep\n")
    out, err = launcher.communicate(timeout=120)
    assert launcher.returncode == 0, err
    points = status_json()["points"]
    assert [p["value_repr"] for p in points] == ["'v1'", "'v1'"]      # ran from the snapshot
    show = nrun("show", "last").stdout
    commit = _git(repo, "rev-parse", "HEAD").strip()
    assert f"commit={commit}" in show and "dirty=False" in show and "packager=git" in show


def test_dirty_tree_is_refused_before_anything_runs(home, tmp_path):
    repo = _repo_with_app(tmp_path)
    (repo / "src" / "version.txt").write_text("uncommitted\n")
    proc = subprocess.run([PYTHON, "app.py", "-m", LOCAL, "nrun/packager=git", "+x=1,2",
                           f"hydra.sweep.dir={tmp_path}/multirun"], cwd=repo / "src",
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "src/version.txt" in proc.stderr and "on_dirty" in proc.stderr
    assert "Traceback" not in proc.stderr                              # a message, not a stack
    assert nrun("list").stdout.count("\n") <= 1


def test_logs_follow_streams_until_the_point_ends(home, tmp_path):
    run_app("sweep_app.py", LOCAL, "action=tick", "seconds=3", "x=1", "hydra.launcher.wait=false",
            cwd=tmp_path, check=True)
    wait_for(lambda: states()[0] == "RUNNING")
    follow = subprocess.Popen(preexec_fn=interruptible, args=[*__import__("conftest").NRUN, "logs", "last", "0", "--follow"],
                              stdout=subprocess.PIPE, text=True)
    first = follow.stdout.readline()
    assert first.startswith("point x=1") or first.startswith("tick")
    assert states()[0] == "RUNNING"                  # the first line came while the point still ran
    rest = follow.communicate(timeout=60)[0]
    assert follow.returncode == 0
    assert "tick 14" in first + rest                 # ... and the last one once it had ended
    assert states()[0] == "COMPLETED"


def test_plugin_discovery_imports_only_the_registry(tmp_path):
    """Hydra imports nrun's plugin at every start of every app: it must stay registration only
    (the registry is plain data; nothing else of nrun_core is imported)."""
    out = subprocess.run([PYTHON, str(APPS / "sweep_app.py"), "action=modules", f"hydra.run.dir={tmp_path}"],
                         capture_output=True, text=True, cwd=tmp_path, check=True).stdout
    assert "nrun modules: ['nrun_core', 'nrun_core.registry']" in out


def _gpu_spans() -> Dict[str, list]:
    """GPU id -> [(started, ended)] of the points that were given it (from each point's own env)."""
    import ast

    spans: Dict[str, list] = {}
    for p in status_json()["points"]:
        assert p["state"] == "COMPLETED", p
        for g in ast.literal_eval(p["value_repr"])["CUDA_VISIBLE_DEVICES"].split(","):
            spans.setdefault(g, []).append((p["started"], p["ended"]))
    return spans


def _overlaps(spans: list) -> bool:
    spans = sorted(spans)
    return any(b[0] < a[1] for a, b in zip(spans, spans[1:]))


def test_gpus_per_node_gives_each_point_gpus_of_its_own(home, tmp_path):
    """A sweep on a 3-GPU box (the launching shell lists them): each point sees one GPU, never one
    another running point holds, and all three are used; two per point leaves room for one point."""
    gpus = {"CUDA_VISIBLE_DEVICES": "0,1,2"}
    proc = run_app("sweep_app.py", LOCAL, "action=env", "env_names=[CUDA_VISIBLE_DEVICES]", "x=range(0,7)",
                   "hydra.launcher.gpus_per_node=1", "hydra.launcher.max_parallel=8", cwd=tmp_path, env=gpus,
                   check=True)
    assert "GPUs 0,1,2, 1 per point" in proc.stdout + proc.stderr
    spans = _gpu_spans()
    assert set(spans) == {"0", "1", "2"} and sum(map(len, spans.values())) == 7
    assert not any(_overlaps(s) for s in spans.values())
    (tmp_path / "two").mkdir()
    run_app("sweep_app.py", LOCAL, "action=env", "env_names=[CUDA_VISIBLE_DEVICES]", "x=range(0,3)",
            "hydra.launcher.gpus_per_node=2", cwd=tmp_path / "two", env=gpus, check=True)
    spans = _gpu_spans()
    assert set(spans) <= {"0", "1", "2"} and all(len(v) <= 3 for v in spans.values())
    everything = [s for v in spans.values() for s in v]
    assert len(everything) == 6 and not _overlaps(list(set(everything)))  # one point at a time, 2 GPUs each


def test_gpus_per_node_without_enough_gpus_is_refused_before_anything_runs(home, tmp_path):
    proc = run_app("sweep_app.py", LOCAL, "x=1,2", "hydra.launcher.gpus_per_node=4", cwd=tmp_path,
                   env={"CUDA_VISIBLE_DEVICES": "0,1"})
    assert proc.returncode != 0 and "hydra.launcher.gpus_per_node=4" in proc.stderr and "at most 2" in proc.stderr
    proc = run_app("sweep_app.py", LOCAL, "x=1,2", "hydra.launcher.gpus_per_node=1", cwd=tmp_path,
                   env={"CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode != 0 and "shows no GPU" in proc.stderr and "gpus_per_node=0" in proc.stderr
    assert not (tmp_path / "multirun" / "0").exists()
