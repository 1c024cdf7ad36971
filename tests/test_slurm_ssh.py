"""nrun_slurm from a machine that is not the login node: SSH to a real sshd on loopback.

Needs `nrun sandbox slurm up` and `nrun sandbox ssh up` (skips otherwise; fails when NRUN_REQUIRE
names slurm and ssh). The launcher runs without SLURM_CONF and with sbatch/squeue/sacct/scancel
shadowed by failing stand-ins, so every Slurm call provably goes through SSH; the "remote" dir is
distinct from the local sweep dir, so results and logs must really be copied back.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import pytest

from conftest import APPS, nrun, states, status_json, interruptible
from require import missing
from slurm_fixtures import slurm_cluster, slurm_env  # noqa: F401  (fixtures)

pytestmark = pytest.mark.slurm
SLURM_TOOLS = ("sbatch", "squeue", "sacct", "scancel", "srun")


@pytest.fixture(scope="session")
def ssh_login(slurm_cluster) -> Dict[str, str]:
    from nrun_core.sandbox import ssh

    ok, report = ssh.status()
    if not ok:
        msg = f"the SSH sandbox is not up: run `nrun sandbox ssh up`\n{report}"
        missing("ssh", msg)
    return ssh.env()


@pytest.fixture
def project(tmp_path) -> Path:
    """A user's project: the app and its config, packed and shipped by nrun."""
    proj = tmp_path / "proj"
    (proj / "conf").mkdir(parents=True)
    shutil.copy(APPS / "slurm_app.py", proj)
    shutil.copy(APPS / "conf" / "sweep_app.yaml", proj / "conf")
    return proj


def _ssh_args(login: Dict[str, str], remote: Path, slurm_conf: str) -> List[str]:
    return ["hydra/launcher=nrun_slurm", "nrun/packager=workdir", "hydra.launcher.progress=lines",
            f"hydra.launcher.ssh.host={login['NRUN_SSH_HOST']}", f"hydra.launcher.ssh.port={login['NRUN_SSH_PORT']}",
            f"hydra.launcher.ssh.user={login['NRUN_SSH_USER']}", f"hydra.launcher.ssh.key_file={login['NRUN_SSH_KEY']}",
            f"hydra.launcher.ssh.known_hosts={login['NRUN_SSH_KNOWN_HOSTS']}",
            f"hydra.launcher.ssh.remote_dir={remote}", f"+hydra.launcher.ssh.env.SLURM_CONF={slurm_conf}",
            f"hydra.launcher.python={sys.executable}"]   # the login node's Python (same venv here)


def _launch(project: Path, args: List[str], *, env: Dict[str, str] | None = None, timeout: float = 180,
            popen: bool = False):
    """Run the app like a user on a laptop: no Slurm client works here."""
    shims = project.parent / "no-slurm-here"
    shims.mkdir(exist_ok=True)
    for tool in SLURM_TOOLS:
        path = shims / tool
        path.write_text("#!/bin/sh\necho \"$0 must not run on the submitting machine\" >&2\nexit 97\n")
        path.chmod(0o755)
    full = {k: v for k, v in os.environ.items() if k != "SLURM_CONF"}
    full.update({"PATH": f"{shims}:{os.environ['PATH']}", "PYTHONUNBUFFERED": "1", **(env or {})})
    argv = [sys.executable, str(project / "slurm_app.py"), "-m", *args, f"hydra.sweep.dir={project}/multirun"]
    if popen:
        return subprocess.Popen(preexec_fn=interruptible, args=argv, cwd=project, env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(argv, cwd=project, env=full, capture_output=True, text=True, timeout=timeout)


def test_sweep_over_ssh_ships_code_submits_remotely_and_brings_results_back(
        ssh_login, slurm_cluster, home, project, tmp_path):
    remote = tmp_path / "login-node"
    secret = "ssh-s3cret-41c9"
    proc = _launch(project, [*_ssh_args(ssh_login, remote, slurm_cluster["SLURM_CONF"]), "action=jobid,env",
                             "env_names=[MY_TOKEN]", "hydra.launcher.secret_env=[MY_TOKEN]"],
                   env={"MY_TOKEN": secret})
    assert proc.returncode == 0, proc.stderr[-3000:]
    points = status_json()["points"]
    assert [p["state"] for p in points] == ["COMPLETED", "COMPLETED"]
    assert f"'job_id': '{points[0]['backend_id']}'" in points[0]["value_repr"]
    digest = "sha256:" + hashlib.sha256(secret.encode()).hexdigest()[:16]
    assert f"'MY_TOKEN': '{digest}'" in points[1]["value_repr"]
    sweep = status_json()["sweep"]["id"]
    remote_job = remote / "sweeps" / sweep / "0"
    assert "action=jobid" in (remote_job / "stdout.log").read_text()                 # ran over there
    assert (remote / "code").is_dir() and any((remote / "artifacts").iterdir())     # from shipped code
    local_job = project / "multirun" / "0"
    assert (local_job / "stdout.log").read_text() == (remote_job / "stdout.log").read_text()  # copied back
    assert (local_job / ".nrun" / sweep / "result.json").exists()
    for path in [*remote.rglob("*"), *home.rglob("*"), *(project / "multirun").rglob("*")]:
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    assert "must not run on the submitting machine" not in proc.stderr


def test_failure_over_ssh_comes_back_with_its_traceback(ssh_login, slurm_cluster, home, project, tmp_path):
    proc = _launch(project, [*_ssh_args(ssh_login, tmp_path / "login-node", slurm_cluster["SLURM_CONF"]),
                             "action=ok,raise"])
    assert proc.returncode != 0
    assert states() == {0: "COMPLETED", 1: "FAILED"}
    assert 'raise ValueError(f"boom at x={cfg.x}")' in proc.stderr
    assert "ValueError: boom" in (project / "multirun" / "1" / "stderr.log").read_text()


def test_detached_ssh_sweep_is_cancelled_from_another_shell(ssh_login, slurm_cluster, home, project, tmp_path):
    proc = _launch(project, [*_ssh_args(ssh_login, tmp_path / "login-node", slurm_cluster["SLURM_CONF"]),
                             "action=sleep", "seconds=120", "x=1,2", "hydra.launcher.wait=false"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    deadline = time.monotonic() + 60
    while not all(p["backend_id"] for p in status_json()["points"]):
        assert time.monotonic() < deadline
        time.sleep(0.3)
    os.kill(status_json()["sweep"]["supervisor_pid"], signal.SIGKILL)   # unsupervised: nrun cancel uses SSH
    array = status_json()["points"][0]["backend_id"].split("_")[0]
    out = nrun("cancel", "last", timeout=60, env={"PATH": f"{project.parent / 'no-slurm-here'}:{os.environ['PATH']}"})
    assert out.returncode == 0, out.stdout + out.stderr
    deadline = time.monotonic() + 10
    while subprocess.run(["squeue", "-h", "-j", array], capture_output=True, text=True).stdout.strip():
        assert time.monotonic() < deadline, "tasks still queued 10 s after cancel"
        time.sleep(0.3)
    assert set(states().values()) == {"CANCELLED"}


def test_unknown_or_changed_host_key_stops_before_anything_is_sent(ssh_login, slurm_cluster, home, project,
                                                                   tmp_path):
    remote = tmp_path / "login-node"
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    proc = _launch(project, [*_ssh_args(ssh_login, remote, slurm_cluster["SLURM_CONF"]), "x=1",
                             f"hydra.launcher.ssh.known_hosts={empty}"])
    assert proc.returncode != 0 and "is not in" in proc.stderr and "ssh-keyscan" in proc.stderr
    other = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True)
    assert other.returncode == 0
    wrong = tmp_path / "wrong_known_hosts"
    key = (tmp_path / "k.pub").read_text().split()
    wrong.write_text(f"[{ssh_login['NRUN_SSH_HOST']}]:{ssh_login['NRUN_SSH_PORT']} {key[0]} {key[1]}\n")
    proc = _launch(project, [*_ssh_args(ssh_login, remote, slurm_cluster["SLURM_CONF"]), "x=1",
                             f"hydra.launcher.ssh.known_hosts={wrong}"])
    assert proc.returncode != 0 and "does not match" in proc.stderr
    assert not remote.exists()                                   # nothing was sent
    assert nrun("list").stdout.count("\n") <= 1


def test_passthrough_over_ssh_is_refused_with_the_fix(ssh_login, slurm_cluster, home, project, tmp_path):
    args = [a for a in _ssh_args(ssh_login, tmp_path / "r", slurm_cluster["SLURM_CONF"]) if "packager" not in a]
    proc = _launch(project, [*args, "x=1"])
    assert proc.returncode != 0 and "nrun/packager=workdir" in proc.stderr


def test_nrun_logs_reads_the_login_nodes_copy_without_a_shared_filesystem(
        ssh_login, slurm_cluster, home, project, tmp_path):
    """`nrun logs` goes through the SSH transport: the local copy is gone, the output is not."""
    remote = tmp_path / "login-node"
    proc = _launch(project, [*_ssh_args(ssh_login, remote, slurm_cluster["SLURM_CONF"]), "x=7"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    local = project / "multirun" / "0" / "stdout.log"
    expected = local.read_text()
    assert "x=7" in expected
    local.unlink()
    out = nrun("logs", "last", "0", env={"PATH": f"{project.parent / 'no-slurm-here'}:{os.environ['PATH']}"})
    assert out.returncode == 0, out.stderr
    assert out.stdout == expected


def test_split_and_packed_sweep_over_ssh(ssh_login, slurm_cluster, home, project, tmp_path):
    """Several arrays (max_array_size=3: two tasks each) of packs (two points a task), all over SSH."""
    remote = tmp_path / "login-node"
    proc = _launch(project, [*_ssh_args(ssh_login, remote, slurm_cluster["SLURM_CONF"]), "x=range(0,5)",
                             "action=jobid", "hydra.launcher.max_array_size=3", "hydra.launcher.points_per_task=2"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    points = status_json()["points"]
    assert [p["state"] for p in points] == ["COMPLETED"] * 5
    arrays = list(dict.fromkeys(p["backend_id"].split("_")[0].split(":")[0] for p in points))
    assert len(arrays) == 2 and status_json()["sweep"]["backend_id"] == ",".join(arrays)
    for i, p in enumerate(points):
        assert ":" in p["backend_id"] and f"'job_id': '{p['backend_id']}'" in p["value_repr"]
        assert f"x={i}" in (project / "multirun" / str(i) / "stdout.log").read_text()      # copied back
    assert "must not run on the submitting machine" not in proc.stderr


def test_one_packed_point_is_cancelled_over_ssh_from_another_shell(ssh_login, slurm_cluster, home, project,
                                                                   tmp_path):
    remote = tmp_path / "login-node"
    proc = _launch(project, [*_ssh_args(ssh_login, remote, slurm_cluster["SLURM_CONF"]), "action=sleep",
                             "seconds=120", "x=1,2,3", "hydra.launcher.points_per_task=3",
                             "hydra.launcher.wait=false"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = status_json()["sweep"]["id"]
    record = lambda i: remote / "sweeps" / sweep / str(i) / ".nrun" / sweep / "pack.json"  # noqa: E731
    deadline = time.monotonic() + 90
    while not record(0).exists():
        assert time.monotonic() < deadline, "the pack never started its first point"
        time.sleep(0.3)
    os.kill(status_json()["sweep"]["supervisor_pid"], signal.SIGKILL)   # unsupervised: nrun cancel uses SSH
    no_slurm = {"PATH": f"{project.parent / 'no-slurm-here'}:{os.environ['PATH']}"}
    out = nrun("cancel", "last", "0", timeout=60, env=no_slurm)
    assert out.returncode == 0, out.stdout + out.stderr
    deadline = time.monotonic() + 60
    while not record(1).exists():                                       # the pack went on with point 1
        assert time.monotonic() < deadline, "point 0 was not stopped by its cancel marker"
        time.sleep(0.3)
    assert '"reason": "cancelled"' in record(0).read_text()
    task = status_json()["points"][1]["backend_id"].split(":")[0]
    out = nrun("cancel", "last", timeout=60, env=no_slurm)
    assert out.returncode == 0, out.stdout + out.stderr
    deadline = time.monotonic() + 30
    while subprocess.run(["squeue", "-h", "-j", task], capture_output=True, text=True).stdout.strip():
        assert time.monotonic() < deadline, "the pack still runs 30 s after nrun cancel"
        time.sleep(0.3)
    assert set(states().values()) == {"CANCELLED"}
