"""The job store under faults: private files, a busy store, a corrupt one, a full disk, a mistyped
NRUN_HOME, huge logs. Real launchers, real `nrun` processes, real SQLite files."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import time
from pathlib import Path

import pytest

from conftest import APPS, NRUN, PYTHON, ROOT, nrun, run_app, status_json, wait_for

LOCAL = "hydra/launcher=nrun_local"
COMMANDS = [["list"], ["status"], ["status", "last", "--json"], ["logs", "last"], ["show", "last"],
            ["cancel", "last"]]

# Holds the store's write lock (or, with "exclusive", every lock) until killed or `seconds` pass.
LOCKER = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
if sys.argv[3] == "exclusive":
    db.execute("PRAGMA locking_mode=EXCLUSIVE")
db.execute("BEGIN EXCLUSIVE")
db.execute("UPDATE sweeps SET name = name")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
db.execute("COMMIT")
"""


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _lock(db: Path, seconds: float, how: str = "write") -> subprocess.Popen:
    proc = subprocess.Popen([PYTHON, "-c", LOCKER, str(db), str(seconds), how], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def _launch(cwd: Path, *args: str, env=None) -> subprocess.Popen:
    return subprocess.Popen([PYTHON, str(APPS / "sweep_app.py"), "-m", LOCAL, *args,
                             f"hydra.sweep.dir={cwd}/multirun"], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})


def _rows(db: Path, sql: str):
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        return c.execute(sql).fetchall()


def _running(db: Path) -> int:
    try:
        return _rows(db, "SELECT count(*) FROM points WHERE state = 'RUNNING'")[0][0]
    except sqlite3.OperationalError:  # not created yet
        return 0


# -- 1. private files ----------------------------------------------------------------------
OPEN_UNDER_UMASK_0 = """
import os, stat, sys
os.umask(0)
from nrun_core.store import Store
s = Store()
s.create_sweep("s1", name="n", executor="local", state="RUNNING")
home = os.environ["NRUN_HOME"]
for name in sorted(os.listdir(home)) + ["."]:
    print(name, oct(stat.S_IMODE(os.stat(os.path.join(home, name)).st_mode)))
"""


def test_home_is_0700_and_store_files_0600_whatever_the_umask(home):
    out = subprocess.run([PYTHON, "-c", OPEN_UNDER_UMASK_0], capture_output=True, text=True, check=True,
                         cwd=ROOT).stdout
    modes = dict(line.split() for line in out.splitlines())
    assert modes == {".": "0o700", "nrun.db": "0o600", "nrun.db-wal": "0o600", "nrun.db-shm": "0o600"}


def test_an_old_open_home_is_tightened(home, tmp_path):
    run_app("sweep_app.py", LOCAL, "x=1", cwd=tmp_path, check=True)
    assert _mode(home) == 0o700 and _mode(home / "nrun.db") == 0o600
    os.chmod(home, 0o755)                     # as older versions left it
    os.chmod(home / "nrun.db", 0o644)
    (home / "artifacts").mkdir()
    assert nrun("list").returncode == 0
    assert _mode(home) == 0o700 and _mode(home / "nrun.db") == 0o600


def test_a_shared_directory_keeps_its_mode_but_the_store_is_private(tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)
    (shared / "their_notes.txt").write_text("not nrun's")
    monkeypatch.setenv("NRUN_HOME", str(shared))
    run_app("sweep_app.py", LOCAL, "x=1", cwd=tmp_path, check=True)
    assert _mode(shared) == 0o755              # not ours alone: nrun leaves it as it is
    assert _mode(shared / "nrun.db") == 0o600


# -- 2. a busy store -----------------------------------------------------------------------
def test_a_lock_held_while_points_run_delays_the_records_but_loses_nothing(home, tmp_path):
    launcher = _launch(tmp_path, "action=sleep", "seconds=2", "x=1,2", "hydra.launcher.max_parallel=2")
    wait_for(lambda: _running(home / "nrun.db") == 2)
    locker = _lock(home / "nrun.db", 40)      # the points end, and the sweep with them, while it holds
    out, err = launcher.communicate(timeout=120)
    locker.wait(timeout=30)
    assert launcher.returncode == 0, err
    assert "Traceback" not in err and "database is locked" not in err.replace("(database is locked)", "")
    assert err.count("nrun: cannot write the job store") == 1, err                  # one warning ...
    assert "another process holds its lock" in err and "fuser" in err, err
    assert str(home / "nrun.db") in err
    assert "written again" in err                                   # ... and says when it recovered
    got = status_json()
    assert got["sweep"]["state"] == "COMPLETED"
    assert [(p["idx"], p["state"]) for p in got["points"]] == [(0, "COMPLETED"), (1, "COMPLETED")]
    assert all("'square'" in p["value_repr"] for p in got["points"])


def test_a_lock_held_at_launch_is_waited_for(home, tmp_path):
    run_app("sweep_app.py", LOCAL, "x=1", cwd=tmp_path, check=True)           # the store exists
    locker = _lock(home / "nrun.db", 6)
    proc = run_app("sweep_app.py", LOCAL, "x=3,4", cwd=tmp_path)
    locker.wait(timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert [p["state"] for p in status_json()["points"]] == ["COMPLETED", "COMPLETED"]


def test_a_lock_held_too_long_at_launch_submits_nothing(home, tmp_path):
    run_app("sweep_app.py", LOCAL, "x=1", cwd=tmp_path, check=True)
    (tmp_path / "multirun").rename(tmp_path / "first")
    locker = _lock(home / "nrun.db", 40)
    try:
        proc = run_app("sweep_app.py", LOCAL, "x=3,4", cwd=tmp_path, env={"NRUN_STORE_WAIT_S": "2"})
    finally:
        locker.kill()
        locker.wait()
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.count("Nothing was submitted.") == 1
    assert "NRUN_STORE_WAIT_S" in proc.stderr and str(home / "nrun.db") in proc.stderr
    assert not list((tmp_path / "multirun").glob("*/stdout.log"))          # no point ran
    assert len(nrun("list").stdout.splitlines()) == 2                       # header + the first sweep


def test_queued_changes_are_seen_by_their_own_reads_and_flushed_later(home):
    from nrun_core.store import Store

    store = Store()
    store.create_sweep("s1", name="n", executor="local", state="RUNNING")
    store.add_points("s1", [{"idx": 0, "overrides": ["x=1"], "spec": "{}"}])
    locker = _lock(home / "nrun.db", 30)
    try:
        store.update_point("s1", 0, state="COMPLETED", value_repr="1", detail="done")   # no exception
        store.update_sweep("s1", state="COMPLETED")
        assert store.pending == 2 and "another process holds its lock" in store.last_error
        assert store.point("s1", 0)["state"] == "COMPLETED"            # this process sees its changes
        assert store.counts("s1") == {"COMPLETED": 1} and store.sweep("s1")["state"] == "COMPLETED"
        assert _rows(home / "nrun.db", "SELECT state FROM points") == [("PENDING",)]   # others do not, yet
        assert store.flush(0.5) is False
    finally:
        locker.kill()
        locker.wait()
    assert store.flush(10) is True and store.pending == 0
    assert _rows(home / "nrun.db", "SELECT state FROM points") == [("COMPLETED",)]
    assert [e["state"] for e in store.events("s1", 0)] == ["PENDING", "COMPLETED"]
    store.close()


def test_readers_wait_for_an_exclusive_lock(home, tmp_path):
    run_app("sweep_app.py", LOCAL, "x=1", cwd=tmp_path, check=True)
    locker = _lock(home / "nrun.db", 4, "exclusive")   # even WAL readers are shut out
    t = time.monotonic()
    out = nrun("status", timeout=60)
    locker.wait(timeout=30)
    assert out.returncode == 0, out.stderr
    assert "COMPLETED" in out.stdout and time.monotonic() - t > 2


def test_a_reader_gives_up_with_one_clear_message(home, tmp_path):
    run_app("sweep_app.py", LOCAL, "x=1", cwd=tmp_path, check=True)
    locker = _lock(home / "nrun.db", 40, "exclusive")
    try:
        out = nrun("status", env={"NRUN_STORE_WAIT_S": "1"})
    finally:
        locker.kill()
        locker.wait()
    assert out.returncode == 2
    assert out.stderr.startswith("nrun: ") and out.stderr.count("\n") == 1, out.stderr
    assert "fuser" in out.stderr and str(home / "nrun.db") in out.stderr


# -- 3. a corrupt store --------------------------------------------------------------------
def _assert_corrupt_message(text: str, db: Path) -> None:
    assert "Traceback" not in text and "DatabaseError" not in text, text
    assert "corrupt" in text and f"mv {db} {db}.corrupt" in text and "never deletes" in text, text


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_corrupt_store_gives_one_clear_error_everywhere(home, tmp_path, damage):
    run_app("sweep_app.py", LOCAL, "x=1,2,3,4,5,6,7,8", "msg=" + "m" * 3000, cwd=tmp_path, check=True)
    db = home / "nrun.db"
    size = db.stat().st_size
    if damage == "garbage":
        db.write_bytes(os.urandom(size))
    else:
        os.truncate(db, size // 2 // 4096 * 4096 + 100)
    for cmd in COMMANDS:
        out = nrun(*cmd)
        assert out.returncode == 2, (cmd, out)
        assert out.stderr.startswith("nrun: "), (cmd, out.stderr)
        _assert_corrupt_message(out.stderr, db)
    proc = run_app("sweep_app.py", LOCAL, "x=1", cwd=tmp_path)
    assert proc.returncode != 0
    _assert_corrupt_message(proc.stderr, db)
    assert db.stat().st_size in (size, size // 2 // 4096 * 4096 + 100)   # never deleted nor rewritten


# -- 4. a full disk ------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {proc.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(disk: Path, leave: int) -> Path:
    """Fill the disk, then free `leave` bytes again."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    os.truncate(filler, max(0, filler.stat().st_size - leave))
    return filler


def test_a_full_disk_never_leaves_a_completed_sweep_without_points(small_disk, tmp_path, monkeypatch):
    home = small_disk / "home"
    monkeypatch.setenv("NRUN_HOME", str(home))
    run_app("sweep_app.py", LOCAL, "x=1", cwd=tmp_path, check=True)
    outcomes = set()
    for leave in (0, 36, 44, 52, 60, 80):
        filler = _fill(small_disk, leave * 1024)
        proc = run_app("sweep_app.py", LOCAL, "x=range(1,60)", "msg=" + "m" * 1000, cwd=tmp_path,
                       env={"NRUN_STORE_WAIT_S": "1"})
        filler.unlink()
        assert proc.returncode != 0, leave
        assert "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.count("Nothing was submitted.") == 1, proc.stderr
        assert "disk is full" in proc.stderr or "disk I/O error" in proc.stderr, proc.stderr
        assert "move NRUN_HOME" in proc.stderr or "df -h" in proc.stderr, proc.stderr
        out = nrun("list")
        assert out.returncode == 0, out.stderr
        for line in out.stdout.splitlines()[1:]:
            sweep_id = line.split()[0]
            got = status_json(sweep_id)
            outcomes.add("recorded-no-points" if not got["points"] else "ok")
            if not got["points"]:
                assert got["sweep"]["state"] == "FAILED", got
    assert "recorded-no-points" in outcomes      # some size hit the sweep row but not its points


def test_sweep_state_of_no_points_is_failed():
    from nrun_core.store import sweep_state

    assert sweep_state({}) == "FAILED"
    assert sweep_state({"COMPLETED": 2}) == "COMPLETED"


# -- 5. a mistyped NRUN_HOME ---------------------------------------------------------------
def test_commands_never_create_a_store_they_cannot_find(tmp_path):
    typo = tmp_path / "nrun_hmoe"
    for cmd in COMMANDS:
        out = nrun(*cmd, env={"NRUN_HOME": str(typo)})
        assert out.returncode == 2, (cmd, out)
        assert f"no nrun store at {typo / 'nrun.db'}" in out.stderr and "NRUN_HOME" in out.stderr, out.stderr
        assert not typo.exists(), cmd


# -- 6. logs stream ------------------------------------------------------------------------
def _sweep_with_logs(home: Path, tmp_path: Path, n: int) -> list:
    run_app("sweep_app.py", LOCAL, "x=" + ",".join(str(i) for i in range(n)), cwd=tmp_path, check=True)
    return [Path(p["stdout"]) for p in status_json()["points"]]


def _logs(*args: str) -> str:
    """`nrun logs ARGS` stdout, exactly (text mode would turn \\r into \\n)."""
    out = subprocess.run([*NRUN, "logs", *args], capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.decode()


def test_logs_print_the_same_bytes_with_and_without_prefixes(home, tmp_path):
    a, b = _sweep_with_logs(home, tmp_path, 2)
    a.write_bytes("one\ntwo\r\nthré\x85e\rcr\nno newline at the end".encode() + b"\xff\xe2\x82")
    b.write_bytes("b1\n\nb3\n".encode())
    assert _logs("last", "0") == "one\ntwo\r\nthré\x85e\rcr\nno newline at the end\ufffd\ufffd"
    assert _logs("last", "1") == "b1\n\nb3\n"
    assert _logs("last") == ("[#0] one\n[#0] two\r\n[#0] thré\x85[#0] e\r[#0] cr\n"
                                           "[#1] b1\n[#1] \n[#1] b3\n")


def test_logs_split_across_chunks_print_the_same(home, tmp_path):
    a, b = _sweep_with_logs(home, tmp_path, 2)
    line = "ü" * 1000 + "\n"                           # 2001 bytes: chunk edges fall inside characters
    a.write_text(line * 1100)                          # 2.2 MB
    b.write_text("x" * (3 << 20) + "\nend\n")          # a line longer than a chunk
    assert _logs("last", "0") == line * 1100
    out = _logs("last")
    assert out.startswith("[#0] " + line + "[#0] ") and out.count("[#0] ") == 1100
    assert out.endswith("x" * 1000 + "\n[#1] end\n") and out.count("x") == 3 << 20


def test_logs_of_a_huge_file_use_little_memory(home, tmp_path):
    (log,) = _sweep_with_logs(home, tmp_path, 1)
    block = b"".join(b"line %06d of a long log, with some text to make it longer\n" % i for i in range(20000))
    with open(log, "wb") as f:
        while f.tell() < 200 << 20:
            f.write(block)
    measure = ("import resource, subprocess, sys\n"
               "p = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
               "print(p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([PYTHON, "-c", measure, *NRUN, "logs", "last", "0"], capture_output=True, text=True,
                         check=True, timeout=120).stdout.split()
    assert out[0] == "0"
    assert int(out[1]) < 100 * 1024, f"peak RSS {int(out[1]) // 1024} MiB"   # KiB
