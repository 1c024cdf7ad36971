"""Fault injection: the launcher killed by SIGKILL, SIGTERM or SIGINT at each phase of a sweep.

A fault point (tests/faults/hooks/sitecustomize.py) pauses the real launcher at the start of a
phase (composing, packing, submitting, collecting; "running" is reached by waiting until the
store says so), the test sends the signal, then checks what a user would: no point lost (every
point that ran has its real outcome recorded, nothing is left running at the backend, nothing
stays in limbo), and one clear message.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from conftest import PYTHON, ROOT, interruptible, nrun, status_json, make_project
from docker_fixtures import docker_sandbox  # noqa: F401  (requested by backend())

HOOKS = ROOT / "tests" / "faults" / "hooks"
PHASES = {
    "composing": "nrun_core.sweep:Sweep._compose",
    "packing": "nrun_core.sweep:Sweep._package",
    "submitting": "nrun_core.runner:Runner.submit",
    "running": None,
    "collecting": "nrun_core.sweep:Sweep.finish",
}
SIGNALS = {"SIGKILL": signal.SIGKILL, "SIGTERM": signal.SIGTERM, "SIGINT": signal.SIGINT}
BACKENDS = {
    "local": ["hydra/launcher=nrun_local"],
    "slurm": ["hydra/launcher=nrun_slurm"],
    "docker": ["hydra/launcher=nrun_docker"],
}
CASES = [(b, ph, sig) for b in BACKENDS for ph in PHASES for sig in SIGNALS
         if b == "local" or ph not in ("composing", "packing")]  # those two phases are backend-free


@pytest.fixture
def proj(tmp_path: Path) -> Path:
    return make_project(tmp_path)


def _backend_env(request, name: str) -> Dict[str, str]:
    if name == "slurm":
        return request.getfixturevalue("slurm_cluster")
    if name == "docker":
        return request.getfixturevalue("docker_sandbox")
    return {}


def _args(name: str, phase: str) -> List[str]:
    args = list(BACKENDS[name])
    if name == "docker":
        args += [f"hydra.launcher.image={os.environ['NRUN_SANDBOX_IMAGE']}", '++hydra.launcher.labels={nrun.sandbox:"1"}']
    if phase == "packing" and name == "local":
        args.append("nrun/packager=workdir")
    return args


def _settled(timeout: float = 120) -> dict:
    """`nrun status` until the sweep has settled (it reconciles an unsupervised sweep)."""
    deadline = time.monotonic() + timeout
    while True:
        st = status_json()
        if st["sweep"]["state"] not in ("RUNNING",) or time.monotonic() > deadline:
            return st
        time.sleep(0.5)


def _leftovers(name: str, st: dict) -> List[str]:
    from nrun_core import procs

    sweep = st["sweep"]["id"]
    if name == "slurm":
        ids = sorted({p["backend_id"].split("_")[0] for p in st["points"] if p["backend_id"]})
        if not ids:
            return []
        out = subprocess.run(["squeue", "-h", "-o", "%i %T", "-j", ",".join(ids)], capture_output=True, text=True)
        return out.stdout.split()
    if name == "docker":
        import docker

        client = docker.DockerClient(base_url=os.environ["DOCKER_HOST"], version="auto")
        try:
            return [c.name for c in client.containers.list(all=True, filters={"label": f"nrun.sweep={sweep}"})]
        finally:
            client.close()
    return [str(p["pid"]) for p in st["points"] if p["pid"] and procs.alive(p["pid"], p["pid_start"])]


def _ran(st: dict) -> Dict[int, Optional[dict]]:
    """The result each point left in its job dir (its own: tied to sweep, point, overrides)."""
    from nrun_core.runtime.result import read_result
    from nrun_core.spec import JobSpec

    out = {}
    shown = json.loads(nrun("show", st["sweep"]["id"], "--json").stdout)
    for p in shown["points"]:
        spec = JobSpec.from_json(json.dumps(p["spec"]))
        out[p["idx"]] = read_result(spec.result_file, expect=spec.identity)
    return out


@pytest.mark.parametrize("backend,phase,sig", CASES, ids=[f"{b}-{p}-{s}" for b, p, s in CASES])
def test_launcher_signalled_at_each_phase_loses_no_point(backend, phase, sig, request, proj, home, tmp_path,
                                                         monkeypatch):
    for k, v in _backend_env(request, backend).items():
        monkeypatch.setenv(k, v)
    flag = tmp_path / "paused"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": f"{HOOKS}:{os.environ.get('PYTHONPATH', '')}"}
    if PHASES[phase]:
        env.update({"NRUN_FAULT_AT": PHASES[phase], "NRUN_FAULT_FLAG": str(flag)})
    cmd = [PYTHON, "sweep_app.py", "-m", *_args(backend, phase), "hydra.launcher.progress=lines",
           "action=sleep", "seconds=4", "x=1,2", f"hydra.sweep.dir={tmp_path}/multirun"]
    launcher = subprocess.Popen(cmd, cwd=proj, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=interruptible)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and launcher.poll() is None:
        if PHASES[phase] and flag.exists() and flag.read_text():
            break
        if not PHASES[phase] and nrun("list").stdout.count("\n") > 1:
            try:
                if all(p["state"] == "RUNNING" for p in status_json()["points"]):
                    break
            except (AssertionError, json.JSONDecodeError):
                pass
        time.sleep(0.1)
    assert launcher.poll() is None, launcher.communicate()
    launcher.send_signal(SIGNALS[sig])
    if PHASES[phase]:
        flag.unlink()  # the pause ends: a launcher that survived the signal goes on
    out, err = launcher.communicate(timeout=120)
    code = launcher.returncode

    recorded = nrun("list").stdout.count("\n") > 1
    if sig == "SIGKILL":
        assert code == -signal.SIGKILL
    else:
        assert code == (143 if sig == "SIGTERM" else 130), err[-3000:]
        why = "Ctrl-C" if sig == "SIGINT" else sig
        assert (f"cancelled by {why}" in err) or (f"interrupted by {why} before anything was submitted" in err), err
        assert "Traceback" not in err, err[-3000:]
    if phase in ("composing", "packing"):
        assert not recorded                                   # nothing was recorded, nothing submitted
        return
    st = _settled()
    ran = _ran(st)
    states = {p["idx"]: p["state"] for p in st["points"]}
    assert st["sweep"]["state"] in ("COMPLETED", "CANCELLED", "FAILED"), st["sweep"]
    assert all(s in ("COMPLETED", "CANCELLED", "LOST") for s in states.values()), states
    for idx, result in ran.items():                           # a point that finished is never lost
        if result is not None and result["status"] == "COMPLETED":
            assert states[idx] == "COMPLETED", (idx, states)
    if sig != "SIGKILL" and phase in ("submitting", "running"):
        assert set(states.values()) <= {"CANCELLED", "COMPLETED"}, states
    if sig == "SIGKILL" and phase in ("running", "collecting"):
        assert set(states.values()) == {"COMPLETED"}, states   # they ran on, and were settled
    if states and "LOST" in states.values():                  # only points that never started
        lost = [p for p in st["points"] if p["state"] == "LOST"]
        assert all("never started" in (p["error"] or "") for p in lost), lost
    deadline = time.monotonic() + 60
    while _leftovers(backend, st) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _leftovers(backend, st) == []
