"""nrun_docker's cost per point against the limit: a bare `docker run --rm` of the same command.

Every side runs the benchmark's Hydra app (`python3 bench_app.py +x=I hydra.run.dir=...`) in the
same image, with the code and the output dir bind-mounted. The bare side is what a user would
type by hand (no packaging, no store, no result file, no cleanup beyond --rm); a second baseline
does only the engine calls any runner must make (docker-py create/start/wait/remove, no CLI).
nrun_docker does all of that and more. For each parallelism P: N bare runs (P at a time, the docker CLI) against one nrun
sweep of N points with max_parallel=P. Reported per point: wall of the whole sweep / N (nrun
pays its launcher start, composition and packaging once, inside that figure), and nrun's
steady-state per point (time between the first and the last point's end / (N-1)), which leaves
the one-time start out. Target: within 1.3x of the bare run.

    eval "$(nrun sandbox docker env)"; python benchmarks/docker_overhead.py [--points 10] [--repeat 3] [--parallel 1 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
APP = HERE / "apps" / "bench_app.py"
PY = sys.executable


def bare_run(image: str, code: Path, out: Path, x: int) -> float:
    job = out / str(x)
    job.mkdir(parents=True, exist_ok=True)
    cmd = ["docker", "run", "--rm", "--init", "--label", "nrun.sandbox=1",
           "--mount", f"type=bind,source={code},target=/code,readonly",
           "--mount", f"type=bind,source={job},target={job}", "-w", "/code",
           image, "python3", "/code/bench_app.py", f"+x={x}", f"hydra.run.dir={job}"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def sdk_run(api, image: str, code: Path, out: Path, x: int) -> None:
    """The least the engine must do: create, start, wait, remove (docker-py, low level)."""
    import docker.types as t

    job = out / str(x)
    job.mkdir(parents=True, exist_ok=True)
    hc = api.create_host_config(init=True, mounts=[t.Mount("/code", str(code), type="bind", read_only=True),
                                                   t.Mount(str(job), str(job), type="bind")])
    cid = api.create_container(image, ["python3", "/code/bench_app.py", f"+x={x}", f"hydra.run.dir={job}"],
                               working_dir="/code", labels={"nrun.sandbox": "1"}, host_config=hc)["Id"]
    try:
        api.start(cid)
        api.wait(cid)
    finally:
        api.remove_container(cid, force=True)


def bare(image: str, code: Path, out: Path, points: int, parallel: int, sdk: bool = False) -> float:
    """Wall of N bare runs (the docker CLI, or docker-py), P at a time."""
    api = None
    if sdk:
        import docker

        api = docker.APIClient(base_url=os.environ["DOCKER_HOST"], version="auto")
    t0 = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        if api is not None:
            list(pool.map(lambda x: sdk_run(api, image, code, out, x), range(points)))
        else:
            list(pool.map(lambda x: bare_run(image, code, out, x), range(points)))
    return time.perf_counter() - t0


def nrun_sweep(image: str, code: Path, out: Path, home: Path, points: int, parallel: int) -> tuple[float, float]:
    """(wall of the sweep, steady-state seconds per point from the store's end times)."""
    xs = ",".join(str(i) for i in range(points))
    cmd = [PY, "bench_app.py", "-m", "hydra/launcher=nrun_docker", f"hydra.launcher.image={image}",
           '++hydra.launcher.labels={nrun.sandbox:"1"}', "hydra.launcher.progress=quiet",
           f"hydra.launcher.max_parallel={parallel}", f"+x={xs}", f"hydra.sweep.dir={out}"]
    env = {**os.environ, "NRUN_HOME": str(home)}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=code, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"nrun_docker sweep failed:\n{proc.stderr[-3000:]}")
    status = subprocess.run([PY, "-m", "nrun_core.cli", "status", "last", "--json"], env=env,
                            capture_output=True, text=True, check=True)
    points_ = json.loads(status.stdout)["points"]
    assert all(p["state"] == "COMPLETED" for p in points_), points_
    ends = sorted(p["ended"] for p in points_)
    steady = (ends[-1] - ends[0]) / (len(ends) - 1) if len(ends) > 1 else wall
    return wall, steady


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3, help="rounds per P, interleaved; medians are shown")
    ap.add_argument("--parallel", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--image", default=os.environ.get("NRUN_SANDBOX_IMAGE"))
    args = ap.parse_args()
    if not args.image or not os.environ.get("DOCKER_HOST"):
        raise SystemExit("run `eval \"$(nrun sandbox docker env)\"` first (DOCKER_HOST, NRUN_SANDBOX_IMAGE), "
                         "or pass --image and set DOCKER_HOST")
    with tempfile.TemporaryDirectory() as work:
        code = Path(work) / "code"
        code.mkdir()
        shutil.copy(APP, code / "bench_app.py")
        home = Path(work) / "nrun_home"
        bare(args.image, code, Path(work) / "warm", 1, 1)  # image layers and page cache warm
        print(f"# {args.points} trivial Hydra points in {args.image}; engine {os.environ['DOCKER_HOST']}; "
              f"{len(os.sched_getaffinity(0))} cores; median of {args.repeat} interleaved rounds\n")
        print(f"{'P':>2}  {'docker run':>10}  {'SDK':>6}  {'nrun_docker':>11}  {'/run':>6}  {'/SDK':>6}  "
              f"{'steady':>7}  {'/run':>6}  {'/SDK':>6}   (seconds per point)")
        for p in args.parallel:
            runs: dict[str, list[float]] = {"b": [], "s": [], "n": [], "steady": []}
            for r in range(args.repeat):  # interleaved, so load changes hit every side alike
                tag = f"{p}-{r}"
                runs["b"].append(bare(args.image, code, Path(work) / f"bare-{tag}", args.points, p) / args.points)
                runs["s"].append(bare(args.image, code, Path(work) / f"sdk-{tag}", args.points, p, sdk=True)
                                 / args.points)
                wall, steady = nrun_sweep(args.image, code, Path(work) / f"nrun-{tag}", home, args.points, p)
                runs["n"].append(wall / args.points)
                runs["steady"].append(steady)
            b, s, n, steady = (statistics.median(runs[k]) for k in ("b", "s", "n", "steady"))
            print(f"{p:>2}  {b:>10.3f}  {s:>6.3f}  {n:>11.3f}  {n / b:>5.2f}x  {n / s:>5.2f}x  "
                  f"{steady:>7.3f}  {steady / b:>5.2f}x  {steady / s:>5.2f}x")
        print("\ndocker run: `docker run --rm --init` via the CLI; SDK: docker-py create/start/wait/remove "
              "(the least the\nengine must do); both P at a time. nrun_docker: one sweep with max_parallel=P, "
              "wall / N (its one-time\nstart, composition and packaging included); steady: nrun's time "
              "between point ends. Target: <= 1.3x.")


if __name__ == "__main__":
    main()
