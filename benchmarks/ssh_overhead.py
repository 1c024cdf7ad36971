"""nrun_ssh's cost per point over SSH against the limit: a bare loop of `ssh host python -c pass`.

Trivial points on the SSH sandbox's hosts (`nrun sandbox ssh up`: two sshd hosts, 2 slots each).
The bare side is what a user would type by hand: the real OpenSSH client, the sandbox key and its
known_hosts checked strictly, one connection per command, hosts alternating; sequentially (the
issue's baseline) and 4 at a time (nrun's parallelism on 2 hosts x 2 slots). A second bare
baseline runs the benchmark's Hydra app itself over ssh (`python bench_app.py +x=I`, copied to
each host once): the least any runner pays to run a Hydra point there. nrun_ssh runs one sweep
of N points of that app (code packed and shipped, each point started under its keeper, its end
watched, its files and value brought back, its remote job dir removed).

Reported per point: wall of the whole sweep / N (nrun's launcher start, composition, packing and
the first connection to each host included), nrun's steady state (time between the first and the
last point's end / (N-1)), and the CPU-seconds spent on this side: the launcher and its children
for nrun, the ssh clients for the bare loops (the hosts' own CPU is not counted on either side).
Target (the issue): nrun <= 1.5x the bare sequential loop.

    eval "$(nrun sandbox ssh env)"; python benchmarks/ssh_overhead.py [--points 16 32] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import yaml

HERE = Path(__file__).resolve().parent
APP = HERE / "apps" / "bench_app.py"
PY = sys.executable
REMOTE = "/tmp/nrun-bench-ssh"  # on each host (the sandbox hosts' /tmp is their own)


def ssh_argv(host: Dict[str, Any], known_hosts: str, command: str) -> List[str]:
    """The real OpenSSH client, as strict as nrun: the host's key must be in known_hosts."""
    argv = ["ssh", "-p", str(host.get("port", 22)), "-o", f"UserKnownHostsFile={known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"]
    if host.get("key_file"):
        argv += ["-i", host["key_file"]]
    user = f"{host['user']}@" if host.get("user") else ""
    return argv + [f"{user}{host['address']}", command]


def cpu_of_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(fn: Callable[[], Any]) -> Tuple[float, float]:
    """(wall s, CPU s of the processes fn started and waited for)."""
    c0, t0 = cpu_of_children(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, cpu_of_children() - c0


def bare(hosts: List[Dict[str, Any]], known: str, points: int, parallel: int, app: bool) -> Tuple[float, float]:
    """N ssh commands, hosts alternating, `parallel` at a time: `python -c pass` or the Hydra app."""
    def one(i: int) -> None:
        h = hosts[i % len(hosts)]
        py = shlex.quote(h.get("python") or "python3")
        cmd = (f"{py} {REMOTE}/bench_app.py +x={i} hydra.run.dir={REMOTE}/out/{i}" if app else f"{py} -c pass")
        subprocess.run(ssh_argv(h, known, cmd), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=True, timeout=300)

    def run() -> None:
        with ThreadPoolExecutor(parallel) as pool:
            list(pool.map(one, range(points)))
    return timed(run)


def nrun_sweep(code: Path, out: Path, home: Path, points: int) -> Tuple[float, float, float]:
    """(wall of the sweep, launcher CPU s, steady-state seconds per point from the store's end times)."""
    xs = ",".join(str(i) for i in range(points))
    cmd = [PY, "bench_app.py", "-m", "hydra/launcher=nrun_ssh", "hydra.launcher.progress=quiet",
           f"+x={xs}", f"hydra.sweep.dir={out}"]
    env = {**os.environ, "NRUN_HOME": str(home)}
    err: List[str] = []

    def run() -> None:
        proc = subprocess.run(cmd, cwd=code, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, timeout=1200)
        if proc.returncode:
            err.append(proc.stderr)
    wall, cpu = timed(run)
    if err:
        raise SystemExit(f"nrun_ssh sweep failed:\n{err[0][-3000:]}")
    status = subprocess.run([PY, "-m", "nrun_core.cli", "status", "last", "--json"], env=env,
                            capture_output=True, text=True, check=True)
    pts = json.loads(status.stdout)["points"]
    assert all(p["state"] == "COMPLETED" for p in pts), [p["state"] for p in pts]
    ends = sorted(p["ended"] for p in pts)
    steady = (ends[-1] - ends[0]) / (len(ends) - 1) if len(ends) > 1 else wall
    return wall, cpu, steady


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, nargs="+", default=[16, 32])
    ap.add_argument("--repeat", type=int, default=3, help="rounds per N, interleaved; medians are shown")
    ap.add_argument("--parallel", type=int, default=4, help="bare commands at once (nrun: the hosts' slots)")
    args = ap.parse_args()
    hosts_file, known = os.environ.get("NRUN_SSH_HOSTS_FILE"), os.environ.get("NRUN_SSH_KNOWN_HOSTS")
    if not hosts_file or not known:
        raise SystemExit('run `eval "$(nrun sandbox ssh env)"` first (NRUN_SSH_HOSTS_FILE, NRUN_SSH_KNOWN_HOSTS)')
    hosts = yaml.safe_load(Path(hosts_file).read_text())["hosts"]
    hosts = [h if isinstance(h, dict) else {"address": h} for h in hosts]
    slots = sum(int(h.get("slots", 1)) for h in hosts)
    for h in hosts:  # the app on each host, for the second baseline
        subprocess.run(ssh_argv(h, known, f"mkdir -p {REMOTE} && cat > {REMOTE}/bench_app.py"),
                       input=APP.read_bytes(), check=True, capture_output=True, timeout=120)
    with tempfile.TemporaryDirectory() as work:
        code = Path(work) / "code"
        code.mkdir()
        shutil.copy(APP, code / "bench_app.py")
        home = Path(work) / "nrun_home"
        nrun_sweep(code, Path(work) / "warm", home, 2)  # helpers and code on the hosts; page cache warm
        print(f"# trivial Hydra points on {len(hosts)} hosts ({', '.join(str(h.get('name', h['address'])) for h in hosts)}; "
              f"{slots} slots); {len(os.sched_getaffinity(0))} local cores; median of {args.repeat} "
              "interleaved rounds\n")
        P = args.parallel
        print(f"{'N':>3}  {'ssh pass':>8}  {f'x{P}':>6}  {'ssh app':>7}  {f'x{P}':>6}  {'nrun_ssh':>8}  "
              f"{'/pass':>6}  {f'/pass{P}':>7}  {'/app':>6}  {f'/app{P}':>6}  {'steady':>6}  "
              f"{'CPU nrun':>8}  {'CPU ssh':>7}   (seconds per point)")
        for n in args.points:
            runs: Dict[str, List[float]] = {k: [] for k in ("b", "bp", "a", "ap", "n", "steady", "cn", "cb")}
            for r in range(args.repeat):  # interleaved, so load changes hit every side alike
                w, c = bare(hosts, known, n, 1, app=False)
                runs["b"].append(w / n)
                runs["cb"].append(c / n)
                runs["bp"].append(bare(hosts, known, n, P, app=False)[0] / n)
                runs["a"].append(bare(hosts, known, n, 1, app=True)[0] / n)
                runs["ap"].append(bare(hosts, known, n, P, app=True)[0] / n)
                wall, cpu, steady = nrun_sweep(code, Path(work) / f"nrun-{n}-{r}", home, n)
                runs["n"].append(wall / n)
                runs["cn"].append(cpu / n)
                runs["steady"].append(steady)
            m = {k: statistics.median(v) for k, v in runs.items()}
            print(f"{n:>3}  {m['b']:>8.3f}  {m['bp']:>6.3f}  {m['a']:>7.3f}  {m['ap']:>6.3f}  {m['n']:>8.3f}  "
                  f"{m['n'] / m['b']:>5.2f}x  {m['n'] / m['bp']:>6.2f}x  {m['n'] / m['a']:>5.2f}x  "
                  f"{m['n'] / m['ap']:>5.2f}x  {m['steady']:>6.3f}  {m['cn']:>8.3f}  {m['cb']:>7.3f}")
        print(f"\nssh pass: `ssh host python -c pass` (OpenSSH, strict known_hosts, hosts alternating), one at a "
              f"time; x{P}: {P} at a time.\nssh app: `ssh host python bench_app.py +x=I` (the same Hydra app nrun "
              "runs), likewise. nrun_ssh: one sweep of N points,\nwall / N (launcher start, composition, packing "
              "and connecting included); steady: time between point ends.\nCPU: this side only, per point "
              "(nrun: launcher + children; ssh: the clients of the sequential pass loop).\n"
              "Target: nrun_ssh <= 1.5x the sequential `ssh pass` loop.")
    for h in hosts:
        subprocess.run(ssh_argv(h, known, f"rm -rf {REMOTE}"), capture_output=True, timeout=120)


if __name__ == "__main__":
    main()
