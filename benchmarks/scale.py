"""Large sweeps: 1,000 and 10,000 trivial points, what the launcher costs before and while they run.

For each backend and size, `python bench_app.py -m +x=range(0,N)` (the app returns x*x):

- local dry: nrun_local with hydra.launcher.dry_run=true (compose, validate, specs, render).
- local real: nrun_local runs every point (fork mode, max_parallel = cores).
- slurm: nrun_slurm on the cluster SLURM_CONF names (`eval "$(nrun sandbox slurm env)"`), with
  hydra.launcher.wait=false, so the launcher's CPU and RSS are those up to its last submission;
  then (sizes up to --slurm-wait-max) the points are followed in the store to their end and
  checked (every point COMPLETED: nothing lost). Everything the run submitted is scancelled at
  the end (the cluster is shared). A size the cluster refuses is reported, not hidden.
- peer: Hydra's basic launcher on the same app and points (sizes up to --peer-max: it takes
  ~0.1 s a point, so 10,000 points would take most of an hour on a shared 2-core machine).

Columns: wall s; launcher CPU s (the launcher process alone, measured at its exit by a
sitecustomize hook) and per point; tree CPU s (launcher plus every point it forked); peak RSS of
the launcher; time to the first and the last submission (from the store's events: RUNNING for
local, QUEUED for Slurm), all from process start. Ratios against basic are printed under the
table; read them, not absolute times, on a shared machine.

    python benchmarks/scale.py [--points 1000,10000] [--backends local,slurm] [--runs dry,real]
                               [--peer-max 1000] [--slurm-wait-max 1000] [--code DIR]

`--code DIR` runs another checkout's nrun (e.g. `git archive HEAD | tar -x -C DIR` for a
before/after table): DIR is put first on the launcher's PYTHONPATH.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

HERE = Path(__file__).resolve().parent
APP = HERE / "apps" / "bench_app.py"  # not beside benchmarks/packaging.py, which shadows the library
sys.path[:] = [p for p in sys.path if p and Path(p).resolve() != HERE]
PY = sys.executable
NAN = float("nan")

# Records the launcher's own CPU and peak RSS at its exit (forked points leave with os._exit,
# and a point's own interpreter is another pid: only the launcher's line is read).
HOOK = """\
import atexit, os, resource, sys
_PID = os.getpid()
_OUT = os.environ.get("SCALE_BENCH_USAGE")
def _usage():
    if _OUT and os.getpid() == _PID:
        r = resource.getrusage(resource.RUSAGE_SELF)
        with open(_OUT, "a") as f:
            f.write(f"{_PID} {r.ru_utime + r.ru_stime:.4f} {r.ru_maxrss}\\n")
if _OUT:
    atexit.register(_usage)
"""


def run(name: str, points: int, args: List[str], work: Path, code: Optional[str],
        wait_slurm: bool = False, wait_max_s: float = 900) -> Dict[str, float]:
    out = work / f"{name}-{points}"
    shutil.rmtree(out, ignore_errors=True)
    (out / "hook").mkdir(parents=True)
    (out / "hook" / "sitecustomize.py").write_text(HOOK)
    usage = out / "usage.log"
    pythonpath = [str(out / "hook"), *([code] if code else []), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "NRUN_HOME": str(out / "nrun_home"), "SCALE_BENCH_USAGE": str(usage),
           "PYTHONPATH": os.pathsep.join(p for p in pythonpath if p)}
    cmd = [PY, str(APP), "-m", *args, f"+x=range(0,{points})", f"hydra.sweep.dir={out}/multirun"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=out, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    samples: List[tuple] = []
    sampler = threading.Thread(target=_sample_cpu, args=(proc, samples), daemon=True)
    sampler.start()
    _, stderr = proc.communicate()
    wall = time.time() - t0
    sampler.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        _cancel_slurm(out)
        tail = [ln for ln in stderr.strip().splitlines() if ln.strip()][-3:]
        return {"error": " | ".join(tail)[-400:]}  # type: ignore[dict-item]
    tree = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    cpu, rss = _launcher_usage(usage, proc.pid)
    row = {"wall": wall, "cpu": cpu, "tree_cpu": tree, "rss_mb": rss / 1024, "points": points}
    row.update(_submissions(out, t0, points))
    row["cpu_to_last"] = _cpu_at(samples, t0 + row["last_submit"]) if row["last_submit"] == row["last_submit"] else NAN
    if wait_slurm:
        row.update(_follow(out, t0, points, wait_max_s))
    if "slurm" in name:
        _cancel_slurm(out)
    return row


def _sample_cpu(proc: subprocess.Popen, samples: List[tuple]) -> None:
    """(time, CPU s) of the launcher process every 0.1 s, from /proc, until it exits."""
    tick = os.sysconf("SC_CLK_TCK")
    while proc.poll() is None:
        try:
            fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            samples.append((time.time(), (int(fields[11]) + int(fields[12])) / tick))
        except (OSError, IndexError, ValueError):
            pass
        time.sleep(0.1)


def _cpu_at(samples: List[tuple], when: float) -> float:
    """The launcher's CPU s at the first sample after `when` (an upper bound, 0.1 s late at most)."""
    return next((cpu for t, cpu in samples if t >= when), samples[-1][1] if samples else NAN)


def _launcher_usage(usage: Path, pid: int) -> tuple:
    """(CPU s, peak RSS KiB) the launcher process recorded at its exit."""
    for ln in usage.read_text().splitlines() if usage.exists() else []:
        fields = ln.split()
        if int(fields[0]) == pid:
            return float(fields[1]), float(fields[2])
    return NAN, NAN


def _db(out: Path) -> Optional[sqlite3.Connection]:
    path = out / "nrun_home" / "nrun.db"
    return sqlite3.connect(path, timeout=30) if path.exists() else None


def _submissions(out: Path, t0: float, points: int) -> Dict[str, float]:
    db = _db(out)
    if db is None:  # a dry run (or the basic launcher) records nothing
        return {"first_submit": NAN, "last_submit": NAN}
    rows = db.execute("SELECT idx, MIN(time) FROM events WHERE state IN ('QUEUED', 'RUNNING') "
                      "GROUP BY idx").fetchall()
    db.close()
    if not rows:
        return {"first_submit": NAN, "last_submit": NAN, "submitted": 0.0}
    times = [t for _, t in rows]
    return {"first_submit": min(times) - t0, "last_submit": max(times) - t0, "submitted": float(len(rows))}


def _follow(out: Path, t0: float, points: int, wait_max_s: float) -> Dict[str, float]:
    """The detached supervisor records every end in the store: wait for all of them."""
    deadline = time.time() + wait_max_s
    counts: Dict[str, int] = {}
    while time.time() < deadline:
        db = _db(out)
        counts = dict(db.execute("SELECT state, COUNT(*) FROM points GROUP BY state").fetchall()) if db else {}
        if db:
            db.close()
        if sum(n for s, n in counts.items() if s not in ("PENDING", "QUEUED", "RUNNING")) >= points:
            break
        time.sleep(2)
    return {"total": time.time() - t0 if counts.get("COMPLETED", 0) == points else NAN,
            "completed": float(counts.get("COMPLETED", 0))}


def _cancel_slurm(out: Path) -> None:
    """scancel every array this run submitted (their ids are in its store), whatever happened."""
    db = _db(out)
    if db is None:
        return
    ids = {r[0].split("_")[0].split(":")[0] for r in db.execute(
        "SELECT DISTINCT backend_id FROM points WHERE backend_id IS NOT NULL")}
    supervisors = [r[0] for r in db.execute("SELECT supervisor_pid FROM sweeps WHERE detached = 1")]
    db.close()
    if ids and shutil.which("scancel"):
        subprocess.run(["scancel", *sorted(ids)], check=False, capture_output=True)
    for pid in supervisors:  # the run's own detached supervisor: SIGTERM cancels and records, then exits
        try:
            os.kill(int(pid), signal.SIGTERM)
        except (OSError, TypeError, ValueError):
            pass
    for pid in supervisors:
        deadline = time.time() + 60
        while time.time() < deadline and _alive(pid):
            time.sleep(0.5)


def _alive(pid: object) -> bool:
    try:
        os.kill(int(pid), 0)  # type: ignore[arg-type]
        return True
    except (OSError, TypeError, ValueError):
        return False


def slurm_ready() -> str:
    """'' when a Slurm cluster answers, else why not."""
    if not shutil.which("sinfo"):
        return "no Slurm client on PATH"
    if not os.environ.get("SLURM_CONF"):
        return 'SLURM_CONF is not set: eval "$(nrun sandbox slurm env)" first'
    proc = subprocess.run(["sinfo", "-h"], capture_output=True, text=True)
    return "" if proc.returncode == 0 else f"sinfo failed: {proc.stderr.strip()[:200]}"


def fmt(v: float, spec: str = ".2f") -> str:
    return "-" if v != v else format(v, spec)


class _Printed(list):
    """The table's rows, each printed as soon as it is measured (a long run shows its progress,
    and what was measured survives a run cut short)."""

    def append(self, row: tuple) -> None:
        super().append(row)
        name, n, r = row
        if "error" in r:
            print(f"{name:<22}{n:>7}  failed (see notes)", flush=True)
            return
        print(f"{name:<22}{n:>7}{fmt(r['wall']):>9}{fmt(r['cpu']):>13}{fmt(1000 * r['cpu'] / n, '.1f'):>7}"
              f"{fmt(r['tree_cpu']):>11}{fmt(r['rss_mb'], '.0f'):>8}{fmt(r.get('first_submit', NAN)):>10}"
              f"{fmt(r.get('last_submit', NAN)):>11}{fmt(r.get('total', NAN)):>9}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", default="1000,10000", help="sizes, comma-separated")
    ap.add_argument("--backends", default="local,slurm")
    ap.add_argument("--runs", default="dry,real", help="local runs: dry, real")
    ap.add_argument("--peer-max", type=int, default=1000, help="largest size run with Hydra's basic launcher")
    ap.add_argument("--slurm-wait-max", type=int, default=1000,
                    help="largest Slurm size followed to its end (larger ones: submitted, then cancelled)")
    ap.add_argument("--slurm-wait-s", type=float, default=1800, help="how long to follow a Slurm sweep")
    ap.add_argument("--code", help="run the nrun of another checkout (put first on PYTHONPATH)")
    args = ap.parse_args()
    sizes = [int(p) for p in args.points.split(",") if p]
    backends = args.backends.split(",")
    runs = args.runs.split(",")
    cores = len(os.sched_getaffinity(0))
    notes: List[str] = []
    print(f"## Large sweeps: trivial points, {cores} cores (shared); "
          f"{'code: ' + args.code if args.code else 'this checkout'}")
    head = (f"{'run':<22}{'points':>7}{'wall s':>9}{'launch CPU s':>13}{'ms/pt':>7}{'tree CPU s':>11}"
            f"{'RSS MB':>8}{'1st sub s':>10}{'last sub s':>11}{'total s':>9}")
    print(head)
    print("-" * len(head), flush=True)
    rows = _Printed()
    with tempfile.TemporaryDirectory(prefix="nrun-scale-", dir=os.environ.get("BENCH_DIR")) as tmp:
        work = Path(tmp)
        for n in sizes:
            if "local" in backends:
                if "dry" in runs:
                    rows.append(("nrun_local dry", n, run("dry", n, ["hydra/launcher=nrun_local",
                                 "hydra.launcher.dry_run=true"], work, args.code)))
                if "real" in runs:
                    rows.append(("nrun_local real", n, run("real", n, ["hydra/launcher=nrun_local",
                                 "hydra.launcher.progress=quiet"], work, args.code)))
                if n <= args.peer_max:
                    rows.append(("basic (Hydra)", n, run("basic", n, [], work, None)))
            if "slurm" in backends:
                why = slurm_ready()
                if why:
                    notes.append(f"slurm {n}: skipped ({why})")
                    continue
                follow = n <= args.slurm_wait_max
                row = run("slurm", n, ["hydra/launcher=nrun_slurm", "hydra.launcher.progress=quiet",
                                       "hydra.launcher.wait=false"], work, args.code,
                          wait_slurm=follow, wait_max_s=args.slurm_wait_s)
                rows.append(("nrun_slurm" + ("" if follow else " submit"), n, row))
                if "error" in row:
                    notes.append(f"slurm {n}: the launcher failed: {row['error']}")
                elif not follow:
                    notes.append(f"slurm {n}: submitted with wait=false, then scancelled (not followed to the end)")
                elif row.get("completed", 0) != n:
                    notes.append(f"slurm {n}: only {int(row.get('completed', 0))} of {n} points COMPLETED "
                                 f"within {args.slurm_wait_s:g} s")
    basic = {n: r for name, n, r in rows if name.startswith("basic") and "error" not in r}
    for name, n, r in rows:
        if n in basic and not name.startswith("basic") and "error" not in r and name.startswith("nrun_local"):
            b = basic[n]
            print(f"ratio {name} / basic, {n} points: wall {r['wall'] / b['wall']:.2f}x, "
                  f"tree CPU {r['tree_cpu'] / b['tree_cpu']:.2f}x, launcher CPU {r['cpu'] / b['cpu']:.2f}x")
    for name, n, r in rows:
        if name.startswith("nrun_slurm") and "error" not in r:
            print(f"target (10,000 on Slurm: launcher CPU to the last submission <= 20 s, RSS <= 500 MB): "
                  f"{n} points: {r['cpu_to_last']:.1f} s to the last submission ({r['cpu']:.1f} s to its exit), "
                  f"{r['rss_mb']:.0f} MB, {int(r.get('submitted', 0))} submitted")
    for note in notes:
        print(f"note: {note}")


if __name__ == "__main__":
    main()
