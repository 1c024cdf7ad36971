"""Bring the store back in line with reality after a launcher or supervisor died.

A sweep's points are watched by one process (the foreground launcher, or the detached
supervisor). If that process is gone while points are not finished, whoever reads the store next
settles them: a point still running at the backend stays RUNNING; one that ended is settled from
the result file it left; one that never started is marked LOST, so nothing stays in limbo.
"""

from __future__ import annotations

import time
from typing import Any, Dict

from nrun_core import procs
from nrun_core.executors import executor_class
from nrun_core.runtime.result import COMPLETED as R_COMPLETED, read_result
from nrun_core.spec import JobSpec
from nrun_core.store import COMPLETED, FAILED, LOST, PENDING, RUNNING, TERMINAL, Store, sweep_state


def supervised(sweep: Dict[str, Any]) -> bool:
    return procs.alive(sweep.get("supervisor_pid"), sweep.get("supervisor_start"))


def reconcile(store: Store, sweep: Dict[str, Any]) -> bool:
    """Settle the points of an unsupervised sweep; True if anything changed."""
    if sweep["state"] in TERMINAL or supervised(sweep):
        return False
    cls = executor_class(sweep["executor"])
    changed = False
    still_running = False
    for p in store.points(sweep["id"]):
        if p["state"] in TERMINAL:
            continue
        if p["state"] == RUNNING and cls.probe_recorded(sweep, p):
            still_running = True
            continue
        changed = True
        if p["state"] == PENDING:
            store.update_point(sweep["id"], p["idx"], state=LOST, ended=time.time(),
                               error="never started: its launcher died",
                               detail=f"never started: launcher/supervisor pid {sweep['supervisor_pid']} died")
            continue
        result = read_result(JobSpec.from_json(p["spec"]).result_file) if p["spec"] else None
        if result and result["status"] == R_COMPLETED:
            store.update_point(sweep["id"], p["idx"], state=COMPLETED, ended=result.get("time", time.time()),
                               value_repr=result.get("repr"), detail="settled from its result file")
        elif result:
            store.update_point(sweep["id"], p["idx"], state=FAILED, ended=result.get("time", time.time()),
                               error=f"{result.get('error_type')}: {result.get('error')}",
                               detail="settled from its result file")
        else:
            store.update_point(sweep["id"], p["idx"], state=LOST, ended=time.time(),
                               error="ended unwatched without a result",
                               detail="process gone, no result file")
    if not still_running:
        store.update_sweep(sweep["id"], state=sweep_state(store.counts(sweep["id"])), ended=time.time())
        changed = True
    return changed
