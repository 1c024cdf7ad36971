"""nrun_skypilot's cost per point against the limit: a bare `sky exec` of the same command on the
same cluster, followed to its end with sky.tail_logs (what a user's script would do).

On the SkyPilot sandbox (`nrun sandbox skypilot up`: the Slurm sandbox as SkyPilot's infra). One
cluster serves both sides (launched once, before timing, taken down at the end). Both sides run
the benchmark's Hydra app, one point at a time (max_parallel=1): bare is `sky exec` of
`python bench_app.py +x=I` with the app as the workdir; nrun is one sweep of N points of the same
app (packing, the staging dir, one sky.exec per point, logs streamed, the job dir and value
brought back). Reported per point: bare's wall / N, nrun's wall of the whole sweep / N (its
launcher start, composition and `import sky` included), and their ratio. Target (the issue):
nrun <= 1.2x bare. Mind the load: every SkyPilot call here goes through ssh + srun on 2 cores.

    eval "$(nrun sandbox skypilot env)"; python benchmarks/skypilot_overhead.py [--points 3] [--repeat 1] [--cluster NAME]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# benchmarks/packaging.py would shadow the `packaging` library that sky imports.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
APP = HERE / "apps" / "bench_app.py"
CLUSTER = f"nrun-bench-{os.getpid()}"


def bare(sky, code: Path, n: int, python: str) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        task = sky.Task(run=f"{python} bench_app.py +x={i}", workdir=str(code))
        job_id, _ = sky.get(sky.exec(task, cluster_name=CLUSTER))
        sky.tail_logs(CLUSTER, job_id, follow=True, output_stream=io.StringIO())
    return time.perf_counter() - t0


def nrun_sweep(code: Path, out: Path, home: Path, n: int) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "bench_app.py", "-m", "hydra/launcher=nrun_skypilot",
                           f"hydra.launcher.cluster_name={CLUSTER}", "hydra.launcher.max_parallel=1",
                           "hydra.launcher.progress=quiet", f"+x=range(0,{n})", f"hydra.sweep.dir={out}"],
                          cwd=code, capture_output=True, text=True, env={**os.environ, "NRUN_HOME": str(home)})
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"nrun sweep failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--points", type=int, nargs="+", default=[3])
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--cluster", help="an existing cluster to use (kept); default: one launched and downed here")
    args = ap.parse_args()
    global CLUSTER
    CLUSTER = args.cluster or CLUSTER
    if not os.environ.get("SKYPILOT_API_SERVER_ENDPOINT"):
        raise SystemExit('run eval "$(nrun sandbox skypilot env)" first (after `nrun sandbox skypilot up`)')
    from nrun_core.executors.skypilot.executor import _sky
    from nrun_core.executors.skypilot.task import python as point_python

    sky = _sky()
    python = point_python(argparse.Namespace(python=None))
    with tempfile.TemporaryDirectory() as work:
        code = Path(work) / "code"
        code.mkdir()
        shutil.copy(APP, code / "bench_app.py")
        home = Path(work) / "nrun_home"
        try:
            nrun_sweep(code, Path(work) / "warm", home, 1)  # launches the cluster: not timed
            print(f"# trivial Hydra points, one at a time, on SkyPilot cluster {CLUSTER} "
                  f"({os.environ.get('NRUN_SKYPILOT_INFRA', '?')}); load {os.getloadavg()[0]:.1f} on "
                  f"{len(os.sched_getaffinity(0))} cores; median of {args.repeat} interleaved rounds\n")
            print(f"{'N':>3}  {'bare sky exec':>13}  {'nrun_skypilot':>13}  {'ratio':>6}   (seconds per point)")
            for n in args.points:
                b, r = [], []
                for k in range(args.repeat):
                    b.append(bare(sky, code, n, python) / n)
                    r.append(nrun_sweep(code, Path(work) / f"nrun-{n}-{k}", home, n) / n)
                mb, mr = statistics.median(b), statistics.median(r)
                print(f"{n:>3}  {mb:>13.1f}  {mr:>13.1f}  {mr / mb:>5.2f}x")
        finally:
            if not args.cluster:
                sky.get(sky.down(CLUSTER))


if __name__ == "__main__":
    main()
