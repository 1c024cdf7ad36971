"""CPU oversubscription: a 4-point torch CPU sweep on nrun_local with its defaults, against
Hydra's basic launcher (one point after the other, each with every core) and max_parallel=1.

Each point trains a small MLP for a few epochs on random data (plain torch loops). Without a
thread budget, max_parallel (= cores) points each start one torch thread per core and spend
their time switching; the "no budget" row reproduces that by setting OMP_NUM_THREADS to the core
count. Wall times are medians of --repeat runs, interleaved; ratios are against Hydra basic.

    python benchmarks/threads.py [--points 4] [--epochs 4] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PY = sys.executable

APP = '''
import time
import hydra
import torch


@hydra.main(version_base=None, config_path=None, config_name=None)
def main(cfg):
    torch.manual_seed(int(cfg.x))
    model = torch.nn.Sequential(torch.nn.Linear(256, 1024), torch.nn.ReLU(),
                                torch.nn.Linear(1024, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    data = torch.randn(int(cfg.batches), 128, 256)
    target = torch.randint(0, 10, (int(cfg.batches), 128))
    for _ in range(int(cfg.epochs)):
        for xb, yb in zip(data, target):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
    return float(loss)


if __name__ == "__main__":
    main()
'''


def cases(cores: int) -> dict:
    nrun = ["hydra/launcher=nrun_local", "hydra.launcher.progress=quiet"]
    return {
        "hydra basic": [],
        "nrun_local (defaults)": nrun,
        "nrun_local max_parallel=1": nrun + ["hydra.launcher.max_parallel=1"],
        f"nrun_local no budget (OMP={cores})": nrun + [f"+hydra.launcher.env.OMP_NUM_THREADS={cores}"],
    }


def run(app: Path, args: list, points: int, epochs: int, batches: int, workdir: str, tag: str) -> float:
    xs = ",".join(str(i) for i in range(points))
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["NRUN_HOME"] = f"{workdir}/nrun_home"
    cmd = [PY, str(app), "-m", *args, f"+x={xs}", f"+epochs={epochs}", f"+batches={batches}",
           f"hydra.sweep.dir={workdir}/{tag}"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{' '.join(args) or 'basic'} failed:\n{proc.stderr.decode()[-2000:]}")
    return wall


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batches", type=int, default=15)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    cores = len(os.sched_getaffinity(0))
    table = cases(cores)
    walls: dict = {name: [] for name in table}
    with tempfile.TemporaryDirectory() as d:
        app = Path(d) / "torch_sweep.py"
        app.write_text(APP)
        for r in range(a.repeat):
            for i, (name, args) in enumerate(table.items()):
                walls[name].append(run(app, args, a.points, a.epochs, a.batches, d, f"r{r}-{i}"))
    base = statistics.median(walls["hydra basic"])
    print(f"{a.points} points x {a.epochs} epochs of a small torch MLP on {cores} core(s); "
          f"median of {a.repeat} run(s)")
    print(f"{'launcher':<34} {'wall s':>8} {'vs basic':>9}  runs")
    for name, ws in walls.items():
        med = statistics.median(ws)
        print(f"{name:<34} {med:8.2f} {med / base:8.2f}x  {' '.join(f'{w:.1f}' for w in ws)}")


if __name__ == "__main__":
    main()
