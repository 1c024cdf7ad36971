"""The same Slurm sweep with hydra-submitit-launcher and with nrun_slurm, side by side.

On the real cluster of `nrun sandbox slurm up` (or any cluster SLURM_CONF points at), for each
launcher, N trivial points (`python app.py -m x=0,...,N-1`, the app returns x*x):

- to launch():   process start -> the launcher's launch() (Hydra start, sweep expansion)
- to submission: process start -> sbatch returned the array id (timed by an sbatch shim on PATH)
- submit after composition: nrun only, every point composed -> sbatch returned (target < 1 s)
- to results:    process start -> the launcher returned every value and exited
- CPU-s per point: the launcher process plus every Python process of every Slurm task (each
  records its own CPU at exit through benchmarks/slurm_bench_app/cpuhook), divided by N. The
  machine-wide busy CPU over the run is shown too, but the machine is shared: read it loosely.
- slurm share (nrun): SlurmExecutor.validate (limits, plans, sbatch --test-only) plus
  SlurmExecutor.start (plans, packs or pickles, every sbatch): wall and launcher CPU seconds.
  The store records and payloads written between the two are the sweep's, not counted here.

Modes: hydra_submitit, nrun_slurm (defaults), nrun_slurm_command, nrun_slurm_pptK
(hydra.launcher.points_per_task=K), and sbatch_plain: the floor, one plain `sbatch --array=0-(N-1)`
of `python -c pass` (no Hydra, no results), timed from sbatch's start to the array leaving squeue.
Ratios against sbatch_plain and hydra_submitit are printed under the table.

`--submit-only` (for 10,000 points): nrun_slurm with wait=false; the run ends once every array is
submitted; it reports launcher CPU and peak RSS to the last submission, checks that every point
has a Slurm id, then scancels the sweep's arrays (never leave them on a shared cluster).

    python benchmarks/slurm_sweep.py [--points 100] [--repeat 1] [--modes sbatch_plain,hydra_submitit,nrun_slurm,...]
    python benchmarks/slurm_sweep.py --points 10000 --submit-only
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

HERE = Path(__file__).resolve().parent / "slurm_bench_app"
APP = HERE.parent / "apps" / "bench_app.py"  # the same app as local_overhead.py
# Nothing is imported from beside this script; keep its directory off sys.path so that sibling
# benchmark files cannot shadow installed packages (unpickling results imports hydra).
sys.path[:] = [p for p in sys.path if p and Path(p).resolve() != HERE.parent]
PY = sys.executable
LAUNCHERS: Dict[str, List[str]] = {
    "hydra_submitit": ["hydra/launcher=submitit_slurm"],
    "nrun_slurm": ["hydra/launcher=nrun_slurm", "hydra.launcher.progress=quiet"],
    "nrun_slurm_command": ["hydra/launcher=nrun_slurm", "hydra.launcher.progress=quiet",
                           "hydra.launcher.mode=command"],
}


def machine_busy() -> float:
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def launcher_args(name: str) -> List[str]:
    if name.startswith("nrun_slurm_ppt"):
        return [*LAUNCHERS["nrun_slurm"], f"hydra.launcher.points_per_task={int(name[len('nrun_slurm_ppt'):])}"]
    return LAUNCHERS[name]


def run_plain(points: int, work: Path) -> Dict[str, float]:
    """One plain array of `python -c pass`: what the cluster itself costs for N tasks."""
    out = work / "sbatch_plain"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    script = out / "plain.sbatch"
    script.write_text(f"#!/bin/bash\n#SBATCH --array=0-{points - 1}\n#SBATCH --output=/dev/null\n"
                      f"#SBATCH --job-name=plain\n{PY} -S -c pass\n")
    t0 = time.time()
    job = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True, check=True,
                         cwd=out).stdout.strip().split(";")[0]
    t_submit = time.time()
    while subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True).stdout.strip():
        time.sleep(0.1)
    t_end = time.time()
    nan = float("nan")
    return {"to_launch": nan, "to_submission": t_submit - t0, "submit_after_compose": nan,
            "submit_after_specs": nan, "slurm_share_s": nan, "slurm_share_cpu": nan, "to_results": t_end - t0,
            "launcher_cpu": nan, "job_cpu": nan, "cpu_per_point": nan, "machine_cpu_per_point": nan,
            "job_processes": float(points), "rss_mb": nan}


def run_one(name: str, points: int, work: Path, submit_only: bool = False) -> Dict[str, float]:
    if name == "sbatch_plain":
        return run_plain(points, work)
    out = work / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    logs = {k: out / f"{k}.log" for k in ("cpu", "sbatch", "marks")}
    env = {**os.environ, "NRUN_HOME": str(out / "nrun_home"), "BENCH_CPU_LOG": str(logs["cpu"]),
           "BENCH_SBATCH_LOG": str(logs["sbatch"]), "BENCH_MARKS": str(logs["marks"]),
           "BENCH_REAL_PATH": os.environ.get("PATH", ""),
           "PATH": f"{HERE / 'bin'}:{os.environ.get('PATH', '')}",
           "PYTHONPATH": os.pathsep.join(p for p in (str(HERE / "cpuhook"), os.environ.get("PYTHONPATH")) if p)}
    xs = ",".join(str(i) for i in range(points))
    cmd = [PY, str(HERE / "run.py"), str(APP), "-m", *launcher_args(name), f"+x={xs}",
           f"hydra.sweep.dir={out}/multirun", *(["hydra.launcher.wait=false"] if submit_only else [])]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy0, t0 = machine_busy(), time.time()
    proc = subprocess.Popen(cmd, cwd=out, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, stderr = proc.communicate()
    t_end, busy1 = time.time(), machine_busy()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed (exit {proc.returncode}):\n{stderr[-3000:]}")
    launcher_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    rss_mb = after.ru_maxrss / 1024  # the largest child: the launcher (sbatch and ssh are tiny)
    marks, cpus = {}, {}
    for line in logs["marks"].read_text().splitlines():
        m = json.loads(line)
        marks.setdefault(m["mark"], m["t"])
        cpus.setdefault(m["mark"], m.get("cpu", float("nan")))
    nan = float("nan")
    span = lambda d, a, b: d.get(b, nan) - d.get(a, nan)  # noqa: E731
    share = {"slurm_share_s": span(marks, "slurm_specs", "slurm_validated") + span(marks, "slurm_start", "slurm_submitted"),
             "slurm_share_cpu": span(cpus, "slurm_specs", "slurm_validated") + span(cpus, "slurm_start", "slurm_submitted"),
             "rss_mb": rss_mb}
    if submit_only:
        return _submitted_then_cancel(name, out, points, t0, marks, cpus, share, logs)
    submits = [ln.split() for ln in logs["sbatch"].read_text().splitlines() if "--test-only" not in ln]
    t_submit = float(submits[0][0])
    rows = [ln.split() for ln in logs["cpu"].read_text().splitlines()]
    job_cpu = sum(float(r[1]) for r in rows if int(r[0]) != proc.pid)  # the launcher is counted above
    _check_values(name, out, points)
    return {**share,
        "to_launch": marks["launch"] - t0,
        "to_submission": t_submit - t0,
        "submit_after_compose": t_submit - marks["composed"] if "composed" in marks else float("nan"),
        "submit_after_specs": t_submit - marks["specs"] if "specs" in marks else float("nan"),
        "to_results": t_end - t0,
        "launcher_cpu": launcher_cpu,
        "job_cpu": job_cpu,
        "cpu_per_point": (launcher_cpu + job_cpu) / points,
        "machine_cpu_per_point": (busy1 - busy0) / points,
        "job_processes": len(rows) - 1,
    }


def _submitted_then_cancel(name: str, out: Path, points: int, t0: float, marks: Dict[str, float],
                           cpus: Dict[str, float], share: Dict[str, float], logs: Dict[str, Path]) -> Dict[str, float]:
    """wait=false: the launcher returned after the last sbatch; check every point got a Slurm id,
    then scancel every array of the sweep."""
    env = {**os.environ, "NRUN_HOME": str(out / "nrun_home")}
    res = subprocess.run([PY, "-m", "nrun_core.cli", "status", "last", "--json"], capture_output=True,
                         text=True, env=env, check=True)
    status = json.loads(res.stdout)
    ids = [p["backend_id"] for p in status["points"] if p["backend_id"]]
    arrays = sorted({i.split("_")[0].split(":")[0] for i in ids})
    if status["sweep"].get("supervisor_pid"):  # the detached supervisor would follow 10,000 cancels
        try:
            os.kill(int(status["sweep"]["supervisor_pid"]), 9)
        except ProcessLookupError:
            pass
    subprocess.run(["scancel", *arrays], check=False)
    subprocess.run([PY, "-m", "nrun_core.cli", "cancel", "last"], capture_output=True, env=env, timeout=300)
    if len(ids) != points:
        raise SystemExit(f"{name}: only {len(ids)} of {points} points were submitted")
    submits = [ln.split() for ln in logs["sbatch"].read_text().splitlines() if "--test-only" not in ln]
    nan = float("nan")
    return {**share, "to_launch": marks["launch"] - t0, "to_submission": float(submits[0][0]) - t0,
            "to_last_submission": float(submits[-1][0]) - t0, "arrays": float(len(arrays)),
            "launcher_cpu_to_last": cpus.get("slurm_submitted", nan),
            "submit_after_compose": nan, "submit_after_specs": nan, "to_results": nan,
            "launcher_cpu": nan, "job_cpu": nan, "cpu_per_point": nan, "machine_cpu_per_point": nan,
            "job_processes": nan}


def _check_values(name: str, out: Path, points: int) -> None:
    """Both launchers must really have returned every value (read where each keeps them)."""
    if name.startswith("nrun"):
        res = subprocess.run([PY, "-m", "nrun_core.cli", "status", "last", "--json"], capture_output=True,
                             text=True, env={**os.environ, "NRUN_HOME": str(out / "nrun_home")}, check=True)
        done = [p for p in json.loads(res.stdout)["points"] if p["state"] == "COMPLETED"]
        values = sorted(int(p["value_repr"]) for p in done)
    else:
        import pickle

        values = []
        for f in (out / "multirun" / ".submitit").rglob("*_result.pkl"):
            with open(f, "rb") as fh:
                status, ret = pickle.load(fh)
            values.append(ret.return_value if status == "success" else None)
        values = sorted(v for v in values if v is not None)
    if values != [i * i for i in range(points)]:
        raise SystemExit(f"{name}: expected {points} values x*x, got {len(values)}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=1, help="runs per launcher, interleaved; medians shown")
    ap.add_argument("--modes", default="sbatch_plain,hydra_submitit,nrun_slurm,nrun_slurm_command")
    ap.add_argument("--submit-only", action="store_true",
                    help="nrun_slurm with wait=false: time and CPU to the last sbatch, then scancel")
    args = ap.parse_args()
    if not os.environ.get("SLURM_CONF") and not shutil.which("sbatch"):
        raise SystemExit("no Slurm here: run `nrun sandbox slurm up` and eval its exports first")
    modes = ["nrun_slurm"] if args.submit_only else args.modes.split(",")
    results: Dict[str, List[Dict[str, float]]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory(prefix="nrun-slurm-bench-", dir=os.environ.get("BENCH_DIR")) as work:
        for _ in range(args.repeat):
            for m in modes:
                results[m].append(run_one(m, args.points, Path(work), submit_only=args.submit_only))
                time.sleep(3)  # let the nodes drain between runs
    med = {m: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for m, rs in results.items()}
    print(f"## {args.points}-point sweep on Slurm ({os.environ.get('SLURM_CONF', 'default cluster')}), "
          f"{args.repeat} run(s) each, medians; {len(os.sched_getaffinity(0))} cores (shared)")
    if args.submit_only:
        n = med["nrun_slurm"]
        print(f"submitted (wait=false), then scancelled: {int(n['arrays'])} array(s)")
        for k, title in (("to_launch", "to launch() s"), ("to_submission", "to first submission s"),
                         ("to_last_submission", "to last submission s"),
                         ("launcher_cpu_to_last", "launcher CPU to last sbatch s"),
                         ("slurm_share_s", "slurm share: validate + start s"),
                         ("slurm_share_cpu", "slurm share: CPU s"), ("rss_mb", "launcher peak RSS MB")):
            print(f"{title:<44}{n[k]:>12.2f}")
        print(f"targets: launcher CPU to the last submission <= 20 s: {n['launcher_cpu_to_last']:.1f} s; "
              f"RSS <= 500 MB: {n['rss_mb']:.0f} MB")
        return
    cols = [("to_launch", "to launch() s"), ("to_submission", "to submission s"),
            ("submit_after_compose", "submit after compose s"), ("submit_after_specs", "submit after specs s"),
            ("slurm_share_s", "slurm share s"), ("slurm_share_cpu", "slurm share CPU s"),
            ("to_results", "to all results s"),
            ("launcher_cpu", "launcher CPU s"), ("job_cpu", "job CPU s"), ("cpu_per_point", "CPU s/point"),
            ("machine_cpu_per_point", "machine CPU s/point"), ("job_processes", "job Pythons"),
            ("rss_mb", "launcher RSS MB")]
    print(f"{'':<24}" + "".join(f"{m:>20}" for m in med))
    for k, title in cols:
        print(f"{title:<24}" + "".join(f"{med[m][k]:>20.2f}" for m in med))
    print()
    for m, v in med.items():
        if not m.startswith("nrun"):
            continue
        parts = []
        if "sbatch_plain" in med:
            parts.append(f"{v['to_results'] / med['sbatch_plain']['to_results']:.2f}x plain sbatch (target <= 2.5)")
        if "hydra_submitit" in med:
            base = med["hydra_submitit"]
            parts.append(f"{v['to_results'] / base['to_results']:.2f}x hydra_submitit (target <= 0.3); "
                         f"CPU per point {v['cpu_per_point'] / base['cpu_per_point']:.2f}x")
        if parts:
            print(f"{m}: all results in " + ", ".join(parts))
    if "nrun_slurm" in med:
        n = med["nrun_slurm"]
        print(f"nrun_slurm submits {n['submit_after_compose']:.2f} s after the last point is composed "
              f"(target < 1 s); Slurm's share (validate + start) {n['slurm_share_s']:.2f} s, "
              f"{n['slurm_share_cpu']:.2f} CPU-s")


if __name__ == "__main__":
    main()
