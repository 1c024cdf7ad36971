"""Large sweeps: what a user sees and gets stays Hydra's, and what the launcher prints stays
bounded by what changed rather than by the number of points (no timing here: see
benchmarks/scale.py for speed)."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from pathlib import Path

import yaml

from conftest import APPS, nrun, run_app, states
from nrun_core.store import Store

LOCAL = "hydra/launcher=nrun_local"
RECORD = ["hydra/sweeper=nrun_test_record", "hydra.sweeper.max_batch_size=1000"]


def test_a_2000_point_dry_run_shows_every_point_as_hydra_names_it(home, tmp_path):
    proc = run_app("sweep_app.py", LOCAL, "hydra.launcher.dry_run=true", "x=range(0,2000)", cwd=tmp_path,
                   timeout=600, check=True)
    points = re.findall(r"^# point #(\d+): x=(\d+) -> (\S+) \(hydra.job.name=(\S+), hydra.job.num=(\d+)\)$",
                        proc.stdout, re.M)
    assert len(points) == 2000
    for idx, x, job_dir, name, num in points:  # beyond the configs a sweep holds too (256)
        assert idx == x == num and name == "sweep_app"
        assert job_dir == str(tmp_path / "multirun" / idx)
    assert not list((tmp_path / "multirun").glob("*/.nrun"))   # nothing written for the points
    assert nrun("list").stdout.count("\n") <= 1                  # nor recorded


def _record(tmp_path: Path, name: str, launcher: list, env: dict) -> tuple:
    """(what the sweeper got back, the .hydra files of every job) of one run, paths relative."""
    record = tmp_path / f"{name}.json"
    run_app("sweep_app.py", *launcher, *RECORD, "x=range(0,5)", "msg=a,b", cwd=tmp_path, check=True, timeout=600,
            env={"RECORD_FILE": str(record), "RECORD_CONFIGS": "1", "PYTHONPATH": str(APPS), **env})
    sweep = tmp_path / "multirun"
    files = {}
    for job in sorted(sweep.glob("[0-9]*")):
        hydra = yaml.safe_load((job / ".hydra" / "hydra.yaml").read_text())["hydra"]
        del hydra["job"]["id"]  # Hydra's basic launcher numbers them, nrun names them after the sweep
        files[job.name] = {"config": (job / ".hydra" / "config.yaml").read_text(),
                           "overrides": (job / ".hydra" / "overrides.yaml").read_text(),
                           "job": hydra["job"], "output_dir": hydra["runtime"]["output_dir"],
                           "task": hydra["overrides"]["task"], "sweep": hydra["sweep"]}
    shutil.rmtree(sweep)
    text = json.dumps([json.loads(record.read_text()), files])
    return tuple(json.loads(text.replace(str(sweep), "<sweep>").replace(str(tmp_path), "<cwd>")))


def test_returns_and_job_files_equal_hydras_basic_launcher(home, tmp_path):
    """With only 3 configs held (NRUN_KEEP_CONFIGS=3) the others are composed on the scratch
    copy (payloads of command mode) or again (forked points, JobReturns): what a sweeper reads
    and what Hydra writes in each job's .hydra dir must still be what the basic launcher gives."""
    basic = _record(tmp_path, "basic", [], {})
    forked = _record(tmp_path, "forked", [LOCAL], {"NRUN_KEEP_CONFIGS": "3"})
    command = _record(tmp_path, "command", [LOCAL, "hydra.launcher.mode=command"], {"NRUN_KEEP_CONFIGS": "3"})
    returns, files = basic
    assert len(returns) == len(files) == 10
    assert returns[7]["cfg"]["x"] == 3 and returns[7]["output_dir"] == "<sweep>/7"
    assert files["7"]["job"]["override_dirname"] == "msg=b,x=3" and "x: 3" in files["7"]["config"]
    assert forked == basic
    assert command == basic


def test_the_line_view_prints_failures_and_a_bounded_progress(home, tmp_path):
    """120 points (over the 50 that get a line each), half failing: each failure gets its line,
    the 60 completions only count in the progress lines."""
    proc = run_app("sweep_app.py", LOCAL, "hydra.launcher.progress=lines", "x=range(0,60)", "action=ok,raise",
                   cwd=tmp_path, timeout=600)
    assert proc.returncode != 0
    assert set(states().values()) == {"COMPLETED", "FAILED"} and len(states()) == 120
    live = [line for line in proc.stderr.splitlines() if line.startswith("[nrun 2")]
    failed = [line for line in live if re.search(r"#\d+ FAILED", line)]
    assert len(failed) == 60 and all("ValueError: boom" in line for line in failed)
    assert not [line for line in live if re.search(r"#\d+ (COMPLETED|RUNNING)", line)]
    progress = [line for line in live if " done: " in line]
    assert progress and progress[-1].endswith("] 120/120 done: failed 60, completed 60")
    assert len(live) == 60 + len(progress)


def test_a_poll_is_written_in_one_transaction(tmp_path):
    store = Store(tmp_path / "nrun.db")
    store.create_sweep("s", name="s", executor="local", state="RUNNING")
    store.add_points("s", [{"idx": i, "overrides": [f"x={i}"], "spec": "{}"} for i in range(3000)])
    other = sqlite3.connect(tmp_path / "nrun.db")
    with store.batch():
        for i in range(3000):
            store.update_point("s", i, state="RUNNING", pid=i, detail="started")
        store.request_cancel("s", [5, 7])
        assert other.execute("SELECT COUNT(*) FROM points WHERE state = 'RUNNING'").fetchone()[0] == 0
    assert other.execute("SELECT COUNT(*) FROM points WHERE state = 'RUNNING'").fetchone()[0] == 3000
    assert other.execute("SELECT COUNT(*) FROM events WHERE detail = 'started'").fetchone()[0] == 3000
    assert [p["idx"] for p in store.points("s")] == list(range(3000))
    assert store.cancel_requests("s") == [5, 7]
    assert store.counts("s") == {"RUNNING": 3000}


def test_the_table_ends_with_the_counts_and_the_failures(home, tmp_path):
    """Over 64 points the table keeps only counts and recent rows; its last drawing (the one a
    log or CI keeps) still has every count and shows failed points first."""
    proc = run_app("sweep_app.py", LOCAL, "hydra.launcher.progress=table", "x=range(0,50)", "action=ok,raise",
                   cwd=tmp_path, timeout=600)
    assert proc.returncode != 0
    table = proc.stderr.split("did not complete")[0]
    assert re.search(r"nrun sweep \S+\s+completed 50\s+failed 50", table)
    shown = re.findall(r"│\s*(\d+)\s*│(?:[^│\n]*│){2}\s*(\w+)\s*│", table)  # #, x, action, state
    assert len(shown) == 24 and {state for _, state in shown} == {"FAILED"}
    assert "... and 76 more" in table
