"""Runs one sweep point on a SkyPilot node (shipped in the task's workdir as ``nrun_sky.py``).

Standard library only (3.8+): the node's Python may lack nrun. Called from the task's ``run``:

    python lib/nrun_sky.py points/IDX.json

It unpacks the sweep's code once per node (nrun's own safe unpacker), gives the point a job dir
of its own under ``remote_dir`` (the launcher's absolute path rarely exists there), runs the point
runtime with its stdout/stderr going both to the job dir's logs and to SkyPilot's job log (in
whole lines, stderr's marked, so the launcher shows each stream live where it belongs), and
ends by printing its exit code and the job dir (`.hydra/`, outputs, result) as a base64 tar in
marked lines: SkyPilot's log is the one channel every infra has, so the files come back through it.
Multi-node: every node prints its exit code; the files come from the node whose worker wrote the
result (torchrun's rank 0 may land on any node) and from node 0. Each marked line names its node,
so the nodes' interleaved lines are told apart whatever SkyPilot puts before them.
SIGTERM/SIGINT (sky cancel) go to the point's whole process group.
"""

import base64
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

BEGIN = "@@nrun-sky-files-begin"   # BEGIN <sweep> <index> node=<rank> result=<0|1>
DATA = "@@nrun-sky-data"           # DATA<rank> <base64 chunk>
END = "@@nrun-sky-files-end"       # END node=<rank> <exit code>
LINE = 76
HOLD = 1 << 16  # a partial line is held back from SkyPilot's log up to this many bytes
ERR = "\x1b[0;39m"  # starts each stderr line in SkyPilot's log: invisible on a terminal, tells the launcher


def _pump(src, job_log, sky_log, lock, mark=b""):
    """One of the point's streams into its own file in the job dir, as it comes, and into SkyPilot's
    log, which both streams share, in whole lines: a partial line (``print`` writes the text and its
    newline apart when unbuffered) is held until its end, so the other stream's output never lands
    inside it. Each line there starts with `mark` (stderr's), so the launcher can split them again.
    A line longer than HOLD goes out in pieces; the last one gets its end at EOF."""
    rest, at_start = b"", True
    for chunk in iter(lambda: src.read1(65536) if hasattr(src, "read1") else src.read(65536), b""):
        job_log.write(chunk)
        job_log.flush()
        buf = rest + chunk
        cut = buf.rfind(b"\n") + 1
        if not cut and len(buf) >= HOLD:
            cut = len(buf)
        if cut:
            with lock:
                sky_log.write(_marked(buf[:cut], mark, at_start))
                sky_log.flush()
            at_start = buf[cut - 1:cut] == b"\n"
        rest = buf[cut:]
    if rest:
        with lock:
            sky_log.write(_marked(rest + b"\n", mark, at_start))
            sky_log.flush()


def _marked(data, mark, at_start):
    """`data` with `mark` before each line that starts in it."""
    if not mark:
        return data
    head = mark if at_start else b""
    return head + data[:-1].replace(b"\n", b"\n" + mark) + data[-1:]


def _files(job_dir, limit):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(job_dir, arcname=".")
    data = buf.getvalue()
    if len(data) > limit:
        buf = io.BytesIO()  # too big: the result and `.hydra/` only, named in the log
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            for sub in (".hydra", ".nrun"):
                if os.path.exists(os.path.join(job_dir, sub)):
                    tar.add(os.path.join(job_dir, sub), arcname=sub)
        sys.stdout.write("nrun: the job dir is %d bytes packed, over max_files_mb: only .hydra/ and the "
                         "result come back; the rest stays in %s\n" % (len(data), job_dir))
        sys.stdout.flush()  # before the end block, which goes to sys.stdout.buffer
        data = buf.getvalue()
    return base64.b64encode(data).decode()


def main(argv):
    point = json.load(open(argv[0]))
    home = os.path.expanduser("~")
    root = point["remote_dir"] if os.path.isabs(point["remote_dir"]) else os.path.join(home, point["remote_dir"])
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, here)
    import nrun_unpack  # nrun's safe unpacker, shipped beside this file

    code_dir = os.path.join(root, "code", point["artifact"])
    try:
        nrun_unpack.unpack(Path(os.getcwd(), point["archive"]), Path(code_dir))
    except nrun_unpack.UnpackError as e:  # a refused archive, over a limit: say why, run nothing
        sys.stderr.write("nrun unpack: %s\n" % e)
        return 2
    rank = int(os.environ.get("SKYPILOT_NODE_RANK", "0") or 0)
    job_dir = os.path.join(root, "jobs", point["sweep_id"], "%s-a%s" % (point["index"], point["attempt"]),
                           point["job_name"])
    if rank:
        job_dir = os.path.join(os.path.dirname(job_dir), "node%d" % rank, point["job_name"])
    shutil.rmtree(job_dir, ignore_errors=True)
    nrun_dir = os.path.join(job_dir, ".nrun", point["sweep_id"])
    os.makedirs(nrun_dir)
    payload = os.path.join(nrun_dir, "point.json")
    with open(payload, "w") as f:
        json.dump(point["payload"], f)
    env = dict(os.environ)
    env.update({"NRUN_CODE_DIR": code_dir, "NRUN_JOB_DIR": job_dir,
                "NRUN_RESULT_FILE": os.path.join(nrun_dir, "result.json")})
    words = {"{python}": point["python"], "{runtime}": os.path.join(here, "nrun_point.py"), "{payload}": payload}
    argv = [words.get(w, w) for w in point["command"]]
    cwd = os.path.normpath(os.path.join(code_dir, point["workdir"]))
    out = open(os.path.join(job_dir, "stdout.log"), "ab")
    err = open(os.path.join(job_dir, "stderr.log"), "ab")
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)

    def forward(signum, frame):
        try:
            os.killpg(proc.pid, signum)
        except OSError:
            pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    lock = threading.Lock()
    log = sys.stdout.buffer
    pumps = [threading.Thread(target=_pump, args=(proc.stdout, out, log, lock)),
             threading.Thread(target=_pump, args=(proc.stderr, err, log, lock, ERR.encode()))]
    for t in pumps:
        t.start()
    code = proc.wait()
    for t in pumps:
        t.join()
    out.close()
    err.close()
    has_result = os.path.exists(env["NRUN_RESULT_FILE"])
    block = ""
    if rank == 0 or has_result:
        text = _files(job_dir, int(float(point["max_files_mb"]) * 1024 * 1024))
        block = "%s %s %s node=%d result=%d\n" % (BEGIN, point["sweep_id"], point["index"], rank, has_result)
        block += "".join("%s%d %s\n" % (DATA, rank, text[i:i + LINE]) for i in range(0, len(text), LINE))
    with lock:
        log.write(("%s%s node=%d %d\n" % (block, END, rank, code)).encode())  # the pumps ended their lines
        log.flush()
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
