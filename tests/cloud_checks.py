"""What the nrun_lepton and nrun_dgxcloud end-to-end tests check alike, each against its own fake
(tests/cloud_fixtures.py): a sweep launched as a user launches it, a detached sweep cancelled from
another shell, a wrong credential refused before anything is submitted, a shell that cannot ask
the service leaving a running point as recorded, a job deleted behind
nrun's back, the API calls of a 20-point sweep, a 2-node torchrun point, and secrets kept out of
every file. Each test adds what its backend does its own way (the calls, the names)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from nrun_core import procs

from conftest import PYTHON, make_project, nrun, states, status_json, wait_for


def cloud_sweep(kind: str, fakes: Any, proj: Path, *args: str, env: Optional[Dict[str, str]] = None,
                timeout: float = 300, wait: bool = True) -> Any:
    """`python sweep_app.py -m` on the fake ``kind``: the finished process, or (wait=False) the
    running launcher."""
    cmd = [PYTHON, "sweep_app.py", "-m", *fakes.args(kind), "hydra.launcher.progress=lines", *args,
           f"hydra.sweep.dir={proj.parent}/multirun"]
    full = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    if not wait:
        return subprocess.Popen(cmd, cwd=proj, env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=proj, env=full, capture_output=True, text=True, timeout=timeout)


def point_state(idx: int) -> Optional[str]:
    """The point's state in the store, None while no sweep is recorded yet."""
    try:
        return states().get(idx)
    except (AssertionError, ValueError):
        return None


def assert_in_no_file(roots: Iterable[Path], needles: Iterable[bytes]) -> None:
    """No file under ROOTS holds any of NEEDLES (a secret, a token)."""
    needles = list(needles)
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                assert not any(n in data for n in needles), path


def cancel_running_sweep(run: Callable[..., Any]) -> str:
    """Two sleeping points launched detached, cancelled with `nrun cancel` once both run; the
    sweep's id, once both show CANCELLED."""
    proc = run("x=1,2", "action=sleep", "seconds=300", "hydra.launcher.wait=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    wait_for(lambda: set(states().values()) == {"RUNNING"}, timeout=180)
    sid = status_json()["sweep"]["id"]
    out = nrun("cancel", "last", timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    wait_for(lambda: set(states().values()) == {"CANCELLED"}, timeout=90)
    return sid


def check_wrong_credential(run: Callable[..., Any], monkeypatch: Any, variable: str,
                           submitted: Callable[[], int]) -> None:
    """A wrong value in VARIABLE: a 401 naming the variable and its fix, no traceback, the value
    not echoed, and nothing submitted (``submitted()`` counts the fake's create calls)."""
    before = submitted()
    monkeypatch.setenv(variable, "not-the-credential")
    proc = run("x=1")
    assert proc.returncode != 0
    assert "401" in proc.stderr and variable in proc.stderr and "Fix:" in proc.stderr
    assert "Traceback" not in proc.stderr and "not-the-credential" not in proc.stderr
    assert submitted() == before


def check_status_that_cannot_ask_keeps_the_point(run: Callable[..., Any], variable: str) -> None:
    """The detached supervisor is killed (-9) while its point runs; `nrun status` from a shell with
    a wrong VARIABLE cannot ask the service (401): it says so and the point stays RUNNING (a refused
    question once read as "ended" and made it LOST). With the right one it is still RUNNING, and
    `nrun cancel` stops it."""
    proc = run("x=1", "action=sleep", "seconds=300", "hydra.launcher.wait=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    wait_for(lambda: states() == {0: "RUNNING"}, timeout=180)
    sweep = status_json()["sweep"]
    os.kill(sweep["supervisor_pid"], signal.SIGKILL)
    wait_for(lambda: not procs.alive(sweep["supervisor_pid"], sweep["supervisor_start"]), timeout=30)
    away = nrun("status", "last", "--json", env={variable: "not-the-credential"})
    assert away.returncode == 0, away.stderr
    assert json.loads(away.stdout)["points"][0]["state"] == "RUNNING"
    assert "could not ask" in away.stderr and "not-the-credential" not in away.stderr, away.stderr
    assert states() == {0: "RUNNING"}
    out = nrun("cancel", "last", timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert states() == {0: "CANCELLED"}


def vanish(fake: Any, jobs: Dict[str, Any], key: str) -> None:
    """Job KEY leaves the fake's table JOBS and its containers go, with no API call: as if a user
    deleted it in the vendor's UI."""
    with fake.lock:
        jobs.pop(key)
        reps = fake.replicas.pop(key)
    fake.docker.remove(reps)


def check_deleted_behind_nrun_is_lost(run: Callable[..., Any], delete: Callable[[], None]) -> None:
    """Point 1 sleeps; once it runs, ``delete()`` removes its job at the fake (as a user would in
    the vendor's UI): the sweep ends with point 0 COMPLETED and point 1 LOST, not a crash."""
    launcher = run("x=1", "action=ok,sleep", "seconds=300", wait=False)
    try:
        wait_for(lambda: point_state(1) == "RUNNING", timeout=180)
        delete()
        out, err = launcher.communicate(timeout=120)
    finally:
        launcher.kill()
    assert launcher.returncode != 0 and "Traceback" not in err
    assert states() == {0: "COMPLETED", 1: "LOST"}
    assert "vanished" in status_json()["points"][1]["error"]


def twenty_point_calls(fake: Any, run: Callable[..., Any]) -> List[Any]:
    """Twenty points, ten at once, all COMPLETED; the API calls the fake saw meanwhile."""
    start = len(fake.calls)
    fake.peak_jobs = 0
    proc = run("x=range(20)", "hydra.launcher.max_parallel=10")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert set(states().values()) == {"COMPLETED"}
    return fake.calls[start:]


def check_call_budget(kind: str, fake: Any, calls: List[Any], gets_per_point: Dict[Any, int],
                      counts: Dict[str, int], fixed_calls: int) -> None:
    """Prints the sweep's API calls; per point a few status polls (backoff), one job per point
    alive at most ten at once, and at most 14 calls a point plus FIXED_CALLS for the sweep."""
    report = {**counts, "max_gets_per_point": max(gets_per_point.values()),
              "calls_per_point": round(len(calls) / 20, 2), "peak_jobs": fake.peak_jobs}
    print(f"{kind} 20-point sweep API calls:", json.dumps(report))
    assert max(gets_per_point.values()) <= 12                              # backoff: 0.5 s, x1.5, capped at 4 s
    assert 2 <= fake.peak_jobs <= 10                                       # one job per point, max_parallel=10
    assert len(calls) <= 20 * 14 + fixed_calls


def allreduce_sweep(fakes: Any, kind: str, tmp_path: Path, image: str) -> subprocess.CompletedProcess:
    """One 2-node torchrun point of tests/apps/torch_allreduce.py through the fake ``kind``."""
    proj = make_project(tmp_path, "torch_allreduce.py")
    args = [a for a in fakes.args(kind) if not a.startswith("hydra.launcher.image=")]
    cmd = [PYTHON, "torch_allreduce.py", "-m", *args, f"hydra.launcher.image={image}", "nrun/launcher=torchrun",
           "hydra.launcher.nodes=2", "hydra.launcher.timeout_s=300", "hydra.launcher.progress=lines", "+run=1",
           "++hydra.launcher.env={OMP_NUM_THREADS:'1'}", f"hydra.sweep.dir={tmp_path}/multirun"]
    return subprocess.run(cmd, cwd=proj, env={**os.environ, "PYTHONUNBUFFERED": "1"}, capture_output=True,
                          text=True, timeout=420)


def check_two_node_allreduce(fakes: Any, fake: Any, kind: str, tmp_path: Path, image: str) -> Tuple[str, str]:
    """A 2-node torchrun point all-reduces across its nodes (ranks 0 and 1 of 2) and leaves no
    container or network at the fake; (the sweep id, both nodes' stdout) for the backend's own
    checks."""
    proc = allreduce_sweep(fakes, kind, tmp_path, image)
    assert proc.returncode == 0, proc.stderr[-3000:]
    p = status_json()["points"][0]
    assert p["state"] == "COMPLETED"
    assert "'world_size': 2, 'sum': 3.0, 'expected': 3.0" in p["value_repr"]
    sid = status_json()["sweep"]["id"]
    job = tmp_path / "multirun" / "0"
    logs = (job / "stdout.log").read_text() + (job / "stdout.node1.log").read_text()
    assert "rank 0/2" in logs and "rank 1/2" in logs
    assert fake.live_containers(sid) == [] and fake.live_networks(sid) == []
    return sid, logs
