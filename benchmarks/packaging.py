"""Packaging benchmark: a generated repository of ~10k files / ~200 MB.

Measures, side by side:
- bare ``git archive HEAD | gzip`` (gzip's default level 6, what most tools do) and at level 1
  (the level nrun uses), as the baselines;
- nrun's git packager, cold (empty NRUN_HOME) and warm (re-launch of the unchanged tree);
- nrun's workdir packager (.gitignore walk + stat cache), cold and warm (the walk record: a stat
  per directory and per file), beside ``git status -uall`` of the same tree (git's own stat cache);
Wall times are best-of-rounds with baselines interleaved, because the machine may be shared; CPU
seconds (process + children) are shown too, since contention does not inflate them.
- NeMo-Run's GitArchivePackager, when a Python with nemo_run is available
  (``--nemo-python PATH``, or /tmp/nemo-venv/bin/python if it exists).

Run: ``python benchmarks/packaging.py`` (about 1-2 minutes; ``--files/--mb`` to resize,
``--keep DIR`` to keep and reuse the generated repository between runs).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GIT_ENV = {
    "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.com",
    "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
}

NEMO_SCRIPT = """
import sys, time, tempfile
from pathlib import Path
t0 = time.perf_counter()
from nemo_run.core.packaging.git import GitArchivePackager
t1 = time.perf_counter()
job_dir = tempfile.mkdtemp(prefix="nemo-bench-")
out = GitArchivePackager().package(Path(sys.argv[1]), job_dir, "bench")
t2 = time.perf_counter()
import os, json
print(json.dumps({"import_s": t1 - t0, "pack_s": t2 - t1, "bytes": os.path.getsize(out)}))
"""


def generate(root: Path, n_files: int, total_bytes: int, seed: int = 42) -> None:
    """Python-like text files (75% of bytes) and incompressible binaries (25%), then one commit."""
    rng = random.Random(seed)
    words = ["def", "return", "self", "import", "torch", "for", "in", "range", "if", "else", "model",
             "loss", "batch", "lr", "config", "None", "True", "print", "=", "(", ")", ":", "\n", "    ",
             "0.1", "data", "train", "eval", "x", "y"]
    corpus = " ".join(rng.choice(words) for _ in range(400_000)).encode()
    n_bin = max(1, n_files // 50)
    n_text = n_files - n_bin
    text_bytes = int(total_bytes * 0.75)
    for i in range(n_text):
        d = root / f"pkg{i % 40}" / f"sub{i % 7}"
        d.mkdir(parents=True, exist_ok=True)
        n = min(max(1, int(rng.expovariate(n_text / text_bytes))), len(corpus) - 1)
        off = rng.randrange(0, len(corpus) - n)
        (d / f"m{i}.py").write_bytes(corpus[off : off + n])
    for i in range(n_bin):
        d = root / "assets" / f"a{i % 5}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"b{i}.bin").write_bytes(rng.randbytes((total_bytes - text_bytes) // n_bin))
    (root / ".gitignore").write_text("__pycache__/\n*.ckpt\n")
    env = {**os.environ, **GIT_ENV}
    subprocess.run(["git", "init", "-q"], cwd=root, check=True, env=env)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True, env=env)
    subprocess.run(["git", "commit", "-qm", "bench"], cwd=root, check=True, env=env)


def cpu_now() -> float:
    """CPU seconds used so far by this process and its waited-for children (contention-proof)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def measure(fn) -> tuple[float, float, object]:
    """(wall s, cpu s, result) of one call."""
    c0, t0 = cpu_now(), time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, cpu_now() - c0, result


def shell_pipe(repo: Path, level: int, out: Path) -> int:
    """Bare `git archive HEAD | gzip -LEVEL > out`; returns the archive size."""
    with open(out, "wb") as f:
        git = subprocess.Popen(["git", "archive", "HEAD"], cwd=repo, stdout=subprocess.PIPE)
        gz = subprocess.run(["gzip", f"-{level}", "-n"], stdin=git.stdout, stdout=f, check=True)
        assert git.stdout is not None
        git.stdout.close()
        git.wait()
    assert gz.returncode == 0 and git.returncode == 0
    return out.stat().st_size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--mb", type=int, default=200)
    ap.add_argument("--keep", type=Path, help="generate the repo here (reused if it exists)")
    ap.add_argument("--nemo-python", type=Path, help="a Python with nemo_run installed")
    ap.add_argument("--warm-runs", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds of baseline and cold pack; best kept")
    args = ap.parse_args()
    os.environ.update(GIT_ENV)

    work = Path(tempfile.mkdtemp(prefix="nrun-bench-"))
    repo = args.keep or work / "repo"
    try:
        if not (repo / ".git").exists():
            t0 = time.perf_counter()
            repo.mkdir(parents=True, exist_ok=True)
            generate(repo, args.files, args.mb * 1_000_000)
            print(f"generated {args.files} files / {args.mb} MB in {time.perf_counter() - t0:.1f}s at {repo}")
        rows = run_all(repo, work, args)
        report(rows)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_all(repo: Path, work: Path, args: argparse.Namespace) -> dict[str, dict]:
    """Baselines and nrun interleaved (the machine is shared), best of ``--rounds`` each."""
    import logging

    from nrun_core.packaging import package

    logging.disable(logging.CRITICAL)
    out = work / "baseline.tar.gz"
    rows: dict[str, dict] = {}

    def keep_best(name: str, wall: float, cpu: float, **extra: object) -> None:
        row = rows.setdefault(name, {"s": wall, "cpu": cpu, **extra})
        row["s"], row["cpu"] = min(row["s"], wall), min(row["cpu"], cpu)
        row.update(extra)

    for i in range(args.rounds):
        wall, cpu, size = measure(lambda: shell_pipe(repo, 6, out))
        keep_best("git archive | gzip (default -6)", wall, cpu, bytes=size)
        wall, cpu, size = measure(lambda: shell_pipe(repo, 1, out))
        keep_best("git archive | gzip -1", wall, cpu, bytes=size)
        os.environ["NRUN_HOME"] = str(work / f"home-{i}")
        wall, cpu, art = measure(lambda: package({"name": "git"}, source_dir=repo))
        keep_best("nrun git, cold", wall, cpu, bytes=art.path.stat().st_size, note=f"{art.manifest['file_count']} files")
    warm = []
    for _ in range(args.warm_runs):
        wall, cpu, again = measure(lambda: package({"name": "git"}, source_dir=repo))
        assert again.digest == art.digest and again.manifest["reused"]
        warm.append(wall)
    rows["nrun git, warm re-launch"] = {"s": statistics.median(warm), "max_s": max(warm)}

    os.environ["NRUN_HOME"] = str(work / "home-workdir")
    wall, cpu, wd = measure(lambda: package({"name": "workdir"}, source_dir=repo))
    rows["nrun workdir, cold"] = {"s": wall, "cpu": cpu, "bytes": wd.path.stat().st_size}
    warm = [measure(lambda: package({"name": "workdir"}, source_dir=repo))[0] for _ in range(args.warm_runs)]
    rows["nrun workdir, warm re-launch"] = {"s": statistics.median(warm), "max_s": max(warm)}
    git_status = [measure(lambda: subprocess.run(["git", "status", "--porcelain", "-uall"], cwd=repo,
                                                 capture_output=True, check=True))[0] for _ in range(args.warm_runs)]
    rows["git status -uall (stat-cache peer)"] = {"s": statistics.median(git_status), "max_s": max(git_status)}

    nemo = args.nemo_python or (Path("/tmp/nemo-venv/bin/python") if Path("/tmp/nemo-venv/bin/python").exists() else None)
    name = "NeMo-Run GitArchivePackager"
    if nemo:
        c0 = cpu_now()
        p = subprocess.run([str(nemo), "-c", NEMO_SCRIPT, str(repo)], capture_output=True, text=True)
        if p.returncode == 0:
            r = json.loads(p.stdout.strip().splitlines()[-1])
            rows[name] = {"s": r["pack_s"], "cpu": cpu_now() - c0, "bytes": r["bytes"],
                          "note": f"+ {r['import_s']:.1f}s import; cpu includes the import"}
        else:
            rows[name] = {"note": "failed: " + (p.stderr.strip().splitlines() or ["?"])[-1]}
    else:
        rows[name] = {"note": "not measured (no --nemo-python, no /tmp/nemo-venv)"}
    return rows


def report(rows: dict[str, dict]) -> None:
    def secs(v: float | None) -> str:
        return "-" if v is None else (f"{v * 1000:.0f} ms" if v < 1 else f"{v:.2f} s")

    print(f"\n{'what':34} {'wall':>9} {'cpu':>9} {'archive':>9}  notes")
    print("-" * 90)
    for name, r in rows.items():
        size = f"{r['bytes'] / 1e6:.1f} MB" if r.get("bytes") else "-"
        note = f"median; max {r['max_s'] * 1000:.0f} ms" if "max_s" in r else r.get("note", "")
        print(f"{name:34} {secs(r.get('s')):>9} {secs(r.get('cpu')):>9} {size:>9}  {note}")
    base6, base1, cold = rows["git archive | gzip (default -6)"], rows["git archive | gzip -1"], rows["nrun git, cold"]
    warm = rows["nrun git, warm re-launch"]["s"]
    print("\nratios (wall; cpu in brackets, which contention on a shared machine does not inflate)")
    print(f"  nrun git cold / git archive|gzip (default -6): {cold['s'] / base6['s']:.2f}x [{cold['cpu'] / base6['cpu']:.2f}x]   target <= 1.3x")
    print(f"  nrun git cold / git archive|gzip -1 (nrun's level): {cold['s'] / base1['s']:.2f}x [{cold['cpu'] / base1['cpu']:.2f}x]")
    print(f"  nrun git warm re-launch: {warm * 1000:.1f} ms median   target < 50 ms")
    wd, peer = rows["nrun workdir, warm re-launch"]["s"], rows["git status -uall (stat-cache peer)"]["s"]
    print(f"  nrun workdir warm re-launch: {wd * 1000:.1f} ms median   target < 50 ms; "
          f"{wd / peer:.2f}x git status -uall ({peer * 1000:.1f} ms)")
    nemo = rows.get("NeMo-Run GitArchivePackager", {})
    if "s" in nemo:
        print(f"  NeMo-Run GitArchivePackager / nrun git cold: {nemo['s'] / cold['s']:.1f}x wall")


if __name__ == "__main__":
    main()
