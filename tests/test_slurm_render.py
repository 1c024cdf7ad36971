"""nrun_slurm without a cluster: the dry run's sbatch scripts (golden files) and the settings checks.

Golden files live in tests/golden/slurm_*.sbatch, with this machine's paths and ids replaced by
placeholders. After an intended change, regenerate them with NRUN_UPDATE_GOLDEN=1 and review the
diff like code.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

from conftest import ROOT, nrun, run_app

GOLDEN = ROOT / "tests" / "golden"
SLURM = "hydra/launcher=nrun_slurm"
DRY = "hydra.launcher.dry_run=true"


def _normalise(text: str, tmp_path: Path) -> str:
    text = text.replace(str(tmp_path), "<TMP>").replace(sys.executable, "<PYTHON>").replace(str(ROOT), "<ROOT>")
    return re.sub(r"\d{8}-\d{6}-[0-9a-f]{4}", "<SWEEP_ID>", text)


def _dry_run(tmp_path: Path, *args: str) -> str:
    proc = run_app("sweep_app.py", SLURM, DRY, *args, cwd=tmp_path, check=True,
                   env={"SLURM_CONF": "/nonexistent/slurm.conf"})   # a dry run never contacts Slurm
    assert "nothing was submitted" in proc.stdout
    return _normalise(proc.stdout[proc.stdout.index("## "):], tmp_path)


def _golden(name: str, text: str) -> None:
    path = GOLDEN / f"slurm_{name}.sbatch"
    if os.environ.get("NRUN_UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert text == path.read_text(), f"dry run differs from {path}; NRUN_UPDATE_GOLDEN=1 to accept"


def test_array_script_golden(home, tmp_path):
    text = _dry_run(tmp_path, "x=1,2,3", "hydra.launcher.partition=debug", "hydra.launcher.time=01:30:00",
                    "hydra.launcher.mem=4G", "hydra.launcher.cpus_per_task=2",
                    "hydra.launcher.array_parallelism=2", "hydra.launcher.job_name=golden",
                    "+hydra.launcher.additional_parameters.mail_type=END",
                    "hydra.launcher.setup=[module load cuda,source env.sh]", "+hydra.launcher.env.PLAIN=1",
                    "hydra.launcher.dependencies=[afterok:1234,afterany:55_3]")
    assert "#SBATCH --array=0-2%2" in text and "#SBATCH --dependency=afterok:1234,afterany:55_3" in text
    assert "exec <PYTHON> -u -m submitit.core._submit" in text      # no srun: the worker is the job
    _golden("array", text)


def test_pyxis_container_script_golden(home, tmp_path):
    text = _dry_run(tmp_path, "x=1,2", "hydra.launcher.container_image='nvcr.io#nvidia/pytorch:24.01-py3'",
                    "hydra.launcher.container_mounts=[/data:/data:ro]", "hydra.launcher.srun_args=['--mpi=pmix']")
    assert "--container-image=nvcr.io#nvidia/pytorch:24.01-py3" in text
    assert ("--container-mounts=/data:/data:ro,<TMP>:<TMP>,<ROOT>/nrun_core/runtime:<ROOT>/nrun_core/runtime,"
            "<ROOT>/tests/apps:<ROOT>/tests/apps") in text    # the job dirs, the point runtime, the app
    assert "srun --unbuffered" in text and "python -u -m submitit.core._submit" in text
    _golden("pyxis", text)


def test_multinode_torchrun_script_golden(home, tmp_path):
    text = _dry_run(tmp_path, "x=1,2", "nrun/launcher=torchrun", "hydra.launcher.nodes=2",
                    "hydra.launcher.gpus_per_node=8", "hydra.launcher.exclusive=true",
                    "hydra.launcher.constraint=a100", "hydra.launcher.qos=high", "hydra.launcher.account=proj",
                    "hydra.launcher.max_num_timeout=2", "hydra.launcher.signal_delay_s=120")
    assert "#SBATCH --nodes=2" in text and "#SBATCH --gpus-per-node=8" in text and "#SBATCH --exclusive" in text
    assert "--nnodes=2 --nproc-per-node=8" in text and "#SBATCH --signal=USR2@120" in text
    assert "PET_NODE_RANK=$SLURM_NODEID" in text
    _golden("multinode", text)


def test_split_sweep_shows_every_array_golden(home, tmp_path):
    """A sweep larger than MaxArraySize: several arrays, each from index 0, sharing the throttle."""
    text = _dry_run(tmp_path, "x=1,2,3,4,5,6,7", "hydra.launcher.max_array_size=3",
                    "hydra.launcher.array_parallelism=3", "hydra.launcher.points_per_task=1",
                    "hydra.launcher.job_name=split")
    titles = [ln for ln in text.splitlines() if ln.startswith("## ")]
    assert titles == [
        "## sbatch script: array 1 of 4, 2 task(s) (sweep tasks 0-1), 2 point(s)",
        "## sbatch script: array 2 of 4, 2 task(s) (sweep tasks 2-3), 2 point(s)",
        "## sbatch script: array 3 of 4, 2 task(s) (sweep tasks 4-5), 2 point(s)",
        "## sbatch script: array 4 of 4, 1 task(s) (sweep tasks 6-6), 1 point(s)"]
    # %N shares add up to array_parallelism=3; the 4th array waits for the 1st (same lane)
    arrays = [ln for ln in text.splitlines() if ln.startswith("#SBATCH --array")]
    assert arrays == ["#SBATCH --array=0-1%1"] * 3       # the last array is one task: a plain job
    assert "runs once array 1 of this sweep has ended (--dependency=afterany" in text
    assert "MaxArraySize=3 from hydra.launcher.max_array_size" in text
    _golden("split", text)


def test_packed_points_script_golden(home, tmp_path):
    text = _dry_run(tmp_path, "x=1,2,3,4,5", "hydra.launcher.points_per_task=2", "hydra.launcher.timeout_s=90",
                    "hydra.launcher.job_name=packed")
    assert "#SBATCH --array=0-2" in text                  # 5 points in 3 array tasks
    assert "#SBATCH --time=4" in text                     # 2 x 90 s, rounded up, plus a minute
    assert "0: points #0, #1 (Slurm ids <array>_0:0..1)" in text
    _golden("packed", text)


@pytest.mark.parametrize("args, words", [
    (["hydra.launcher.points_per_task=2", "nrun/launcher=torchrun"], ["points_per_task=2", "in process"]),
    (["hydra.launcher.max_array_size=1"], ["hydra.launcher.max_array_size=1", "MaxArraySize"]),
    (["hydra.launcher.points_per_task=0"], ["hydra.launcher.points_per_task=0", ">= 1"]),
    (["hydra.launcher.partition='a\nb'"], ["hydra.launcher.partition", "newline"]),
    (["hydra.launcher.time=soon"], ["hydra.launcher.time='soon'", "HH:MM:SS"]),
    (["hydra.launcher.mem=lots"], ["hydra.launcher.mem='lots'"]),
    (["+hydra.launcher.additional_parameters.array=0-3"], ["additional_parameters.array", "array_parallelism"]),
    (["hydra.launcher.use_srun=false", "hydra.launcher.nodes=2"], ["use_srun=false", "srun"]),
    (["hydra.launcher.mode=inprocess", "nrun/launcher=torchrun"], ["mode=inprocess", "torchrun"]),
    (["hydra.launcher.dependencies=[afterwards:12]"], ["hydra.launcher.dependencies", "afterwards:12"]),
    (["hydra.launcher.exclusive=maybe"], ["hydra.launcher.exclusive"]),
    (["hydra.launcher.partiton=debug"], ["partiton"]),
])
def test_bad_settings_fail_before_anything_is_submitted(home, tmp_path, args, words):
    proc = run_app("sweep_app.py", SLURM, "x=1,2", *args, cwd=tmp_path, env={"SLURM_CONF": "/nonexistent"})
    assert proc.returncode != 0
    for word in words:
        assert word in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "multirun" / ".submitit").exists()
    assert nrun("list").stdout.count("\n") <= 1        # nothing recorded


def test_structured_config_is_registered_with_its_sbatch_options(tmp_path):
    import subprocess

    from conftest import APPS, PYTHON

    out = subprocess.run([PYTHON, str(APPS / "sweep_app.py"), "--cfg", "hydra", SLURM],
                         capture_output=True, text=True, cwd=tmp_path, check=True).stdout
    for key in ("NrunLauncher", "_executor_: slurm", "partition:", "account:", "qos:", "time:", "ntasks_per_node:", "gres:",
                "mem:", "constraint:", "exclude:", "nodelist:", "exclusive:", "array_parallelism:",
                "additional_parameters:", "srun_args:", "setup:", "use_srun:", "python:", "container_image:",
                "container_mounts:", "dependencies:", "max_num_timeout:", "ssh:", "known_hosts:"):
        assert key in out, key


def test_submit_limits_name_the_limit_and_the_fix():
    from nrun_core.errors import ConfigError
    from nrun_core.executors.slurm.limits import Limits

    assert Limits(max_array_size=1001).array_cap == 1000            # indices 0..MaxArraySize-1
    Limits(max_job_count=10000, queued_all=9980).check(20, 1)       # exactly fits
    with pytest.raises(ConfigError, match=r"MaxJobCount=10000 .* 9990 are queued .*points_per_task"):
        Limits(max_job_count=10000, queued_all=9990).check(20, 1)
    with pytest.raises(ConfigError, match=r"needs 5 Slurm job\(s\) \(2 array\(s\)\).*MaxSubmitJobs=4.*Nothing"):
        Limits(max_submit_jobs=4).check(5, 2)
