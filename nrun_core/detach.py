"""`hydra.launcher.wait=false`: hand a sweep's points to a supervisor that outlives the launcher.

The supervisor is a double fork of the launcher (it keeps the composed configs and the task
function, so fork-mode points work detached too), in its own session, writing its log to
``NRUN_HOME/supervisors/<sweep>.log``. Backends that submit to a scheduler submit before the
fork, so a refused request is the user's error, not a line in that log. SIGTERM to the
supervisor cancels its points, as Ctrl-C does in the foreground.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from typing import Any, Dict, List

from nrun_core import procs
from nrun_core.errors import NrunError
from nrun_core.progress import LinesView, QuietView, Row
from nrun_core.runner import Interrupted, Terminated
from nrun_core.spec import JobSpec
from nrun_core.store import Store


def detach(sweep: Any, executor: Any, specs: List[JobSpec], rows: Dict[int, Row]) -> None:
    from nrun_core.paths import nrun_home

    sweep_id = sweep.sweep_id or ""
    started = executor.start_before_detach
    if started:  # a Ctrl-C here cancels what was submitted (Interrupted reaches the launcher)
        sweep.runner(executor, specs, rows, QuietView(sweep_id, rows)).submit()
    log_file = nrun_home() / "supervisors" / f"{sweep_id}.log"
    log_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    r, w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    if sweep._store is not None:  # SQLite connections must not cross a fork: both sides reopen
        sweep._store.close()
        sweep._store = None
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(r)
            os.setsid()
            if os.fork():
                os._exit(0)
            fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            sys.stdout = open(1, "w", buffering=1, closefd=False)
            sys.stderr = open(2, "w", buffering=1, closefd=False)
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # the launching terminal's Ctrl-C is not ours
            signal.signal(signal.SIGTERM, _terminate)
            sweep._store = Store()
            sweep.store.update_sweep(sweep_id, supervisor_pid=os.getpid(),
                                     supervisor_start=procs.start_time(os.getpid()))
            os.write(w, b"ok")
            os.close(w)
            try:
                sweep.runner(executor, specs, rows, LinesView(sweep_id, rows)).run(submitted=started)
            except Interrupted as stop:
                print(f"[nrun] supervisor of sweep {sweep_id}: cancelled by {stop.why}", flush=True)
            sweep.finish()
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    os.waitpid(pid, 0)
    ok = os.read(r, 8)
    os.close(r)
    if ok != b"ok":
        raise NrunError(f"the detached supervisor of sweep {sweep_id} did not start; see {log_file}")
    print(f"[nrun] sweep {sweep_id}: {len(specs)} point(s) submitted, running detached.\n"
          f"       follow: nrun status {sweep_id}   logs: nrun logs {sweep_id} [POINT] --follow"
          f"   cancel: nrun cancel {sweep_id}", file=sys.stderr)


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated()
