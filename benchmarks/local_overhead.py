"""nrun_local against its peers on the same Hydra app, side by side, in one run.

For each launcher: wall time and CPU-seconds (the launcher and all its children) for a sweep of
N trivial points, CPU-s per point, and nrun's ratio to each. Then N points of 1 CPU-s each on
this machine's cores (the ideal is N * 1 s / cores), and what nrun's plugin adds to the start of
any Hydra app (discovery + search path), measured with the plugin visible and hidden.

    python benchmarks/local_overhead.py [--points 32] [--burn-points 32] [--repeat 15]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
APP = HERE / "apps" / "bench_app.py"  # not beside benchmarks/packaging.py, which shadows the library
PY = sys.executable

LAUNCHERS = {
    "basic": [],
    "joblib": ["hydra/launcher=joblib"],
    "submitit_local": ["hydra/launcher=submitit_local"],
    "nrun_local": ["hydra/launcher=nrun_local", "hydra.launcher.progress=quiet"],
}


def measure(cmd: list[str], cwd: str, env: dict | None = None) -> tuple[float, float, int]:
    """(wall s, CPU s of the process tree, exit code) via wait4 rusage of the whole tree."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          env={**os.environ, **(env or {})})
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode:
        sys.stderr.write(proc.stderr.decode()[-2000:])
    return wall, cpu, proc.returncode


def sweep(launcher: str, points: int, burn: float, workdir: str) -> tuple[float, float]:
    xs = ",".join(str(i) for i in range(points))
    cmd = [PY, str(APP), "-m", *LAUNCHERS[launcher], f"+x={xs}", f"+burn={burn}",
           f"hydra.sweep.dir={workdir}/{launcher}-{burn}"]
    env = {"NRUN_HOME": f"{workdir}/nrun_home"}
    wall, cpu, code = measure(cmd, workdir, env)
    if code:
        raise SystemExit(f"{launcher} failed (exit {code})")
    return wall, cpu


def available(launcher: str) -> bool:
    mod = {"joblib": "hydra_plugins.hydra_joblib_launcher",
           "submitit_local": "hydra_plugins.hydra_submitit_launcher"}.get(launcher)
    if mod is None:
        return True
    import importlib.util
    return importlib.util.find_spec(mod) is not None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=32)
    ap.add_argument("--burn-points", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=15, help="runs per variant for the start-up cost")
    args = ap.parse_args()
    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as work:
        single = measure([PY, str(APP), "+x=1"], work)
        print(f"# one plain `python app.py +x=1`: wall {single[0]:.2f}s, {single[1]:.2f} CPU-s\n")

        print(f"## {args.points} trivial points")
        print(f"{'launcher':<16}{'wall s':>9}{'CPU s':>9}{'CPU s/pt':>10}{'overhead CPU s/pt':>19}")
        results = {}
        for name in LAUNCHERS:
            if not available(name):
                print(f"{name:<16}  not installed (pip install hydra-nrun[bench])")
                continue
            wall, cpu = sweep(name, args.points, 0.0, work)
            results[name] = (wall, cpu)
            over = (cpu - single[1]) / args.points
            print(f"{name:<16}{wall:>9.2f}{cpu:>9.2f}{cpu / args.points:>10.3f}{over:>19.3f}")
        nw, nc = results["nrun_local"]
        print("\nnrun_local ratio to each (lower is better):")
        for name, (wall, cpu) in results.items():
            if name != "nrun_local":
                print(f"  vs {name:<15} wall {nw / wall:5.2f}x   CPU {nc / cpu:5.2f}x")

        if args.burn_points:
            ideal = args.burn_points * 1.0 / cores
            print(f"\n## {args.burn_points} points of 1 CPU-s each on {cores} cores (ideal {ideal:.1f}s)")
            for name in ("nrun_local", "joblib"):
                if available(name):
                    wall, cpu = sweep(name, args.burn_points, 1.0, work)
                    print(f"{name:<16} wall {wall:6.2f}s = {wall / ideal:4.2f}x ideal   CPU {cpu:6.2f}s")

        print(f"\n## start-up of a plain Hydra app, plugin visible vs hidden ({args.repeat} runs each, "
              "interleaved; median)")
        walls = {"on": [], "off": []}
        cpus = {"on": [], "off": []}
        for _ in range(args.repeat):
            for mode in ("off", "on"):
                w, c, _ = measure([PY, str(HERE / "apps" / "with_plugins.py"), mode, str(APP), "+x=1"], work)
                walls[mode].append(w)
                cpus[mode].append(c)
        for mode in ("off", "on"):
            print(f"  nrun {'visible' if mode == 'on' else 'hidden ':<8} wall {statistics.median(walls[mode]) * 1000:7.1f} ms"
                  f"   CPU {statistics.median(cpus[mode]) * 1000:7.1f} ms")
        added = statistics.median(cpus["on"]) - statistics.median(cpus["off"])
        print(f"  added by nrun: {added * 1000:+.1f} ms CPU (median difference; noise is a few ms)")
        code = ("import time,sys; import hydra.core.config_store, hydra.plugins.launcher, "
                "hydra.plugins.search_path_plugin; t=time.perf_counter(); "
                "import hydra_plugins.nrun_launcher.nrun_launcher as m; from hydra.core.config_search_path "
                "import ConfigSearchPath; m._conf_dir(); print((time.perf_counter()-t)*1000)")
        imports = [float(subprocess.run([PY, "-c", code], capture_output=True, text=True).stdout)
                   for _ in range(args.repeat)]
        print(f"  import of nrun's plugin module alone: median {statistics.median(imports):.2f} ms")
        instructions(work, statistics.median(cpus["off"]))


def instructions(work: str, off_cpu_s: float) -> None:
    """The same comparison in instructions (valgrind): repeatable whatever else the machine does."""
    import re
    import shutil

    if not shutil.which("valgrind"):
        print("  (install valgrind for an instruction count, which load does not blur)")
        return
    counts = {}
    for mode in ("off", "on"):
        out = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={work}/cg.{mode}",
                              PY, str(HERE / "apps" / "with_plugins.py"), mode, str(APP), "+x=1",
                              f"hydra.run.dir={work}/cg"], capture_output=True, text=True).stderr
        counts[mode] = int(re.search(r"Collected : (\d+)", out).group(1))
    added = counts["on"] - counts["off"]
    per_ms = counts["off"] / (off_cpu_s * 1000)
    print(f"  instructions: hidden {counts['off']:,}  visible {counts['on']:,}  added {added:+,} "
          f"({100 * added / counts['off']:+.2f}%, about {added / per_ms:+.1f} ms at this machine's rate)")


if __name__ == "__main__":
    main()
