"""nrun_dgxcloud seen from any shell: a point's backend id is ``<trainings|distributed>/<workloadId>``;
the API URL, application id and project come from the sweep's stored options, the client secret
from this shell's environment (never stored)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Dict, List, Optional, Sequence, Tuple

from nrun_core.errors import NrunError
from nrun_core.executors.base import ENDED, QUEUED, RUNNING, BackendState, Control

# Run:ai phases → (nrun state, exit code); unknown words count as queued.
PHASES = {
    "Running": (RUNNING, None), "Degraded": (RUNNING, None), "Stopping": (RUNNING, None),
    "Terminating": (RUNNING, None), "Completed": (ENDED, 0), "Succeeded": (ENDED, 0), "Failed": (ENDED, 1),
    "Stopped": (ENDED, None), "Deleting": (ENDED, None), "Deleted": (ENDED, None),
}


def split_id(backend_id: str) -> Optional[Tuple[str, str]]:
    kind, _, wid = (backend_id or "").partition("/")
    return (kind, wid) if kind in ("trainings", "distributed") and wid else None


def state_of(workload: Dict[str, Any]) -> Any:
    from nrun_core.executors.cloudjob.polled import RemoteState

    word = str(workload.get("actualPhase") or workload.get("phase") or "")
    phase, code = PHASES.get(word, (QUEUED, None))
    detail = ""
    name = workload.get("name") or workload.get("workloadId")
    if word == "Failed":
        msg = workload.get("phaseMessage") or workload.get("message") or ""
        detail = f"Run:ai workload {name} failed" + (f": {msg}" if msg else "")
    elif phase == ENDED and code is None:
        detail = f"Run:ai workload {name} was {word.lower()} before it finished"
    return RemoteState(phase, exit_code=code, detail=detail, raw=word)


def client_for(conf: Dict[str, Any]) -> Any:
    from nrun_core.executors.dgxcloud.api import RunAI

    return RunAI(SimpleNamespace(base_url=conf.get("base_url"), client_id=conf.get("client_id"),
                                 client_secret_env=conf.get("client_secret_env") or "RUNAI_CLIENT_SECRET",
                                 request_timeout_s=conf.get("request_timeout_s") or 30.0))


class DgxCloudControl(Control):
    def __init__(self, sweep: Dict[str, Any]) -> None:
        super().__init__(sweep)
        self._api: Any = None

    def _client(self) -> Any:
        if self._api is None:
            self._api = client_for(dict(self.sweep.get("conf") or {}))
        return self._api

    def describe(self, points: Sequence[Dict[str, Any]]) -> Dict[int, Optional[BackendState]]:
        from nrun_core.executors.dgxcloud.api import Gone

        out: Dict[int, Optional[BackendState]] = {}
        for p in points:
            ref = split_id(p.get("backend_id") or "")
            if ref is None:
                out[p["idx"]] = None
                continue
            try:
                st = state_of(self._client().get(*ref))
                out[p["idx"]] = BackendState(st.phase, exit_code=st.exit_code, detail=st.detail)
            except Gone:
                out[p["idx"]] = BackendState(ENDED, detail=f"Run:ai workload {ref[1]} is gone (404)")
            except NrunError:
                out[p["idx"]] = None
        return out

    def cancel(self, points: Sequence[Dict[str, Any]]) -> List[int]:
        """Suspend (the documented POST), then delete each point's workload."""
        stopped = []
        for p in points:
            ref = split_id(p.get("backend_id") or "")
            if ref is None:
                continue
            try:
                self._client().suspend(*ref)
            except NrunError:
                pass
            try:
                self._client().delete(*ref)
                stopped.append(p["idx"])
            except NrunError:
                continue
        return stopped

    def close(self) -> None:
        if self._api is not None:
            self._api.close()
