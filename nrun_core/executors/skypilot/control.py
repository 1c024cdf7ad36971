"""nrun_skypilot seen from any shell (`nrun status`, `nrun cancel`): the store's backend id of a
point is "<cluster>/<job id>" (or "managed/<job id>"); the sweep's info names the SkyPilot API
server that holds them, so another shell (without the launcher's SkyPilot settings) asks that
server, and never makes SkyPilot start a local server of its own just to answer a status."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple
from urllib.parse import urlsplit

from nrun_core.errors import BackendError
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


ENDPOINT_VAR = "SKYPILOT_API_SERVER_ENDPOINT"  # SkyPilot's client reads the server's URL from it first
NO_LOCAL_SERVER_VAR = "SKYPILOT_DISABLE_LOCAL_API_SERVER"


def server_to_record() -> Dict[str, str]:
    """The API server this launcher's requests go to, for the sweep's info; nothing when its URL
    carries credentials (the store is plain text: that shell's SkyPilot settings must say it)."""
    from sky.server import common

    _forget_server()
    url = common.get_server_url()
    parts = urlsplit(url)
    if parts.username or parts.password:
        return {}
    return {"skypilot_api_server": url}


@contextmanager
def server_of(sweep: Dict[str, Any]) -> Iterator[None]:
    """SkyPilot's client pointed at the sweep's server for the calls inside, with no local server
    started if it does not answer (a status query must not leave a server process behind)."""
    url = (sweep.get("info") or {}).get("skypilot_api_server")
    wanted = {NO_LOCAL_SERVER_VAR: "1", **({ENDPOINT_VAR: url} if url else {})}
    saved = {k: os.environ.get(k) for k in wanted}
    os.environ.update(wanted)
    _forget_server()
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        _forget_server()


def _forget_server() -> None:
    """SkyPilot's client caches the server's URL and health for the process: let it read them again."""
    from sky.server import common

    for cached in (common.get_server_url, getattr(common, "get_api_server_status_response", None)):
        clear = getattr(cached, "cache_clear", None)
        if clear is not None:
            clear()


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
                with server_of(self.sweep):
                    if cluster == "managed":
                        records = sky.get(sky.jobs.queue(refresh=False, job_ids=list(jobs)))
                        got = {int(r["job_id"]): r["status"] for r in records}
                    else:
                        got = sky.get(sky.job_status(cluster, job_ids=list(jobs)))
            except Exception as exc:  # noqa: BLE001 - a cluster that is gone: nobody can tell
                self._unanswered(exc)
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
                with server_of(self.sweep):
                    if cluster == "managed":
                        sky.get(sky.jobs.cancel(job_ids=list(jobs)))
                    else:
                        sky.get(sky.cancel(cluster, job_ids=list(jobs)))
            except Exception as exc:  # noqa: BLE001
                self._unanswered(exc)
                continue
            stopped += list(jobs.values())
        return stopped

    def _unanswered(self, exc: Exception) -> None:
        """BackendError when no server answered (nothing can be told of any point: their states
        stay as recorded); a cluster that is gone is not that."""
        from sky import exceptions

        no_server = isinstance(exc, (exceptions.ApiServerConnectionError, exceptions.ApiServerAuthenticationError)) \
            or NO_LOCAL_SERVER_VAR in str(exc)
        if no_server:
            url = (self.sweep.get("info") or {}).get("skypilot_api_server")
            which = f"the SkyPilot API server {url}" if url else \
                "this shell's SkyPilot API server (the sweep recorded none)"
            raise BackendError(f"{which} did not answer ({str(exc).strip()[:300]}); "
                               "the points' states stay as recorded: start the server (the sandbox's: "
                               "`nrun sandbox skypilot up`) or log in to it (`sky api login -e URL`), "
                               "then ask again") from None
