"""nrun_ssh without any host up: the dry run's per-host requests (pinned by golden files) and
setting errors caught before anything is sent.

Golden files: tests/golden/ssh_*.txt; paths, ids and digests are normalised. After an intended
change, regenerate with NRUN_UPDATE_GOLDEN=1 and review the diff.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from conftest import PYTHON, make_project
from dryrun import TRICKY, check_golden, normalised

HOSTS = """\
hosts:
  - {name: gpu1, address: 10.99.0.1, user: alice, key_file: /keys/id, slots: 2, python: /opt/py/bin/python,
     remote_dir: /scratch/nrun}
  - bob@10.99.0.2:2222
"""


def dry_run(tmp_path: Path, *args: str) -> str:
    proj = make_project(tmp_path)
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text(HOSTS)
    out = subprocess.run([PYTHON, "sweep_app.py", "-m", "hydra/launcher=nrun_ssh", "hydra.launcher.dry_run=true",
                          f"hydra.launcher.hosts_file={hosts}", *args, f"hydra.sweep.dir={tmp_path}/multirun"],
                         cwd=proj, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "MY_TOKEN": "s3cr3t-dry"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "s3cr3t-dry" not in out.stdout + out.stderr
    text = normalised(out.stdout + out.stderr, tmp_path)
    return re.sub(r"lib/[0-9a-f]{16}", "lib/<LIB>", re.sub(r"code/[0-9a-f]{16,64}", "code/<DIGEST>", text))


def test_dry_run_of_single_host_points(home, tmp_path):
    value = "'" + TRICKY.replace("\\", "\\\\").replace("'", "\\'") + "'"
    text = dry_run(tmp_path, "x=1,2", f"msg={value}", "hydra.launcher.secret_env=[MY_TOKEN]",
                   "hydra.launcher.setup=[source /opt/env.sh]", "hydra.launcher.timeout_s=60")
    check_golden("ssh_points.txt", text)


def test_dry_run_of_a_two_host_torchrun_point_in_containers(home, tmp_path):
    text = dry_run(tmp_path, "x=1", "nrun/launcher=torchrun", "hydra.launcher.nodes=2",
                   "hydra.launcher.container.image=nvcr.io/nvidia/pytorch:24.05-py3",
                   "hydra.launcher.container.shm_size=16g", "hydra.launcher.gpus_per_node=0")
    check_golden("ssh_torchrun_2hosts_container.txt", text)
