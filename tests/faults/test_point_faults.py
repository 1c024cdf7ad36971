"""Faults around points: what fault injection found (issue "Nothing lost, nothing leaked"), each
reproduced here against real processes, a real store and the real Slurm cluster."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from conftest import APPS, PYTHON, nrun, run_app, states, status_json, wait_for
from nrun_core import procs

LOCAL = "hydra/launcher=nrun_local"


def _sweep(cwd: Path, *args: str, sweep_dir: Path, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, str(APPS / "sweep_app.py"), "-m", LOCAL, "hydra.launcher.progress=quiet", *args,
                           f"hydra.sweep.dir={sweep_dir}"], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_resume_reuses_only_its_own_points_results(home, tmp_path):
    """x=1,2 then x=3,4 then x=1,2 with resume, one sweep dir and name: x=1,2 come back with their
    own values (1 and 4), never the values another sweep left in the same job dirs."""
    same = ["hydra.launcher.sweep_name=grid", "action=value"]
    assert _sweep(tmp_path, "x=1,2", *same, sweep_dir=tmp_path / "m").returncode == 0
    assert _sweep(tmp_path, "x=3,4", *same, sweep_dir=tmp_path / "m").returncode == 0
    record = tmp_path / "record.json"
    proc = _sweep(tmp_path, "x=1,2", *same, "hydra.launcher.resume=true", "hydra/sweeper=nrun_test_record",
                  sweep_dir=tmp_path / "m", env={"RECORD_FILE": str(record), "PYTHONPATH": str(APPS)})
    assert proc.returncode == 0, proc.stderr
    assert [r["value"] for r in json.loads(record.read_text())] == [1.0, 4.0]
    assert all(p["state"] == "COMPLETED" and p["attempts"] == 0 for p in status_json()["points"])  # nothing reran
    assert "resumed" in nrun("show", "last").stdout


def test_two_sweeps_in_one_sweep_dir_keep_their_own_results(home, tmp_path):
    """Hydra's default sweep dir has one-second resolution: two launches in the same second share
    it. Each must get its own results (no result file of the other is read or cleared)."""
    results = {}

    def run(name: str, xs: str) -> None:
        results[name] = _sweep(tmp_path, f"x={xs}", "action=sleep", "seconds=1.5", f"hydra.launcher.sweep_name={name}",
                               sweep_dir=tmp_path / "shared")

    threads = [threading.Thread(target=run, args=("a", "1,2")), threading.Thread(target=run, args=("b", "3,4"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results["a"].returncode == 0 and results["b"].returncode == 0, (results["a"].stderr, results["b"].stderr)
    for name, squares in (("a", [1, 4]), ("b", [9, 16])):
        st = status_json(name)
        assert [p["state"] for p in st["points"]] == ["COMPLETED", "COMPLETED"]
        assert [f"'square': {sq}" in p["value_repr"] for p, sq in zip(st["points"], squares)] == [True, True]


@pytest.mark.parametrize("mode", ["fork", "command"])
def test_a_points_daemonised_grandchild_ends_with_the_point(home, tmp_path, mode):
    pidfile = tmp_path / "daemon.pid"
    proc = run_app("sweep_app.py", LOCAL, f"hydra.launcher.mode={mode}", "action=daemon", f"msg={pidfile}",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    pid = int(pidfile.read_text())
    wait_for(lambda: procs.start_time(pid) is None, timeout=10)
    assert "left 1 process(es) running" in (tmp_path / "multirun" / "0" / "stderr.log").read_text()


@pytest.mark.parametrize("mode", ["fork", "command"])
def test_a_timed_out_points_daemon_is_killed_too(home, tmp_path, mode):
    """In fork mode the point's token is only in os.environ (invisible in /proc): the daemon is
    found through the point's process tree and its process name."""
    pidfile = tmp_path / "daemon.pid"
    proc = run_app("sweep_app.py", LOCAL, f"hydra.launcher.mode={mode}", "action=daemon", f"msg={pidfile}",
                   "seconds=60", "hydra.launcher.timeout_s=3", cwd=tmp_path)
    assert proc.returncode != 0 and states() == {0: "TIMEOUT"}
    pid = int(pidfile.read_text())
    wait_for(lambda: procs.start_time(pid) is None, timeout=10)


def test_sigterm_to_the_detached_supervisor_cancels_and_records(home, tmp_path):
    proc = run_app("sweep_app.py", LOCAL, "action=sleep", "seconds=60", "x=1,2", "hydra.launcher.wait=false",
                   cwd=tmp_path, check=True)
    assert "running detached" in proc.stderr
    wait_for(lambda: set(states().values()) == {"RUNNING"})
    st = status_json()
    os.kill(st["sweep"]["supervisor_pid"], signal.SIGTERM)
    wait_for(lambda: set(states().values()) == {"CANCELLED"}, timeout=30)
    assert not any(procs.alive(p["pid"], p["pid_start"]) for p in st["points"])
    assert "cancelled by SIGTERM" in nrun("show", "last").stdout


def test_an_app_that_turns_sigterm_into_systemexit_is_reported_cancelled(home, tmp_path):
    """PyTorch Lightning turns SIGTERM into a SystemExit subclass; a cancelled fork-mode point of
    such an app is CANCELLED, not "exited with code 70"."""
    app = tmp_path / "graceful.py"
    app.write_text(
        "import signal, sys, time, hydra\n"
        "class Graceful(SystemExit):\n    pass\n"
        "@hydra.main(version_base=None, config_path=None, config_name=None)\n"
        "def main(cfg):\n"
        "    def on_term(*_):\n        raise Graceful(0)\n"
        "    signal.signal(signal.SIGTERM, on_term)\n"
        "    print('started', flush=True)\n"
        "    time.sleep(60)\n"
        "if __name__ == '__main__':\n    main()\n")
    proc = subprocess.run([PYTHON, str(app), "-m", LOCAL, "+x=1,2", "hydra.launcher.wait=false",
                           f"hydra.sweep.dir={tmp_path}/m"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    wait_for(lambda: all("started" in Path(p["stdout"]).read_text() for p in status_json()["points"]))
    assert nrun("cancel", "last", "0").returncode == 0
    wait_for(lambda: states()[0] == "CANCELLED", timeout=20)
    assert "code 70" not in (status_json()["points"][0]["error"] or "")
    nrun("cancel", "last")


@pytest.mark.parametrize("arg,words", [
    ("hydra.launcher.timeout_s=nan", ["timeout_s=nan", "positive number"]),
    ("hydra.launcher.timeout_s=inf", ["timeout_s=inf", "positive number"]),
    ("hydra.launcher.retries=1000", ["retries=1000", "from 0 to 100"]),
])
def test_absurd_settings_are_refused_before_anything_runs(home, tmp_path, arg, words):
    proc = run_app("sweep_app.py", LOCAL, "x=1", arg, cwd=tmp_path)
    assert proc.returncode == 2 and all(w in proc.stderr for w in words), proc.stderr
    assert not (tmp_path / "multirun" / "0").exists()


def test_retries_back_off(home, tmp_path):
    """A point that always fails is retried 1 s, then 2 s later (not hundreds of times a second)."""
    proc = run_app("sweep_app.py", LOCAL, "action=raise", "hydra.launcher.retries=2", cwd=tmp_path)
    assert proc.returncode != 0
    point = status_json()["points"][0]
    assert point["attempts"] == 3 and point["state"] == "FAILED"
    from nrun_core.store import Store

    starts = [e["time"] for e in Store(create=False).events(status_json()["sweep"]["id"], 0) if e["state"] == "RUNNING"]
    assert len(starts) == 3 and starts[1] - starts[0] >= 0.9 and starts[2] - starts[1] >= 1.9, starts


def test_secret_values_on_the_command_line_are_stored_redacted(home, tmp_path):
    """`+hydra.launcher.env.WANDB_API_KEY=...` and MY_PASS-style names: the store keeps the
    command line only after the same redaction as env, and says what Hydra itself keeps."""
    key, pw = "wandb-9f8e7d", "hunter2-pass"
    proc = run_app("sweep_app.py", LOCAL, "x=1", f"+hydra.launcher.env.WANDB_API_KEY={key}",
                   f"+hydra.launcher.env.MY_PASS={pw}", cwd=tmp_path, check=True)
    show = nrun("show", "last", "--json").stdout + nrun("show", "last").stdout
    assert key not in show and pw not in show and "WANDB_API_KEY=<redacted>" in show and "MY_PASS=<redacted>" in show
    for path in home.rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes() and pw.encode() not in path.read_bytes(), path
    assert "MY_PASS" in proc.stderr and "multirun.yaml" in proc.stderr    # the warning says where Hydra keeps them
    assert oct(home.stat().st_mode & 0o777) == "0o700"
    assert oct((home / "nrun.db").stat().st_mode & 0o777) == "0o600"


def test_docker_settings_are_checked_before_the_code_is_packed(home, tmp_path):
    """A missing image is a setting error: nothing is packed (or recorded) for a sweep that
    cannot run."""
    proc = subprocess.run([PYTHON, str(APPS / "sweep_app.py"), "-m", "hydra/launcher=nrun_docker", "x=1",
                           f"hydra.sweep.dir={tmp_path}/m"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "hydra.launcher.image is not set" in proc.stderr
    assert not (home / "artifacts").exists() and not (home / "nrun.db").exists()
