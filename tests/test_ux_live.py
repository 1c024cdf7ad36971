"""What a researcher sees while a sweep runs: the points' own output live, prefixed by point; a
progress view that shows only what tells the points apart and fits the terminal; one failure
report with the traceback once; nothing left behind by a sweep that never ran.

The streamed output is checked on every backend of the conformance suite (its ``backend``
fixture, so a backend added there is covered here too); the rest on nrun_local.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

from conftest import APPS, nrun, run_app, states
from nrun_core.executors.base import Control
from nrun_core.livelogs import CHUNK, HOLD, LogTail
from nrun_core.progress import Row, TableView
from nrun_core.spec import JobSpec
from nrun_core.swept import Swept, declared_keys
from nrun_core.termfit import fit

sys.path.insert(0, str(Path(__file__).parent / "conformance"))
import test_conformance as conformance  # noqa: E402  (its backends and their fixtures)

import test_slurm_ssh as slurm_ssh  # noqa: E402  (Slurm through SSH: its fixtures and launch)

from _pytest.fixtures import getfixturemarker  # noqa: E402

# Every fixture of the conformance module (its `backend` asks for the sandbox fixtures by name,
# and each backend added there brings its own), then Slurm-through-SSH's
globals().update({name: obj for name, obj in vars(conformance).items() if getfixturemarker(obj) is not None})
ssh_login, project, slurm_cluster = slurm_ssh.ssh_login, slurm_ssh.project, slurm_ssh.slurm_cluster
LOCAL = "hydra/launcher=nrun_local"


# -- live output, on every backend --------------------------------------------------------------
def test_a_one_point_sweep_streams_its_output_and_its_traceback_once(backend, proj, home, tmp_path):
    """The default (stream=auto) for one point: the app's stdout and stderr on the terminal, each
    line prefixed by its point; a failure's traceback appears once, and Hydra adds no
    'Error executing job' of its own."""
    proc = conformance.launch(backend, proj, "x=5", "action=raise", sweep_dir=tmp_path / "multirun")
    assert proc.returncode != 0
    assert "[0] point x=5 action=raise" in proc.stdout, proc.stdout      # the point's stdout, live
    assert "[0] to-stderr" in proc.stderr and "[0] ValueError: boom at x=5" in proc.stderr
    assert (proc.stdout + proc.stderr).count("Traceback (most recent call last)") == 1, proc.stdout + proc.stderr
    assert "Error executing job" not in proc.stderr
    assert re.search(r"#0 FAILED: ValueError: boom at x=5\n\s+logs: \S+/stdout.log", proc.stderr), proc.stderr
    assert states() == {0: "FAILED"}


def test_slurm_over_ssh_streams_from_the_login_node(ssh_login, slurm_cluster, home, project, tmp_path):
    """Slurm through SSH: the logs live on the login node; they are read there (Control.logs over
    the transport), in byte ranges, like `nrun logs -f` does."""
    proc = slurm_ssh._launch(project, [*slurm_ssh._ssh_args(ssh_login, tmp_path / "login-node", slurm_cluster["SLURM_CONF"]),
                                       "hydra.launcher.stream=true", "action=ok,raise", "x=4"])
    assert proc.returncode != 0
    assert re.search(r"^\[0 action=ok\]\s+point x=4 action=ok", proc.stdout, re.M), proc.stdout  # prefixes aligned
    assert re.search(r"^\[1 action=raise\] point x=4 action=raise", proc.stdout, re.M)
    assert (proc.stdout + proc.stderr).count("Traceback (most recent call last)") == 1, proc.stdout + proc.stderr
    assert "[1 action=raise] ValueError: boom" in proc.stderr


# -- live output, its options ---------------------------------------------------------------------
def test_stream_true_prefixes_each_line_with_the_swept_values(home, tmp_path):
    proc = run_app("sweep_app.py", LOCAL, "hydra.launcher.progress=lines", "hydra.launcher.stream=true",
                   "x=1,2", "msg=same", "action=tick", "seconds=0.4", cwd=tmp_path, check=True)
    for idx, x in ((0, 1), (1, 2)):
        mine = [line for line in proc.stdout.splitlines() if line.startswith(f"[{idx} x={x}]")]
        assert mine == [f"[{idx} x={x}] point x={x} action=tick msg='same'", f"[{idx} x={x}] tick 0",
                        f"[{idx} x={x}] tick 1"]
    assert "msg=same" not in proc.stderr  # common to all points: not in the progress lines either


def test_several_points_are_not_streamed_unless_asked_nor_when_detached(home, tmp_path):
    proc = run_app("sweep_app.py", LOCAL, "hydra.launcher.progress=lines", "x=1,2", cwd=tmp_path, check=True)
    assert "point x=" not in proc.stdout and "to-stderr" not in proc.stderr
    detached = run_app("sweep_app.py", LOCAL, "hydra.launcher.wait=false", "hydra.launcher.stream=true", "x=3",
                       cwd=tmp_path, check=True)
    assert "point x=3" not in detached.stdout and "running detached" in detached.stderr


def test_a_bad_stream_value_names_the_setting_and_leaves_nothing(home, tmp_path):
    proc = run_app("sweep_app.py", LOCAL, "hydra.launcher.stream=sometimes", "x=1,2", cwd=tmp_path)
    assert proc.returncode != 0
    assert "hydra.launcher.stream='sometimes'" in proc.stderr and "auto, true, false" in proc.stderr
    assert not (tmp_path / "multirun").exists()  # Hydra's multirun.yaml was the only thing in it


def test_the_tail_holds_partial_lines_and_reads_in_bounded_chunks(tmp_path):
    """Through the same Control.logs as `nrun logs`: a line is printed once complete, a progress
    bar redrawn with \\r shows its last state, a huge line comes in pieces, never whole."""
    spec = JobSpec(sweep_id="s", index=3, overrides=["lr=0.1"], job_dir=str(tmp_path / "3"), command=["x"])
    Path(spec.job_dir).mkdir()
    got = []
    tail = LogTail(Control({"id": "s"}), "s", lambda batch: got.extend((p, line, err) for p, line, err, _ in batch),
                   label=lambda idx: "lr=0.1")
    tail.watch(spec)
    out = open(spec.stdout, "ab", buffering=0)
    out.write(b"first line\nsecond, still being writ")
    tail.pump()
    assert got == [("[3 lr=0.1]", "first line", False)]
    tail._next = 0  # the next turn now (pump reads at most every EVERY_S)
    out.write(b"ten\nepoch 1: 10%\repoch 1: 100%\n")
    tail.pump()
    assert [line for _, line, _ in got[1:]] == ["second, still being written", "epoch 1: 100%"]
    out.write(b"y" * (HOLD + CHUNK * 20))  # no newline: held up to HOLD, then printed in pieces
    with open(spec.stderr, "wb") as err:
        err.write(b"no newline at the end")
    del got[:]
    tail._next = 0
    tail.pump()
    assert got and all(len(line) <= HOLD + CHUNK for _, line, _ in got)
    assert sum(len(line) for _, line, _ in got) <= CHUNK * 16  # one turn reads a bounded amount
    tail.drain(spec)  # the point ended: everything, the last partial lines included
    assert sum(len(line) for _, line, err in got if not err) == HOLD + CHUNK * 20
    assert got[-1] == ("[3 lr=0.1]", "no newline at the end", True)


# -- the progress view ----------------------------------------------------------------------------
def test_only_what_differs_between_points_labels_them():
    swept = Swept(declared_keys(["lr=0.1,0.2", "epochs=3"], {"params": {"batch": "choice(32,64)"}}))
    points = [["lr=0.1", "epochs=3", "nrun/packager=git", "nrun/launcher=torchrun", "+tag=a"],
              ["lr=0.2", "epochs=3", "nrun/packager=git", "nrun/launcher=torchrun", "+tag=b"]]
    for ov in points:
        swept.add(ov)
    assert swept.label(points[1]) == "lr=0.2 +tag=b"
    assert swept.keys() == ["lr", "tag", "batch"]
    one = Swept(declared_keys(["lr=0.5"], None))  # an Optuna batch of one: its params still label it
    one.add(["lr=0.5", "nrun/packager=git"])
    assert one.label(["lr=0.5", "nrun/packager=git"]) == ""
    optuna = Swept(declared_keys([], {"params": {"lr": "interval(0,1)"}}))
    optuna.add(["lr=0.31", "nrun/packager=git"])
    assert optuna.label(["lr=0.31", "nrun/packager=git"]) == "lr=0.31"


def test_the_table_fits_the_terminal_and_stays_bounded_at_10000_points():
    from rich.console import Console

    rows = {i: Row(i, f"lr={i / 1e4} model=resnet{i % 7}", values={"lr": str(i / 1e4), "model": f"resnet{i % 7}"})
            for i in range(10_000)}
    console = Console(record=True, width=100, height=50, force_terminal=True, color_system=None)
    view = TableView("20261130-000000-abcd", rows, keys=["lr", "model"], console=console)
    for i in range(0, 10_000, 3):
        rows[i].state, rows[i].started = "RUNNING", time.time()
        rows[i].detail = "a detail far too long for any column of a table of a hundred columns " * 3
        view.changed(rows[i])
    view.close()
    text = re.sub(r"\x1b\[[0-9;]*m", "", console.export_text(styles=True))       # colors off
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "\n", text)  # cursor moves between two drawings of the table
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 100
    header = next(line for line in lines if "state" in line)
    assert re.search(r"#\s*┃\s*lr\s*┃\s*model\s*┃\s*state\s*┃\s*time\s*┃\s*detail", header), header
    assert re.search(r"RUNNING\s+│\s+\d+\.\ds │ a detail far too long[^│\n]*… │\n", text)  # cut, not wrapped
    assert "... and 9976 more" in text  # 24 rows shown of 10,000
    assert fit("x" * 120, 100) == "x" * 99 + "…" and fit("short", 100) == "short"


# -- the header, the failure report, what is left behind ------------------------------------------
def test_the_header_is_printed_once_with_a_clean_path_over_optuna_batches(home, tmp_path):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "opt.yaml").write_text(
        "defaults:\n  - sweep_app\n  - override hydra/sweeper: optuna\n  - _self_\n"
        "hydra:\n  sweeper:\n    n_trials: 3\n    n_jobs: 1\n    direction: minimize\n"
        "    params:\n      x: range(-3, 3)\n")
    (tmp_path / "conf" / "sweep_app.yaml").write_text((APPS / "conf" / "sweep_app.yaml").read_text())
    app = tmp_path / "app.py"
    app.write_text((APPS / "sweep_app.py").read_text().replace('config_name="sweep_app"', 'config_name="opt"'))
    proc = subprocess.run([sys.executable, str(app), "-m", LOCAL, "hydra.launcher.progress=lines", "action=value",
                           f"hydra.sweep.dir={tmp_path}//out//opt"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    headers = [line for line in proc.stderr.splitlines() if "point(s) in its first batch on nrun_local" in line]
    assert len(headers) == 1 and headers[0].endswith(f"outputs in {tmp_path}/out/opt")
    assert "[0 x=" in proc.stdout  # each trial is one point: streamed, labelled by its Optuna param


def test_a_failure_report_names_each_point_once(home, tmp_path):
    proc = run_app("sweep_app.py", LOCAL, "hydra.launcher.progress=lines", "x=1,2,3", "action=ok,raise",
                   cwd=tmp_path)
    assert proc.returncode != 0
    assert set(states().values()) == {"COMPLETED", "FAILED"} and len(states()) == 6
    report = proc.stderr.split("did not complete:")[1]
    for idx, x in ((1, 1), (3, 2), (5, 3)):
        assert f"#{idx} FAILED (x={x} action=raise): ValueError: boom at x={x}" in report
        assert f"logs: {tmp_path}/multirun/{idx}/stdout.log  {tmp_path}/multirun/{idx}/stderr.log" in report
    assert proc.stderr.count("Traceback (most recent call last)") == 1
    assert "Error executing job" not in proc.stderr and "2 more traceback(s)" in report


def test_a_dry_run_leaves_no_sweep_dir(home, tmp_path):
    proc = run_app("sweep_app.py", LOCAL, "hydra.launcher.dry_run=true", "x=1,2", cwd=tmp_path, check=True)
    assert "nothing was submitted" in proc.stdout
    assert not (tmp_path / "multirun").exists()
    assert nrun("list").stdout.count("\n") <= 1
