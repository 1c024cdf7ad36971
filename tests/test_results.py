"""`nrun results` and `nrun plot` against real sweeps (nrun_local): the swept parameters against
what each point returned, as a table, CSV and JSON, sorted; and the PNG drawn from them."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Dict, List

import pytest

from conftest import nrun, run_app

LOCAL = "hydra/launcher=nrun_local"
LONG = "a message long enough to be cut when the terminal is narrow"


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory) -> Dict[str, object]:
    """Two real sweeps in one private store: a 2x2 grid returning x*x (a number), and one whose
    points return a dict or fail."""
    tmp = tmp_path_factory.mktemp("results")
    env = {"NRUN_HOME": str(tmp / "home")}
    grid, mixed = tmp / "grid", tmp / "mixed"
    grid.mkdir()
    mixed.mkdir()
    run_app("sweep_app.py", LOCAL, "action=value", "x=1,3", "msg=a,b", cwd=grid, env=env, check=True)
    grid_id = json.loads(nrun("status", "--json", env=env).stdout)["sweep"]["id"]
    run_app("sweep_app.py", LOCAL, "action=ok,raise", "x=1,2", f"msg={LONG}", cwd=mixed, env=env)
    mixed_id = json.loads(nrun("status", "--json", env=env).stdout)["sweep"]["id"]
    return {"env": env, "grid": grid_id, "mixed": mixed_id, "tmp": tmp}


def results(sweeps, *args: str, columns: str = "") -> str:
    env = {**sweeps["env"], "COLUMNS": columns}  # "": not a terminal, nothing is cut
    out = nrun("results", *args, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout


def table_rows(text: str) -> List[List[str]]:
    """The table's cells (after the sweep line), split on runs of two spaces."""
    lines = text.splitlines()[1:]
    return [[c.strip() for c in line.split("  ") if c.strip()] for line in lines]


def test_the_table_has_one_column_per_swept_parameter_and_the_value(sweeps):
    text = results(sweeps, sweeps["grid"])
    assert text.splitlines()[0].startswith(f"sweep {sweeps['grid']}") and "swept: x, msg" in text
    header, *rows = table_rows(text)
    assert header[:6] == ["#", "x", "msg", "value", "state", "wall_s"]   # action=value: same everywhere
    assert "action" not in header and "max_rss" in header
    got = {(int(r[1]), r[2]): float(r[3]) for r in rows}
    assert got == {(1, "a"): 1.0, (1, "b"): 1.0, (3, "a"): 9.0, (3, "b"): 9.0}
    assert all(r[4] == "COMPLETED" for r in rows)


def test_csv_and_json_hold_what_the_points_returned(sweeps):
    status = json.loads(nrun("status", sweeps["grid"], "--json", env=sweeps["env"]).stdout)
    returned = {p["idx"]: float(p["value_repr"]) for p in status["points"]}
    rows = list(csv.DictReader(io.StringIO(results(sweeps, sweeps["grid"], "--format", "csv"))))
    assert {int(r["point"]): float(r["value"]) for r in rows} == returned
    assert all(float(r["value"]) == int(r["x"]) ** 2 for r in rows)
    assert all(float(r["wall_s"]) > 0 and int(r["max_rss"]) > 0 for r in rows)
    doc = json.loads(results(sweeps, sweeps["grid"], "--format", "json"))
    assert doc["sweep"] == sweeps["grid"] and doc["params"] == ["x", "msg"] and doc["values"] == ["value"]
    assert {p["point"]: p["value"] for p in doc["points"]} == returned
    for p in doc["points"]:  # numbers as numbers, not text
        assert isinstance(p["value"], float) and isinstance(p["x"], int) and isinstance(p["msg"], str)
    # -o FILE: the format from its suffix, nothing on stdout
    out = Path(sweeps["tmp"]) / "grid.json"
    assert results(sweeps, sweeps["grid"], "-o", str(out)) == ""
    assert json.loads(out.read_text()) == doc


def test_sorting_by_value_and_by_any_column(sweeps):
    def column(name: str, *args: str) -> list:
        doc = json.loads(results(sweeps, sweeps["grid"], "--format", "json", *args))
        return [p[name] for p in doc["points"]]

    assert column("value", "--sort", "value") == [1.0, 1.0, 9.0, 9.0]
    assert column("value", "--sort", "-value") == [9.0, 9.0, 1.0, 1.0]
    assert column("msg", "--sort", "msg") == ["a", "a", "b", "b"]
    assert column("point", "--sort", "-point") == [3, 2, 1, 0]
    header, *rows = table_rows(results(sweeps, sweeps["grid"], "--sort", "-value"))
    assert [float(r[3]) for r in rows] == [9.0, 9.0, 1.0, 1.0]
    bad = nrun("results", sweeps["grid"], "--sort", "loss", env=sweeps["env"])
    assert bad.returncode == 2 and "no column 'loss'" in bad.stderr and "value" in bad.stderr


def test_a_dict_return_gets_a_column_per_key_and_failed_points_their_error(sweeps):
    doc = json.loads(results(sweeps, sweeps["mixed"], "--format", "json", "--sort", "-square"))
    assert doc["params"] == ["action", "x"]
    assert doc["values"] == ["value.x", "msg", "square"]   # 'x' is also a parameter: its key is prefixed
    ok, ok2, failed, failed2 = doc["points"]
    assert (ok["square"], ok["value.x"], ok["msg"]) == (4, 2, LONG) and ok2["square"] == 1
    for p in (failed, failed2):  # no value: last whichever the direction, and why
        assert p["state"] == "FAILED" and p["square"] is None and p["error"].startswith("ValueError: boom at x=")
    asc = json.loads(results(sweeps, sweeps["mixed"], "--format", "json", "--sort", "square"))["points"]
    assert [p["square"] for p in asc] == [1, 4, None, None]


def test_the_table_fits_the_terminal_width(sweeps):
    wide = results(sweeps, sweeps["mixed"])
    assert LONG in wide and max(len(line) for line in wide.splitlines()) > 100
    narrow = results(sweeps, sweeps["mixed"], columns="100")
    assert all(len(line) <= 100 for line in narrow.splitlines()), narrow
    assert "…" in narrow and "FAILED" in narrow and "COMPLETED" in narrow  # text cut, state kept


def test_plot_writes_a_png_drawn_from_the_sweep(sweeps, monkeypatch):
    png = Path(sweeps["tmp"]) / "grid.png"
    out = nrun("plot", sweeps["grid"], "-o", str(png), env=sweeps["env"], timeout=120)
    assert out.returncode == 0, out.stderr
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000

    # The same figure, in process: its panels are this sweep's parameters and values.
    monkeypatch.setenv("NRUN_HOME", sweeps["env"]["NRUN_HOME"])
    from nrun_core import plot
    from nrun_core import results as res_mod
    from nrun_core.store import Store

    store = Store(create=False)
    sw = store.sweep(sweeps["grid"])
    res = res_mod.load(store, sw)
    fig = plot.figure(store, sw, res)
    x_ax, msg_ax, timeline = fig.axes
    assert (x_ax.get_xlabel(), x_ax.get_ylabel()) == ("x", "value")
    assert sorted(map(tuple, x_ax.collections[0].get_offsets().tolist())) == [(1, 1), (1, 1), (3, 9), (3, 9)]
    assert msg_ax.get_xlabel() == "msg" and [t.get_text() for t in msg_ax.get_xticklabels()] == ["a", "b"]
    assert timeline.get_xlabel() == "seconds since the sweep started"
    (running,) = [c for c in timeline.collections if c.get_label() == "_running local"]
    rows = sorted(round(sum(y for _, y in bar.vertices[:4]) / 4) for bar in running.get_paths())
    assert rows == [0, 1, 2, 3]  # one solid bar per point, on its row
    assert [t.get_text() for t in timeline.get_legend().get_texts()][0] == "ran on local"
    assert sweeps["grid"] in fig._suptitle.get_text()
    plot.save(fig, str(Path(sweeps["tmp"]) / "again.png"))


def test_plot_without_matplotlib_names_the_extra_to_install(sweeps, tmp_path):
    fake = tmp_path / "no_matplotlib" / "matplotlib"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named matplotlib')\n")
    env = {**sweeps["env"], "PYTHONPATH": f"{fake.parent}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    out = nrun("plot", sweeps["grid"], "-o", str(tmp_path / "x.png"), env=env)
    assert out.returncode == 2 and "pip install 'hydra-nrun[plot]'" in out.stderr
    assert not (tmp_path / "x.png").exists()


def test_values_come_back_as_numbers_from_their_repr():
    from nrun_core.results import parse_value

    assert parse_value("0.25") == 0.25 and parse_value("3") == 3 and parse_value("'adam'") == "adam"
    assert parse_value("np.float64(0.5)") == 0.5 and parse_value("tensor(0.125)") == 0.125
    assert parse_value("tensor(2.5, device='cuda:0')") == 2.5
    assert parse_value("{'loss': np.float32(0.5), 'acc': 0.9}") == {"loss": 0.5, "acc": 0.9}
    assert parse_value("array([1, 2])") == [1, 2] and parse_value("Decimal('1')") == "Decimal('1')"
    assert math.isnan(parse_value("nan")) and parse_value("-inf") == -math.inf
    assert parse_value("<Model object at 0x7f>") == "<Model object at 0x7f>"
    assert parse_value("__import__('os').system('false')") == "__import__('os').system('false')"


def _on_a_terminal(argv: List[str], env: Dict[str, str], columns: int) -> str:
    """What `argv` prints on a pseudo-terminal `columns` wide (as a person's terminal shows it)."""
    import fcntl
    import pty
    import struct
    import termios

    pid, fd = pty.fork()
    if pid == 0:  # the child: a terminal of that size, then the command
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
        os.execvpe(argv[0], argv, {**os.environ, **env, "COLUMNS": "", "LINES": ""})
    out = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    os.waitpid(pid, 0)
    return out.decode(errors="replace").replace("\r\n", "\n")


def test_status_fits_a_100_column_terminal(sweeps):
    from conftest import NRUN

    text = _on_a_terminal([*NRUN, "status", sweeps["mixed"]], sweeps["env"], 100)
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert any("FAILED" in ln for ln in lines) and any("COMPLETED" in ln for ln in lines), text
    assert max(len(ln) for ln in lines) <= 100, text          # cut, never wrapped onto more lines
    assert any(ln.endswith("…") for ln in lines)             # the long message says it was cut
