"""One node of a Ray-on-Slurm point (`nrun/launcher=ray`): the Slurm task of every node calls
``run``. The first node starts the Ray head, waits until every node has joined, then runs the
point's command (the point runtime, unchanged) as the Ray driver with RAY_ADDRESS set; the other
nodes start a Ray worker joining the head and keep it until the head says stop.

Stopping, whatever ends the point: the head writes a stop file in the point's nrun dir (a shared
filesystem, as Slurm points need anyway) once the driver ends; every node then sends SIGTERM to
its ``ray start --block`` (which stops its Ray processes), SIGKILLs its process group after a
grace, and ends whatever else it started (the task is a subreaper: orphaned Ray daemons stay its
descendants). On scancel the task's SIGTERM handler does the same at once, without the grace,
before Slurm's SIGKILL: Slurm's process tracking may not follow orphans, this does.

Ports: each node takes its own block (``wrappers.ray_block``), derived from the job id and the
node's rank, so nodes sharing a machine (a test cluster, a shared node) never clash.
Imports stdlib and nrun_core only (the Slurm task has nrun importable); Ray runs in ``python``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from typing import IO, Any, List, Mapping, Optional

from nrun_core import wrappers
from nrun_core.runtime.point import become_subreaper, descendants

STOP_GRACE_S = 3.0      # ray start --block stops its processes on SIGTERM; then SIGKILL (a throwaway cluster)
POLL_S = 0.5
# Run in the point's Python once the head's port answers: every node joined, or exit 3.
WAIT_FOR_NODES = (
    "import sys, time, ray\n"
    "ray.init(address=sys.argv[1], logging_level='ERROR', log_to_driver=False)\n"
    "want, end = int(sys.argv[2]), time.time() + float(sys.argv[3])\n"
    "while True:\n"
    "    n = sum(1 for x in ray.nodes() if x['Alive'])\n"
    "    if n >= want:\n"
    "        sys.exit(0)\n"
    "    if time.time() > end:\n"
    "        print(f'only {n} of {want} Ray nodes joined', file=sys.stderr)\n"
    "        sys.exit(3)\n"
    "    time.sleep(0.5)\n")


class Cancelled(BaseException):
    """SIGTERM (scancel, Slurm's time limit): stop everything now."""


def stop_file(nrun_dir: str, job: int) -> str:
    return os.path.join(nrun_dir, f"ray-stop.{job}")


def temp_dir(job: int, node: int) -> str:
    """Ray's session dir on the node: short (Ray's socket paths must fit 107 bytes), per job and node."""
    return f"/tmp/nrun-ray-{job}-{node}"


def run(argv: List[str], *, env: Mapping[str, str], cwd: str, out: IO[bytes], err: IO[bytes],
        cfg: Optional[Mapping[str, Any]], python: str, job: int, node: int, nnodes: int,
        head_host: str, nrun_dir: str, job_dir: str) -> int:
    """This node's part; the head returns the driver's exit code, a worker 0 once told to stop."""
    become_subreaper()
    previous = signal.signal(signal.SIGTERM, _cancel)
    head_block = wrappers.ray_block(cfg or {}, job, 0, nnodes)
    address = f"{head_host}:{head_block}"
    cpus = _int_env("SLURM_CPUS_ON_NODE")
    gpus = _int_env("SLURM_GPUS_ON_NODE")
    ray_argv = wrappers.ray_start_argv(python, cfg, head=node == 0, block=wrappers.ray_block(cfg or {}, job, node, nnodes),
                                       head_address=address, temp_dir=temp_dir(job, node), num_cpus=cpus, num_gpus=gpus)
    timeout = float(wrappers.ray_conf(cfg)["start_timeout_s"])
    stop = stop_file(nrun_dir, job)
    log = open(os.path.join(job_dir, f"ray-node{node}.log"), "ab")
    ray: Optional[subprocess.Popen] = None
    driver: Optional[subprocess.Popen] = None
    grace = STOP_GRACE_S
    try:
        if node == 0:
            if os.path.exists(stop):  # left by an earlier attempt of this job (requeue)
                os.unlink(stop)
            ray = _start(ray_argv, env, log)
            _wait_for_cluster(python, address, nnodes, timeout, env, ray, err)
            _say(err, f"nrun: Ray cluster of {nnodes} node(s) up at {address}; running the point as its driver")
            driver = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=cwd,
                                      env={**env, "RAY_ADDRESS": address}, preexec_fn=_driver_signals)
            return driver.wait()
        if not _wait_for_port(head_host, head_block, timeout, stop):
            _say(log, f"nrun: no Ray head at {address} within {timeout:.0f} s (or the point ended)")
            return 0 if os.path.exists(stop) else 1
        ray = _start(ray_argv, env, log)
        while not os.path.exists(stop):
            if ray.poll() is not None:  # its Ray ended: fine if the head is stopping the cluster
                if _appears(stop, 5.0):
                    return 0
                _say(log, f"nrun: this node's Ray ended (exit {ray.returncode}) before the point did")
                return ray.returncode or 1
            time.sleep(POLL_S)
        return 0
    except Cancelled:
        grace = 0.0
        return 128 + signal.SIGTERM
    finally:
        if node == 0:
            _touch(stop)
        if grace and ray is not None:  # a normal end: let `ray start` stop its processes first
            _stop_gently(ray, grace)
        # Then (on scancel: at once, before Slurm's SIGKILL ends this task) nothing survives.
        _kill([p for p in (ray, driver) if p is not None])
        _end_descendants()
        shutil.rmtree(temp_dir(job, node), ignore_errors=True)
        log.close()
        signal.signal(signal.SIGTERM, previous)


def _cancel(signum: int, frame: Any) -> None:
    raise Cancelled()


def _start(argv: List[str], env: Mapping[str, str], log: IO[bytes]) -> subprocess.Popen:
    """``ray start --block`` in its own process group (so it can be ended as one)."""
    log.write(("nrun: " + " ".join(argv) + "\n").encode())
    log.flush()
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            env={**env, "RAY_USAGE_STATS_ENABLED": "0"}, start_new_session=True)


def _wait_for_cluster(python: str, address: str, nnodes: int, timeout: float, env: Mapping[str, str],
                      ray: subprocess.Popen, err: IO[bytes]) -> None:
    host, port = address.rsplit(":", 1)
    deadline = time.monotonic() + timeout
    if not _wait_for_port(host, int(port), timeout, None, ray):
        if ray.poll() is not None:
            raise RuntimeError(f"the Ray head's `ray start` exited with code {ray.returncode} before it served "
                               f"{address}; its output is in ray-node0.log in the job dir (check "
                               "hydra.launcher.launcher.extra_args and the ports settings)")
        raise RuntimeError(f"the Ray head did not answer at {address} within {timeout:.0f} s "
                           f"(hydra.launcher.launcher.start_timeout_s); see ray-node0.log in the job dir")
    left = max(1.0, deadline - time.monotonic())
    waiter = subprocess.run([python, "-c", WAIT_FOR_NODES, address, str(nnodes), str(left)], stdin=subprocess.DEVNULL,
                            stdout=err, stderr=err, env={**env, "RAY_USAGE_STATS_ENABLED": "0"})
    if waiter.returncode != 0:
        raise RuntimeError(f"the Ray cluster at {address} did not reach {nnodes} node(s) within {timeout:.0f} s "
                           "(hydra.launcher.launcher.start_timeout_s); see ray-node*.log in the job dir")


def _wait_for_port(host: str, port: int, timeout: float, stop: Optional[str],
                   proc: Optional[subprocess.Popen] = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stop and os.path.exists(stop):
            return False
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return True
        except OSError:
            time.sleep(POLL_S)
    return False


def _appears(path: str, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if os.path.exists(path):
            return True
        time.sleep(0.2)
    return os.path.exists(path)


def _stop_gently(proc: subprocess.Popen, grace: float) -> None:
    """SIGTERM ``ray start --block``: it stops its Ray processes; wait at most ``grace``."""
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=grace)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        pass


def _kill(procs: List[subprocess.Popen]) -> None:
    """SIGKILL each process and its process group (``ray start`` leads its own), then reap them."""
    for proc in procs:
        for kill in (os.killpg, os.kill):
            try:
                kill(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    for proc in procs:
        try:
            proc.wait(timeout=5.0)
        except subprocess.TimeoutExpired:  # pragma: no cover - unkillable (D state)
            pass


def _end_descendants() -> None:
    """Whatever is left (Ray daemons that left the group): this task is their subreaper."""
    for pid in descendants(os.getpid()):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        try:
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            return
        if not descendants(os.getpid()):
            return
        time.sleep(0.05)


def _driver_signals() -> None:
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    become_subreaper()


def _touch(path: str) -> None:
    try:
        with open(path, "a"):
            pass
    except OSError:  # pragma: no cover - the job dir went away
        pass


def _say(stream: IO[bytes], text: str) -> None:
    stream.write((text + "\n").encode())
    stream.flush()


def _int_env(name: str) -> Optional[int]:
    value = os.environ.get(name, "")
    return int(value) if value.isdigit() else None
