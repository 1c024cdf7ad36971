"""nrun_skypilot without any cloud: the dry run's sky.Task per point (pinned by golden files,
parsed by SkyPilot itself, offline), setting errors, the log channel that brings a point's files
back, and the import cost (`import sky` only when nrun_skypilot is selected).

What runs for real elsewhere (tests/test_skypilot.py, the Slurm sandbox as SkyPilot infra): sky
launch/exec/tail_logs/cancel/down. Clouds, spot and GPUs are exercised only here, by rendering.

Golden files: tests/golden/skypilot_*.txt; regenerate with NRUN_UPDATE_GOLDEN=1 and review.
"""

from __future__ import annotations

import base64
import io
import os
import re
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest

from conftest import PYTHON, make_project
from test_docker_dryrun import TRICKY, check_golden, normalised

SANDBOX_VARS = ("NRUN_SKYPILOT_INFRA", "NRUN_SKYPILOT_PYTHON", "NRUN_SKYPILOT_PREPARE", "SKYPILOT_CONFIG",
                "SKYPILOT_API_SERVER_ENDPOINT", "SKYPILOT_API_SERVER_LOCAL_PORT")


def offline_env(tmp_path: Path) -> dict:
    """No sandbox settings, SkyPilot's state in the test's dir, and no network proxy to lean on."""
    env = {k: v for k, v in os.environ.items() if k not in SANDBOX_VARS}
    env.update({"SKY_RUNTIME_DIR": str(tmp_path / "skyrt"), "MY_TOKEN": "s3cr3t-sky-dry",
                "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"})
    return env


def dry_run(tmp_path: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proj = make_project(tmp_path)
    out = subprocess.run([PYTHON, "sweep_app.py", "-m", "hydra/launcher=nrun_skypilot", "hydra.launcher.dry_run=true",
                          *args, f"hydra.sweep.dir={tmp_path}/multirun"],
                         cwd=proj, capture_output=True, text=True, timeout=180, env=offline_env(tmp_path))
    if check:
        assert out.returncode == 0, out.stderr[-3000:]
        assert "s3cr3t-sky-dry" not in out.stdout + out.stderr
    return out


def golden_text(out: subprocess.CompletedProcess, tmp_path: Path) -> str:
    return re.sub(r"lib/[0-9a-f]{16}", "lib/<LIB>", normalised(out.stdout + out.stderr, tmp_path))


def test_dry_run_of_aws_a100_spot_points(home, tmp_path):
    """The AWS A100 spot request a user would send, rendered offline and parsed by sky.Task."""
    value = "'" + TRICKY.replace("\\", "\\\\").replace("'", "\\'") + "'"
    out = dry_run(tmp_path, "x=1,2", f"msg={value}", "hydra.launcher.infra=aws/us-east-1", "hydra.launcher.gpus=A100",
                  "hydra.launcher.gpus_per_node=8", "hydra.launcher.use_spot=true", "hydra.launcher.disk_size=500",
                  "hydra.launcher.cpus=32+", "hydra.launcher.secret_env=[MY_TOKEN]",
                  "+hydra.launcher.env.WANDB_PROJECT=sweeps", "hydra.launcher.setup=[pip install -r requirements.txt]",
                  "hydra.launcher.idle_minutes_to_autostop=10", "hydra.launcher.python=python3")
    text = golden_text(out, tmp_path)
    assert "use_spot: true" in text and "accelerators: A100:8" in text and "MY_TOKEN: <from the launching shell>" in text
    check_golden("skypilot_aws_a100_spot.txt", text)


def test_dry_run_of_a_two_node_torchrun_point(home, tmp_path):
    """num_nodes=2: torchrun's rendezvous comes from SkyPilot's node list and rank."""
    out = dry_run(tmp_path, "x=1", "nrun/launcher=torchrun", "hydra.launcher.nodes=2", "hydra.launcher.gpus=H100",
                  "hydra.launcher.gpus_per_node=8", "hydra.launcher.infra=k8s", "hydra.launcher.python=python3",
                  "hydra.launcher.container_image=nvcr.io/nvidia/pytorch:24.05-py3")
    text = golden_text(out, tmp_path)
    assert 'PET_RDZV_ENDPOINT="$head:29500"' in text and "num_nodes: 2" in text
    check_golden("skypilot_torchrun_2nodes.txt", text)


@pytest.mark.parametrize("args, names", [
    (("hydra.launcher.clusters=many",), "hydra.launcher.clusters='many'"),
    (("hydra.launcher.teardown=never",), "hydra.launcher.teardown='never'"),
    (("hydra.launcher.gpus_per_node=2",), "hydra.launcher.gpus=A100"),
    (("hydra.launcher.cluster_name=9bad name",), "hydra.launcher.cluster_name"),
    (("hydra.launcher.managed=true", "hydra.launcher.cluster_name=mine"), "hydra.launcher.managed=true"),
    (("hydra.launcher.infra=nocloud",), "nocloud"),
])
def test_bad_settings_are_named_before_anything_is_sent(home, tmp_path, args, names):
    out = dry_run(tmp_path, "x=1", *args, check=False)
    assert out.returncode != 0
    assert names in out.stderr, out.stderr[-2000:]


def _tar_b64(src: Path, name: str) -> str:
    (src / ".hydra").mkdir(parents=True)
    (src / ".hydra" / "config.yaml").write_text(f"x: {name}\n")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(src, arcname=".")
    return base64.b64encode(buf.getvalue()).decode()


def _end_lines(node: int, code: int, b64: str = "", result: bool = False) -> list:
    """What remote.py prints when the point ends on that node."""
    from nrun_core.executors.skypilot.remote import BEGIN, DATA, END

    block = [f"{BEGIN} s 0 node={node} result={int(result)}"] if b64 else []
    block += [f"{DATA}{node} {b64[i:i + 76]}" for i in range(0, len(b64), 76)]
    return block + [f"{END} node={node} {code}"]


def _sink(job_dir: Path, nodes: int = 1):
    from nrun_core.executors.skypilot.executor import _LogSink

    return _LogSink(str(job_dir / "stdout.log"), str(job_dir / "stderr.log"), nodes=nodes)


def _feed(sink, log: str) -> None:
    for i in range(0, len(log), 7):  # in pieces, as the stream arrives
        sink.write(log[i:i + 7])
    sink.close()


def test_a_points_files_come_back_through_its_log(tmp_path):
    """The node's end marker carries the job dir; the lines before it land in stdout.log and, those
    the node marked as stderr's, in stderr.log (SkyPilot's own lines go with stdout)."""
    from nrun_core.executors.skypilot.executor import _unpack
    from nrun_core.executors.skypilot.remote import ERR

    b64 = _tar_b64(tmp_path / "node", "1")
    sink = _sink(tmp_path / "job")
    prefix = "\x1b[36m(sky-cmd, pid=42)\x1b[0m "
    lines = ["point x=1", f"{ERR}to-stderr", f"{ERR}Traceback (most recent call last):", *_end_lines(0, 3, b64)]
    _feed(sink, "├── Waiting for task resources on 1 node.\n" + "".join(f"{prefix}{line}\n" for line in lines))
    assert (tmp_path / "job" / "stdout.log").read_text() == "├── Waiting for task resources on 1 node.\npoint x=1\n"
    assert (tmp_path / "job" / "stderr.log").read_text() == "to-stderr\nTraceback (most recent call last):\n"
    assert sink.exit_code == 3
    _unpack(sink.files, str(tmp_path / "job"))
    assert (tmp_path / "job" / ".hydra" / "config.yaml").read_text() == "x: 1\n"


def test_two_nodes_files_come_from_the_node_with_the_result(tmp_path):
    """torchrun's rank 0 (the one that writes the result) ran on node 1: its files come back, not
    node 0's; the nodes' interleaved lines stay whole and marked; a failed node fails the point."""
    from nrun_core.executors.skypilot.executor import _unpack
    from nrun_core.executors.skypilot.remote import DATA

    head = _end_lines(0, 0, _tar_b64(tmp_path / "n0", "node0"))
    worker = _end_lines(1, 0, _tar_b64(tmp_path / "n1", "node1"), result=True)
    lines = [("0", "hello from node 0"), ("1", "hello from node 1")]
    for a, b in zip(head + [""] * len(worker), worker + [""] * len(head)):  # line by line, alternating
        lines += [("0", a)] * bool(a) + [("1", b)] * bool(b)
    log = "".join(f"\x1b[36m(head, rank={n}, pid=4{n})\x1b[0m {text}\n" for n, text in lines)
    sink = _sink(tmp_path / "job", nodes=2)
    _feed(sink, log)
    assert (tmp_path / "job" / "stdout.log").read_text() == "[node 0] hello from node 0\n[node 1] hello from node 1\n"
    assert sink.exit_code == 0
    _unpack(sink.files, str(tmp_path / "job"))
    assert (tmp_path / "job" / ".hydra" / "config.yaml").read_text() == "x: node1\n"

    # As seen in CI: SkyPilot wrote node 1's lines into the middle of one of node 0's, and the
    # rest of node 0's line came later with no prefix. The files still come back whole.
    p0, p1 = "\x1b[36m(head, rank=0, pid=40)\x1b[0m ", "\x1b[36m(head, rank=1, pid=41)\x1b[0m "
    node0 = _end_lines(0, 0, _tar_b64(tmp_path / "n0b", "cut"), result=True)
    cut = next(i for i, x in enumerate(node0) if x.startswith(DATA) and len(x) > 40)
    line = node0[cut]
    log = "".join(f"{p0}{x}\n" for x in node0[:cut])
    log += f"{p0}{line[:40]}{p1}\n{p1}hello from node 1\n" + "".join(f"{p1}{x}\n" for x in _end_lines(1, 0, ""))
    log += f"{line[40:]}\n" + "".join(f"{p0}{x}\n" for x in node0[cut + 1:])
    sink = _sink(tmp_path / "jobcut", nodes=2)
    _feed(sink, log)
    assert sink.garbled == "" and sink.exit_code == 0
    _unpack(sink.files, str(tmp_path / "jobcut"))
    assert (tmp_path / "jobcut" / ".hydra" / "config.yaml").read_text() == "x: cut\n"
    assert "[node 1] hello from node 1\n" in (tmp_path / "jobcut" / "stdout.log").read_text()

    sink = _sink(tmp_path / "job2", nodes=2)
    _feed(sink, "".join(f"(head, rank={n}, pid=1) {t}\n" for n, t in
                        [(0, x) for x in _end_lines(0, 0, "")] + [(1, x) for x in _end_lines(1, 7, "")]))
    assert sink.exit_code == 7 and sink.files is None
    sink = _sink(tmp_path / "job3", nodes=2)
    _feed(sink, "".join(f"(head, rank=0, pid=1) {t}\n" for t in _end_lines(0, 0, "")))
    assert sink.exit_code is None  # node 1 never said how it ended: not a success


class _Stream:
    """A point's pipe as the node's pump reads it: these (chunk, wait for this event first) in turn;
    `asked[i]` is set when the pump asks for the i-th read (it has dealt with all before it)."""

    def __init__(self, chunks: list) -> None:
        self.chunks = chunks
        self.asked = [threading.Event() for _ in range(len(chunks) + 1)]
        self._n = 0

    def read1(self, n: int) -> bytes:
        self.asked[self._n].set()
        self._n += 1
        if not self.chunks:
            return b""
        data, go = self.chunks.pop(0)
        if go is not None:
            assert go.wait(10)
        return data


def test_the_nodes_log_gets_each_streams_lines_whole(tmp_path):
    """Unbuffered print() writes its text and its newline apart: stdout's line, written in
    between, must not land inside stderr's (CI saw "to-stderrpoint x=5" and lost both lines)."""
    from nrun_core.executors.skypilot.remote import ERR, _pump

    err = _Stream([(b"to-stderr", None), (b"\nTraceback", None), (b" (most recent call last):\n", None),
                   (b"no end", None)])
    out = _Stream([(b"point x=5\n", err.asked[1])])  # once stderr's first piece is dealt with
    err.chunks[1] = (b"\nTraceback", out.asked[1])  # once stdout's line is dealt with
    log, lock = io.BytesIO(), threading.Lock()
    files = {name: open(tmp_path / name, "wb") for name in ("stdout.log", "stderr.log")}
    pumps = [threading.Thread(target=_pump, args=(err, files["stderr.log"], log, lock, ERR.encode())),
             threading.Thread(target=_pump, args=(out, files["stdout.log"], log, lock))]
    for t in pumps:
        t.start()
    for t in pumps:
        t.join(10)
    for f in files.values():
        f.close()
    assert log.getvalue().decode().splitlines() == [      # stderr's lines marked, for the launcher to split
        "point x=5", f"{ERR}to-stderr", f"{ERR}Traceback (most recent call last):", f"{ERR}no end"]
    assert (tmp_path / "stderr.log").read_bytes() == b"to-stderr\nTraceback (most recent call last):\nno end"
    assert (tmp_path / "stdout.log").read_bytes() == b"point x=5\n"


def test_files_that_would_land_outside_the_job_dir_are_refused(tmp_path):
    from nrun_core.executors.skypilot.executor import _unpack

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = b"pwned"
        info = tarfile.TarInfo("../outside.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(tarfile.TarError):
        _unpack(buf.getvalue(), str(tmp_path / "job"))
    assert not (tmp_path / "outside.txt").exists()


def test_a_shell_whose_server_is_down_gets_an_error_and_no_server(monkeypatch, tmp_path):
    """`nrun status` asks the server the sweep recorded; when none answers, the point's state is
    not settled from silence (BackendError naming the server and the fix), and SkyPilot's client
    does not start a local server of its own; a server URL with credentials is never recorded."""
    from nrun_core.errors import BackendError
    from nrun_core.executors.skypilot.control import SkypilotControl, server_to_record

    for k in SANDBOX_VARS:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("SKY_RUNTIME_DIR", str(tmp_path / "sky"))
    point = {"idx": 0, "backend_id": "nrun-x/3"}
    for info, named in (({"skypilot_api_server": "http://127.0.0.1:9"}, "http://127.0.0.1:9"),
                        ({}, "this shell's SkyPilot API server")):
        with pytest.raises(BackendError, match="did not answer") as err:
            SkypilotControl({"id": "s", "info": info}).describe([point])
        assert named in str(err.value) and "nrun sandbox skypilot up" in str(err.value)
    assert not list((tmp_path / "sky").rglob("*server*"))  # no local server was started
    monkeypatch.setenv("SKYPILOT_API_SERVER_ENDPOINT", "https://me:s3cr3t@sky.example.com")
    assert server_to_record() == {}
    monkeypatch.setenv("SKYPILOT_API_SERVER_ENDPOINT", "https://sky.example.com/")
    assert server_to_record() == {"skypilot_api_server": "https://sky.example.com"}


def test_sky_is_imported_only_when_nrun_skypilot_is_selected(home, tmp_path):
    """A Hydra app on another launcher (or none) never imports sky: plugin discovery stays cheap."""
    proj = make_project(tmp_path)
    for args in (["x=1"], ["-m", "hydra/launcher=nrun_local", "x=1"]):
        out = subprocess.run([PYTHON, "-X", "importtime", "sweep_app.py", *args, "action=ok",
                              f"hydra.sweep.dir={tmp_path}/multirun", f"hydra.run.dir={tmp_path}/run"],
                             cwd=proj, capture_output=True, text=True, timeout=120, env=offline_env(tmp_path))
        assert out.returncode == 0, out.stderr[-2000:]
        imported = {m.group(1) for m in re.finditer(r"\|\s+(\S+)\s*$", out.stderr, re.MULTILINE)}
        assert "nrun_core.executors.skypilot.executor" not in imported
        assert not {m for m in imported if m == "sky" or m.startswith("sky.")}, args


def test_cluster_per_point_and_managed_jobs_are_rendered(home, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    out = dry_run(tmp_path / "a", "x=1,2", "hydra.launcher.clusters=per_point", "hydra.launcher.cluster_name=mine",
                  "hydra.launcher.infra=gcp")
    assert "sky.launch(cluster_name='mine-0'" in out.stdout and "sky.launch(cluster_name='mine-1'" in out.stdout
    assert "down=True" in out.stdout                                  # teardown=auto: gone when its point ends
    out = dry_run(tmp_path / "b", "x=1", "hydra.launcher.managed=true", "hydra.launcher.use_spot=true",
                  "hydra.launcher.infra=aws")
    assert "sky.jobs.launch (managed job)" in out.stdout and "use_spot: true" in out.stdout


def test_managed_jobs_on_slurm_are_refused_before_anything_is_sent(home, tmp_path):
    """SkyPilot 0.14 will not run its jobs controller on Slurm and retries the launch forever
    (seen on the sandbox): nrun says so at once, naming the setting and what to use instead."""
    out = dry_run(tmp_path, "x=1", "hydra.launcher.managed=true", "hydra.launcher.infra=slurm/mycluster", check=False)
    assert out.returncode != 0
    assert "hydra.launcher.managed=true on infra slurm/mycluster" in out.stderr and "clusters=shared" in out.stderr
