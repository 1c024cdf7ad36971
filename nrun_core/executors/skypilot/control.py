"""nrun_skypilot seen from any shell (`nrun status`, `nrun cancel`): the store's backend id of a
point is "<cluster>/<job id>" (or "managed/<job id>"), which is all SkyPilot needs."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

from nrun_core.executors.base import ENDED, QUEUED, RUNNING, BackendState, Control

QUEUED_STATES = ("INIT", "PENDING", "SETTING_UP", "STARTING")
ENDED_STATES = ("SUCCEEDED", "FAILED", "FAILED_SETUP", "FAILED_DRIVER", "CANCELLED", "FAILED_PRECHECKS",
                "FAILED_NO_RESOURCE", "FAILED_CONTROLLER")


def backend_id(cluster: str, job_id: Optional[int], managed: bool = False) -> str:
    return f"{'managed' if managed else cluster}/{job_id if job_id is not None else '?'}"


def parse(bid: Optional[str]) -> Optional[Tuple[str, int]]:
    if not bid or "/" not in bid:
        return None
    cluster, _, job = bid.rpartition("/")
    return (cluster, int(job)) if job.isdigit() else None


def state_of(status: Any) -> Optional[BackendState]:
    name = str(getattr(status, "value", status) or "").rsplit(".", 1)[-1].upper()
    if not name:
        return None
    if name in ENDED_STATES:
        return BackendState(ENDED, exit_code=0 if name == "SUCCEEDED" else 1, detail=name)
    return BackendState(QUEUED if name in QUEUED_STATES else RUNNING, detail=name)


class SkypilotControl(Control):
    def _by_cluster(self, points: Sequence[Dict[str, Any]]) -> Dict[str, Dict[int, int]]:
        out: Dict[str, Dict[int, int]] = {}
        for p in points:
            found = parse(p.get("backend_id"))
            if found:
                out.setdefault(found[0], {})[found[1]] = p["idx"]
        return out

    def describe(self, points: Sequence[Dict[str, Any]]) -> Dict[int, Optional[BackendState]]:
        import sky

        result: Dict[int, Optional[BackendState]] = {}
        for cluster, jobs in self._by_cluster(points).items():
            try:
                if cluster == "managed":
                    records = sky.get(sky.jobs.queue(refresh=False, job_ids=list(jobs)))
                    got = {int(r["job_id"]): r["status"] for r in records}
                else:
                    got = sky.get(sky.job_status(cluster, job_ids=list(jobs)))
            except Exception:  # noqa: BLE001 - a cluster that is gone: nobody can tell
                continue
            for job, idx in jobs.items():
                status = got.get(job) if isinstance(got, dict) else None
                if status is not None:
                    result[idx] = state_of(status)
        return result

    def cancel(self, points: Sequence[Dict[str, Any]]) -> List[int]:
        import sky

        stopped: List[int] = []
        for cluster, jobs in self._by_cluster(points).items():
            try:
                if cluster == "managed":
                    sky.get(sky.jobs.cancel(job_ids=list(jobs)))
                else:
                    sky.get(sky.cancel(cluster, job_ids=list(jobs)))
            except Exception:  # noqa: BLE001
                continue
            stopped += list(jobs.values())
        return stopped
