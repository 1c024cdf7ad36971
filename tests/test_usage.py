"""What each point used: recorded by the point runtime on every backend, by the backend for a
point that could not say (killed), kept in the store (old stores migrated), shown by `nrun status`
and the sweep's summary line."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys

import pytest

from conftest import PYTHON, nrun, run_app, status_json, wait_for
from nrun_core.executors.slurm import usage as slurm_usage
from nrun_core.store import Store

LOCAL = "hydra/launcher=nrun_local"


@pytest.mark.parametrize("mode", ["fork", "command"])
def test_every_point_records_wall_cpu_and_peak_rss(home, tmp_path, mode):
    proc = run_app("sweep_app.py", LOCAL, "action=burn", "seconds=0.5", "x=1,2", f"hydra.launcher.mode={mode}",
                   "hydra.launcher.progress=lines", cwd=tmp_path, check=True)
    for p in status_json()["points"]:
        u = p["usage"]
        assert u["cpu_s"] >= 0.5                # the burn alone is 0.5 CPU-s of this process
        assert u["wall_s"] > 0 and u["max_rss"] > 10 * 2**20
        assert "gpu_mem" not in u               # no GPU on this machine: left out, no error
    # the sweep's own summary line and `nrun status` columns
    assert "[nrun] sweep" in proc.stdout + proc.stderr and "2 points, " in proc.stdout + proc.stderr
    assert "CPU-s, peak RSS" in proc.stdout + proc.stderr
    out = nrun("status").stdout
    assert "WALL" in out and "CPU" in out and "PEAK RSS" in out and "MB" in out
    assert "used: 2 points" in out


def test_a_point_killed_at_its_timeout_gets_the_kernels_numbers(home, tmp_path):
    run_app("sweep_app.py", LOCAL, "action=sleep", "seconds=60", "hydra.launcher.timeout_s=1",
            "hydra.launcher.mode=command", cwd=tmp_path)
    (p,) = status_json()["points"]
    assert p["state"] == "TIMEOUT"
    assert p["usage"]["source"] == "backend" and p["usage"]["wall_s"] >= 1 and p["usage"]["cpu_s"] > 0


def _usage_in_subprocess(env: dict) -> dict:
    code = "import json; from nrun_core.runtime import point; point.mark_start(); print(json.dumps(point.usage()))"
    out = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, env=env, timeout=60, check=True)
    return json.loads(out.stdout)


def test_gpu_memory_is_left_out_without_nvidia_smi_and_read_with_it(tmp_path):
    env = {**os.environ, "PATH": str(tmp_path / "empty")}  # no nvidia-smi anywhere: no key, no error
    assert "gpu_mem" not in _usage_in_subprocess(env)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "nvidia-smi").write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    (broken / "nvidia-smi").chmod(stat.S_IRWXU)
    assert "gpu_mem" not in _usage_in_subprocess({**os.environ, "PATH": f"{broken}:{os.environ['PATH']}"})
    # A driver's view of this process holding 512 MiB (the tool's own output format), another's 64.
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nvidia-smi").write_text("#!/bin/sh\necho \"$PPID, 512\"\necho \"1, 64\"\n")
    (fake / "nvidia-smi").chmod(stat.S_IRWXU)
    got = _usage_in_subprocess({**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"})
    assert got["gpu_mem"] == 512 * 2**20


def test_an_older_store_gains_the_usage_column(tmp_path):
    db = tmp_path / "nrun.db"
    con = sqlite3.connect(db)
    con.executescript("""
        CREATE TABLE sweeps (id TEXT PRIMARY KEY, name TEXT, executor TEXT, created REAL, state TEXT,
            app TEXT, cwd TEXT, argv TEXT, sweep_dir TEXT, conf TEXT, artifact TEXT, detached INTEGER DEFAULT 0,
            supervisor_pid INTEGER, supervisor_start TEXT, backend_id TEXT, info TEXT,
            cancel_requested INTEGER DEFAULT 0, ended REAL);
        CREATE TABLE points (sweep_id TEXT, idx INTEGER, overrides TEXT, spec TEXT, state TEXT,
            backend_id TEXT, pid INTEGER, pid_start TEXT, attempts INTEGER DEFAULT 0, exit_code INTEGER,
            started REAL, ended REAL, error TEXT, value_repr TEXT, stdout TEXT, stderr TEXT,
            cancel_requested INTEGER DEFAULT 0, PRIMARY KEY (sweep_id, idx));
        CREATE TABLE events (sweep_id TEXT, idx INTEGER, time REAL, state TEXT, detail TEXT);
        INSERT INTO sweeps (id, name, state) VALUES ('old', 'old', 'COMPLETED');
        INSERT INTO points (sweep_id, idx, overrides, state) VALUES ('old', 0, '[]', 'COMPLETED');
    """)
    con.close()
    store = Store(db, create=False)
    assert store.points("old")[0]["usage"] is None      # the old point reads, with nothing recorded
    store.update_point("old", 0, usage={"cpu_s": 1.5})
    store.close()
    assert Store(db, create=False).points("old")[0]["usage"] == {"cpu_s": 1.5}


def test_slurm_durations_and_sizes_parse():
    assert slurm_usage.seconds("00:01.500") == 1.5
    assert slurm_usage.seconds("1-02:03:04") == 93784
    assert slurm_usage.seconds("") is None
    assert slurm_usage.size("2048K") == 2 * 2**20 and slurm_usage.size("1.5G") == int(1.5 * 2**30)
    got = slurm_usage.parse("7_3|00:00:09|00:04.250|\n7_3.batch|00:00:09|00:04.250|30720K\n"
                            "7_3.extern|00:00:09|00:00:00|1024K\n")
    assert got["7_3"] == {"source": "sacct", "wall_s": 9.0, "cpu_s": 4.25, "max_rss": 30 * 2**20}
    # no jobacct_gather plugin: TotalCPU reads 0 and MaxRSS is empty, which means unknown
    assert slurm_usage.parse("8|00:00:02|00:00:00|\n8.batch|00:00:02|00:00:00|\n")["8"] == \
        {"source": "sacct", "wall_s": 2.0}


def test_slurm_accounting_reports_a_tasks_cpu_and_wall(slurm_env, tmp_path):
    from nrun_core.executors.slurm.site import LocalSite

    import shlex

    burn = "import time\nt = time.process_time() + 1.0\nwhile time.process_time() < t: pass"
    out = subprocess.run(["sbatch", "--parsable", "-o", str(tmp_path / "out.txt"),
                          f"--wrap={shlex.quote(sys.executable)} -c {shlex.quote(burn)}"],
                         capture_output=True, text=True, timeout=60, env=slurm_env)
    assert out.returncode == 0, out.stderr
    job = out.stdout.strip().split(";")[0]
    site = LocalSite()

    def done():
        u = slurm_usage.of_task(site, job)
        return u if u and u.get("wall_s", 0) > 0 else None

    u = wait_for(done, timeout=120, step=0.5)
    assert u["wall_s"] >= 1, (u, (tmp_path / "out.txt").read_text())
    # TotalCPU needs a jobacct_gather plugin (the sandbox has none): present and right, or absent
    assert u.get("cpu_s", 1.0) >= 0.9


OOM_APP = """\
import hydra

@hydra.main(version_base=None, config_path=None, config_name=None)
def main(cfg):
    blocks = [bytearray(1024 * 1024) for _ in range(int(cfg.mb))]
    return len(blocks)

main()
"""


def test_docker_points_report_from_the_container_and_the_engine(docker_env, home, tmp_path):
    """A point that ran reports its own usage from inside its container; one the kernel killed
    (OOM) gets what the engine still knew before the container was removed."""
    from conftest import make_project

    proj = make_project(tmp_path)
    (proj / "oom_app.py").write_text(OOM_APP)
    proc = subprocess.run([PYTHON, "oom_app.py", "-m", "hydra/launcher=nrun_docker",
                           f"hydra.launcher.image={os.environ['NRUN_SANDBOX_IMAGE']}",
                           '++hydra.launcher.labels={nrun.sandbox:"1"}', "hydra.launcher.progress=lines",
                           "+mb=8,400", "hydra.launcher.mem_limit=64m", f"hydra.sweep.dir={tmp_path}/multirun"],
                          cwd=proj, capture_output=True, text=True, timeout=240, env=dict(os.environ))
    assert proc.returncode != 0
    points = {p["idx"]: p for p in status_json()["points"]}
    ran, killed = points[0]["usage"], points[1]["usage"]
    assert ran["cpu_s"] > 0 and ran["max_rss"] > 8 * 2**20 and "source" not in ran
    assert killed["source"] == "docker" and killed["oom_killed"] is True and killed["wall_s"] > 0
    assert "2 points, " in proc.stdout + proc.stderr


from docker_fixtures import docker_env, docker_sandbox  # noqa: E402,F401  (shared backend fixtures)
