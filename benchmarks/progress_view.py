"""What the live view and the live output cost the launcher's loop, at 100 and at 10,000 points.

The progress views must scale with changes, not points: one state change costs the same in a
10,000-point sweep as in a 100-point one (the table redraws from counts and a bounded set of
recent rows, at most 4 times a second). The live output (hydra.launcher.stream) is measured
against `cat` reading the same log files: what the prefixing, line splitting and terminal
writes add.

    python benchmarks/progress_view.py [--changes 5000] [--log-mb 20]
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nrun_core.executors.base import Control  # noqa: E402
from nrun_core.livelogs import LogTail  # noqa: E402
from nrun_core.progress import LinesView, Row, TableView  # noqa: E402
from nrun_core.spec import JobSpec  # noqa: E402


def per_change_us(kind: str, points: int, changes: int) -> float:
    from rich.console import Console

    rows = {i: Row(i, f"lr={i} seed={i % 5}", values={"lr": str(i), "seed": str(i % 5)}) for i in range(points)}
    saved, sys.stderr = sys.stderr, io.StringIO()
    try:
        if kind == "table":
            view = TableView("bench", rows, keys=["lr", "seed"],
                             console=Console(file=io.StringIO(), width=100, force_terminal=True))
            view.REDRAW_S = 0.0  # redraw at every change: the worst case, not the timer's
        else:
            view = LinesView("bench", rows)
        start = time.perf_counter()
        for k in range(changes):
            r = rows[(k * 7919) % points]
            r.state, r.started = ("RUNNING", time.time()) if r.state != "RUNNING" else ("COMPLETED", r.started)
            view.changed(r)
        took = time.perf_counter() - start
        view.close()
    finally:
        sys.stderr = saved
    return took / changes * 1e6


def stream_mb_s(log_mb: int, tmp: Path) -> tuple:
    """LogTail over 4 points' logs of log_mb MB each (80-byte lines), against `cat` of them."""
    specs = []
    line = b"epoch 12: loss=0.123456 acc=0.98765 lr=0.001 step=123456 " + b"x" * 21 + b"\n"
    for i in range(4):
        spec = JobSpec(sweep_id="b", index=i, overrides=[f"x={i}"], job_dir=str(tmp / str(i)), command=["x"])
        Path(spec.job_dir).mkdir()
        with open(spec.stdout, "wb") as f:
            f.write(line * (log_mb * (1 << 20) // len(line)))
        specs.append(spec)
    total = sum(os.path.getsize(s.stdout) for s in specs) / (1 << 20)
    with open(os.devnull, "w") as null:
        start = time.perf_counter()
        tail = LogTail(Control({"id": "b"}), "b", lambda batch: null.writelines(f"{p} {t}\n" for p, t, _, _ in batch),
                       label=lambda idx: f"x={idx}")
        for s in specs:
            tail.watch(s)
        for s in specs:
            tail.drain(s)
        ours = time.perf_counter() - start
        start = time.perf_counter()
        subprocess.run(["cat", *[s.stdout for s in specs]], stdout=null, check=True)
        cat = time.perf_counter() - start
    return total / ours, total / cat


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--changes", type=int, default=5000)
    ap.add_argument("--log-mb", type=int, default=20)
    a = ap.parse_args()
    print(f"{'view':<8}{'points':>8}{'us/change':>12}{'vs 100 points':>16}")
    for kind in ("lines", "table"):
        base = per_change_us(kind, 100, a.changes)
        for points in (100, 10_000):
            us = base if points == 100 else per_change_us(kind, points, a.changes)
            print(f"{kind:<8}{points:>8}{us:>12.1f}{us / base:>15.2f}x")
    with tempfile.TemporaryDirectory() as tmp:
        ours, cat = stream_mb_s(a.log_mb, Path(tmp))
    print(f"\n{'live output':<24}{'MB/s':>8}{'vs cat':>10}")
    print(f"{'cat (the logs as is)':<24}{cat:>8.0f}{1.0:>9.2f}x")
    print(f"{'LogTail (prefixed)':<24}{ours:>8.0f}{ours / cat:>9.2f}x")


if __name__ == "__main__":
    main()
