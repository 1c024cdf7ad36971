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

    python benchmarks/slurm_sweep.py [--points 100] [--repeat 1] [--modes hydra_submitit,nrun_slurm,...]
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


def run_one(name: str, points: int, work: Path) -> Dict[str, float]:
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
    cmd = [PY, str(HERE / "run.py"), str(APP), "-m", *LAUNCHERS[name], f"+x={xs}",
           f"hydra.sweep.dir={out}/multirun"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy0, t0 = machine_busy(), time.time()
    proc = subprocess.Popen(cmd, cwd=out, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, stderr = proc.communicate()
    t_end, busy1 = time.time(), machine_busy()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed (exit {proc.returncode}):\n{stderr[-3000:]}")
    launcher_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    marks = {}
    for line in logs["marks"].read_text().splitlines():
        m = json.loads(line)
        marks.setdefault(m["mark"], m["t"])
    submits = [ln.split() for ln in logs["sbatch"].read_text().splitlines() if "--test-only" not in ln]
    t_submit = float(submits[0][0])
    rows = [ln.split() for ln in logs["cpu"].read_text().splitlines()]
    job_cpu = sum(float(r[1]) for r in rows if int(r[0]) != proc.pid)  # the launcher is counted above
    _check_values(name, out, points)
    return {
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
    ap.add_argument("--modes", default="hydra_submitit,nrun_slurm,nrun_slurm_command")
    args = ap.parse_args()
    if not os.environ.get("SLURM_CONF") and not shutil.which("sbatch"):
        raise SystemExit("no Slurm here: run `nrun sandbox slurm up` and eval its exports first")
    modes = args.modes.split(",")
    results: Dict[str, List[Dict[str, float]]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory(prefix="nrun-slurm-bench-", dir=os.environ.get("BENCH_DIR")) as work:
        for _ in range(args.repeat):
            for m in modes:
                results[m].append(run_one(m, args.points, Path(work)))
                time.sleep(3)  # let the nodes drain between runs
    med = {m: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for m, rs in results.items()}
    print(f"## {args.points}-point sweep on Slurm ({os.environ.get('SLURM_CONF', 'default cluster')}), "
          f"{args.repeat} run(s) each, medians; {len(os.sched_getaffinity(0))} cores (shared)")
    cols = [("to_launch", "to launch() s"), ("to_submission", "to submission s"),
            ("submit_after_compose", "submit after compose s"), ("submit_after_specs", "submit after specs s"),
            ("to_results", "to all results s"),
            ("launcher_cpu", "launcher CPU s"), ("job_cpu", "job CPU s"), ("cpu_per_point", "CPU s/point"),
            ("machine_cpu_per_point", "machine CPU s/point"), ("job_processes", "job Pythons")]
    print(f"{'':<24}" + "".join(f"{m:>20}" for m in med))
    for k, title in cols:
        print(f"{title:<24}" + "".join(f"{med[m][k]:>20.2f}" for m in med))
    if "hydra_submitit" in med:
        base = med["hydra_submitit"]
        for m, v in med.items():
            if m == "hydra_submitit":
                continue
            print(f"\n{m} vs hydra_submitit: results {v['to_results'] / base['to_results']:.2f}x the time "
                  f"(target <= 0.70), submission {v['to_submission'] / base['to_submission']:.2f}x, "
                  f"CPU per point {v['cpu_per_point'] / base['cpu_per_point']:.2f}x")
        if "nrun_slurm" in med:
            n = med["nrun_slurm"]
            print(f"nrun_slurm submits {n['submit_after_compose']:.2f} s after the last point is composed "
                  f"(target < 1 s); {n['submit_after_specs']:.2f} s of it after every job spec was built")


if __name__ == "__main__":
    main()
