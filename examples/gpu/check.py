"""GPU paths of nrun_local, checked on a real GPU machine (CI has none; run this where one is):

    python examples/gpu/check.py            # from the repository root; torch with CUDA installed

- gpus_per_node=1: every point gets a GPU of its own (CUDA_VISIBLE_DEVICES) and the points take
  turns when there are more points than GPUs; what each used (GPU memory) is in `nrun status`;
- the same from a packaged snapshot (points as `python nrun_point.py`, not forked);
- points forked from a launcher whose app imported torch, two at once on one GPU;
- torchrun with the NCCL backend, one worker per GPU of the point.
Prints one line per check and exits non-zero if any fails.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
NRUN = [sys.executable, "-m", "nrun_core.cli"]


def sweep(work: Path, *args: str) -> dict:
    """Run one sweep of cuda_app.py; return `nrun status --json` of it."""
    env = {**os.environ, "NRUN_HOME": str(work / "home"), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, str(HERE / "cuda_app.py"), "-m", "hydra/launcher=nrun_local",
                           "hydra.launcher.progress=lines", *args, f"hydra.sweep.dir={work}/multirun"],
                          cwd=work, env=env, capture_output=True, text=True, timeout=600)
    print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n", file=sys.stderr)
    out = subprocess.run([*NRUN, "status", "last", "--json"], env=env, capture_output=True, text=True)
    return json.loads(out.stdout)


def values(status: dict) -> list:
    return [(p["state"], ast.literal_eval(p["value_repr"]) if p.get("value_repr") else None, p)
            for p in status["points"]]


def check(name: str, ok: bool, detail: str) -> bool:
    print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}", flush=True)
    return ok


def main() -> int:
    import torch

    if not torch.cuda.is_available():
        print("no CUDA device here: run this on a GPU machine", file=sys.stderr)
        return 2
    gpus = torch.cuda.device_count()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "a"
        work.mkdir()
        st = sweep(work, "hydra.launcher.gpus_per_node=1", f"+x=range(0,{gpus + 2})")
        got = values(st)
        own = all(s == "COMPLETED" and v["device_count"] == 1 and v["trace_positive"] for s, v, _ in got)
        mem = [p.get("usage", {}).get("gpu_mem") for _, _, p in got]
        results.append(check("gpus_per_node=1, forked points", own and len(got) == gpus + 2,
                             f"{[(s, v and v['CUDA_VISIBLE_DEVICES']) for s, v, _ in got]}"))
        results.append(check("GPU memory in nrun status", all(m and m > 0 for m in mem), f"gpu_mem={mem}"))

        work = Path(tmp) / "b"
        work.mkdir()
        st = sweep(work, "hydra.launcher.gpus_per_node=1", "hydra.launcher.mode=command", "+x=1,2")
        got = values(st)
        results.append(check("gpus_per_node=1, command mode", all(s == "COMPLETED" and v["device_count"] == 1
                                                                for s, v, _ in got) and len(got) == 2,
                             f"{[(s, v and v['CUDA_VISIBLE_DEVICES']) for s, v, _ in got]}"))

        work = Path(tmp) / "c"
        work.mkdir()
        st = sweep(work, "hydra.launcher.max_parallel=2", "+x=1,2", "+n=2048")
        got = values(st)
        results.append(check("two forked points at once on one GPU (torch imported by the app)",
                             all(s == "COMPLETED" and v["trace_positive"] for s, v, _ in got) and len(got) == 2,
                             f"{[s for s, _, _ in got]}"))

        work = Path(tmp) / "d"
        work.mkdir()
        st = sweep(work, "nrun/launcher=torchrun", f"hydra.launcher.gpus_per_node={gpus}", "+action=nccl", "+x=1")
        got = values(st)
        ok = bool(got) and all(s == "COMPLETED" and v["sum"] == v["expected"] and v["world_size"] == gpus
                               for s, v, _ in got)
        results.append(check(f"torchrun, NCCL all-reduce over {gpus} GPU(s)", ok,
                             f"{[(s, v and {k: v[k] for k in ('world_size', 'sum')}) for s, v, _ in got]}"))
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
