"""Bring the store back in line with reality after a launcher or supervisor died.

A sweep's points are watched by one process (the foreground launcher, or the detached
supervisor). If that process is gone while points are not finished, whoever reads the store next
settles them through the executor's stateless ``Control``: a point still queued or running at
the backend stays so; one that ended is settled from the result file it left (its own: tied to
the sweep, the point and its overrides); one that never started is marked LOST, so nothing stays
in limbo. A backend that cannot be asked at all (its API server down) raises BackendError from
``describe``: then nothing is settled, since silence is not an ending.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Dict

from nrun_core import procs, registry
from nrun_core.errors import BackendError
from nrun_core.executors.base import ENDED, RUNNING as BACKEND_RUNNING
from nrun_core.runtime.result import COMPLETED as R_COMPLETED, read_result
from nrun_core.spec import JobSpec
from nrun_core.store import COMPLETED, FAILED, LOST, PENDING, QUEUED, RUNNING, TERMINAL, Store, sweep_state


def supervised(sweep: Dict[str, Any]) -> bool:
    return procs.alive(sweep.get("supervisor_pid"), sweep.get("supervisor_start"))


def control(sweep: Dict[str, Any]) -> Any:
    """The stateless Control of the sweep's executor."""
    return registry.load(registry.by_name(sweep["executor"]).executor).control(sweep)


def reconcile(store: Store, sweep: Dict[str, Any]) -> bool:
    """Settle the points of an unsupervised sweep; True if anything changed."""
    if sweep["state"] in TERMINAL or supervised(sweep):
        return False
    live = [p for p in store.points(sweep["id"]) if p["state"] not in TERMINAL]
    ctl = control(sweep)
    try:
        states = ctl.describe([p for p in live if p["state"] != PENDING]) if live else {}
    except BackendError as exc:  # the backend could not be asked at all: nothing is settled from silence
        print(f"nrun: sweep {sweep['id']}: {exc}", file=sys.stderr)
        return False
    finally:
        ctl.close()
    changed = still_running = False
    for p in live:
        st = states.get(p["idx"])
        if st is not None and st.state != ENDED:
            still_running = True
            if st.state == BACKEND_RUNNING and p["state"] == QUEUED:  # it started while nobody watched
                store.update_point(sweep["id"], p["idx"], state=RUNNING, started=time.time(),
                                   detail=f"running at the backend ({st.detail or 'seen by nrun status'})")
                changed = True
            continue
        changed = True
        if p["state"] == PENDING:
            store.update_point(sweep["id"], p["idx"], state=LOST, ended=time.time(),
                               error="never started: its launcher died",
                               detail=f"never started: launcher/supervisor pid {sweep['supervisor_pid']} died")
            continue
        spec = JobSpec.from_json(p["spec"]) if p["spec"] else None
        result = read_result(spec.result_file, expect=spec.identity) if spec else None
        if result and result["status"] == R_COMPLETED:
            store.update_point(sweep["id"], p["idx"], state=COMPLETED, ended=result.get("time", time.time()),
                               value_repr=result.get("repr"), usage=result.get("usage"),
                               detail="settled from its result file")
        elif result:
            store.update_point(sweep["id"], p["idx"], state=FAILED, ended=result.get("time", time.time()),
                               error=f"{result.get('error_type')}: {result.get('error')}",
                               usage=result.get("usage"), detail="settled from its result file")
        else:
            store.update_point(sweep["id"], p["idx"], state=LOST, ended=time.time(),
                               error="ended unwatched without a result",
                               detail="process gone, no result file")
    if not still_running:
        store.update_sweep(sweep["id"], state=sweep_state(store.counts(sweep["id"])), ended=time.time())
        changed = True
    return changed
