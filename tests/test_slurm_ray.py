"""`nrun/launcher=ray` on the local 2-node Slurm cluster: a Ray cluster per point, its task as
the Ray driver, nothing of Ray left once the point ends or is cancelled.

The sandbox's nodes n1 and n2 are one machine, so both Ray nodes of a point share its ports and
/tmp: each node takes its own port block and temp dir (see conf/nrun/launcher/ray.yaml), which is
what this test relies on. Objects stores are kept small (80 MB): the machine is shared.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import time
from pathlib import Path
from typing import List

import pytest

from conftest import PYTHON, interruptible, nrun, run_app, status_json, wait_for
from require import missing
from slurm_fixtures import slurm_cluster, slurm_env  # noqa: F401  (fixtures)

pytestmark = pytest.mark.slurm
SLURM = "hydra/launcher=nrun_slurm"
RAY = ("nrun/launcher=ray", "hydra.launcher.launcher.object_store_bytes=80000000", "hydra.launcher.nodes=2",
       "hydra.launcher.progress=lines")

RAY_APP = '''\
import os
import time

import hydra


@hydra.main(version_base=None, config_path=None, config_name=None)
def main(cfg):
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    ray.init(logging_level="ERROR")  # RAY_ADDRESS: the point's own cluster

    @ray.remote(num_cpus=1)
    def slurm_node(i):
        return os.environ["SLURM_NODEID"]  # Ray's workers run in their node's Slurm task environment

    alive = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
    pinned = [slurm_node.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False)).remote(i)
              for i, n in enumerate(alive * 2)]
    ran_on = sorted(set(ray.get(pinned)))
    print(f"ray: {len(alive)} nodes, tasks ran on Slurm nodes {ran_on}", flush=True)
    time.sleep(float(cfg.get("sleep", 0)))
    return {"nodes": len(alive), "ran_on": ran_on, "x": cfg.x}


main()
'''


@pytest.fixture
def ray_app(tmp_path: Path) -> Path:
    if importlib.util.find_spec("ray") is None:
        missing("slurm", "ray is not installed: pip install -e '.[test]' (or '.[ray]')")
    app = tmp_path / "ray_app.py"
    app.write_text(RAY_APP)
    return app


def _ray_processes(sweep_id: str) -> List[str]:
    """Processes of this sweep's Ray clusters: every Ray process inherits the point's environment
    (NRUN_SWEEP_ID) from the Slurm task that started it; plus Ray daemons by their temp dir."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if f"NRUN_SWEEP_ID={sweep_id}".encode() in env.split(b"\0") and "pytest" not in args:
            found.append(f"{pid} {args[:120]}")
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    found += [ln for ln in ps.splitlines() if "/tmp/nrun-ray-" in ln and ("raylet" in ln or "gcs_server" in ln)]
    return found


def test_ray_job_sees_two_nodes_and_returns_its_value(slurm_env, home, tmp_path, ray_app):
    run_app(str(ray_app), SLURM, *RAY, "+x=7", cwd=tmp_path, check=True, timeout=300)
    p = status_json()["points"][0]
    assert p["state"] == "COMPLETED"
    assert p["value_repr"] == "{'nodes': 2, 'ran_on': ['0', '1'], 'x': 7}"   # a fan-out on both nodes
    job = tmp_path / "multirun" / "0"
    assert "Ray cluster of 2 node(s) up" in (job / "stderr.log").read_text()
    assert "--head" in (job / "ray-node0.log").read_text()
    assert "--address=n1:" in (job / "ray-node1.log").read_text()
    assert not _ray_processes(status_json()["sweep"]["id"])                     # stopped at the end


def test_cancelling_a_ray_point_leaves_no_ray_process(slurm_env, home, tmp_path, ray_app):
    launcher = subprocess.Popen([PYTHON, str(ray_app), "-m", SLURM, *RAY, "+x=1", "+sleep=600",
                                 f"hydra.sweep.dir={tmp_path}/multirun"], cwd=tmp_path, preexec_fn=interruptible,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        log = tmp_path / "multirun" / "0" / "stdout.log"
        wait_for(lambda: "tasks ran on Slurm nodes ['0', '1']" in log.read_text(), timeout=240)
        sweep = status_json()["sweep"]["id"]
        assert _ray_processes(sweep)                                 # the cluster is up ...
        out = nrun("cancel", "last", timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
        launcher.communicate(timeout=120)
        assert status_json()["points"][0]["state"] == "CANCELLED"
        deadline = time.monotonic() + 30
        while _ray_processes(sweep) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not _ray_processes(sweep), _ray_processes(sweep)     # ... and gone, on both nodes
        assert not list(Path("/tmp").glob(f"nrun-ray-{status_json()['points'][0]['backend_id']}-*"))
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.communicate()


def test_ray_dry_run_shows_every_node_golden(home, tmp_path):
    """What each node runs: the head's and the workers' exact `ray start`, the driver, the stop."""
    from test_slurm_render import _dry_run, _golden

    text = _dry_run(tmp_path, "x=1", *RAY[:2], "hydra.launcher.nodes=3", "hydra.launcher.cpus_per_task=4",
                    "hydra.launcher.launcher.port_base=21000", "hydra.launcher.launcher.port_slots=50")
    assert "P=$(( 21000 + ((SLURM_JOB_ID * 3 + SLURM_NODEID) % 50) * 100 ))" in text
    assert "start --block --disable-usage-stats --temp-dir=/tmp/nrun-ray-$SLURM_JOB_ID-$SLURM_NODEID --head --port=$P" in text
    assert "#   nodes 1..2: <PYTHON> -m ray.scripts.scripts start --block" in text
    assert "--object-store-memory=80000000" in text and "--num-cpus=$SLURM_CPUS_ON_NODE" in text
    assert "the point above runs as the Ray driver, RAY_ADDRESS=<first node>:<P of node 0>" in text
    _golden("ray_3nodes", text)


@pytest.mark.parametrize("args, words", [
    (["hydra.launcher.ntasks_per_node=2"], ["ntasks_per_node=2 with nrun/launcher=ray", "keep ntasks_per_node=1"]),
    (["hydra.launcher.launcher.port_block=5"], ["port_block=5", "at least 12"]),
])
def test_bad_ray_settings_fail_before_anything_is_submitted(home, tmp_path, args, words):
    proc = run_app("sweep_app.py", SLURM, "x=1", "nrun/launcher=ray", *args, cwd=tmp_path,
                   env={"SLURM_CONF": "/nonexistent"})
    assert proc.returncode != 0
    for word in words:
        assert word in proc.stderr, proc.stderr[-2000:]
    assert nrun("list").stdout.count("\n") <= 1        # nothing recorded
