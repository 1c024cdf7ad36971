"""nrun_lepton seen from any shell (`nrun status`, `nrun cancel`): a point's backend id is its
Lepton job id; the workspace comes from the sweep's stored options and this shell's
environment (the token is never stored)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Dict, List, Optional, Sequence

from nrun_core.errors import NrunError
from nrun_core.executors.base import ENDED, QUEUED, RUNNING, BackendState, Control

# Lepton job states → (nrun state, exit code); unknown words count as queued.
STATES = {
    "Running": (RUNNING, None), "Stopping": (RUNNING, None), "Terminating": (RUNNING, None),
    "Completed": (ENDED, 0), "Failed": (ENDED, 1), "Stopped": (ENDED, None), "Deleted": (ENDED, None),
    "Archived": (ENDED, None), "Deleting": (ENDED, None),
}


def state_of(job: Any) -> Any:
    from nrun_core.executors.cloudjob.polled import RemoteState

    status = job.status
    word = getattr(getattr(status, "state", None), "value", None) or str(getattr(status, "state", "") or "")
    phase, code = STATES.get(word, (QUEUED, None))
    detail = ""
    if word == "Failed":
        detail = f"Lepton job {job.metadata.id_} failed ({getattr(status, 'failed', 0)} replica(s) failed)"
    elif phase == ENDED and code is None:
        detail = f"Lepton job {job.metadata.id_} was {word.lower()} before it finished"
    return RemoteState(phase, exit_code=code, detail=detail, raw=word)


class LeptonControl(Control):
    def __init__(self, sweep: Dict[str, Any]) -> None:
        super().__init__(sweep)
        self._api: Any = None

    def _client(self) -> Any:
        if self._api is None:
            from nrun_core.executors.lepton.api import Lepton

            conf = dict(self.sweep.get("conf") or {})
            self._api = Lepton(SimpleNamespace(workspace_id=conf.get("workspace_id"),
                                               workspace_url=conf.get("workspace_url"),
                                               token_env=conf.get("token_env") or "LEPTON_WORKSPACE_TOKEN"))
        return self._api

    def describe(self, points: Sequence[Dict[str, Any]]) -> Dict[int, Optional[BackendState]]:
        from nrun_core.executors.lepton.api import Gone

        out: Dict[int, Optional[BackendState]] = {}
        for p in points:
            jid = p.get("backend_id")
            if not jid:
                out[p["idx"]] = None
                continue
            try:
                st = state_of(self._client().get(jid))
                out[p["idx"]] = BackendState(st.phase, exit_code=st.exit_code, detail=st.detail)
            except Gone:
                out[p["idx"]] = BackendState(ENDED, detail=f"Lepton job {jid} is gone (404)")
            except NrunError:
                out[p["idx"]] = None
        return out

    def cancel(self, points: Sequence[Dict[str, Any]]) -> List[int]:
        """Stop then delete each point's job (deleting ends its replicas)."""
        from nrun_core.executors.lepton import spec as ls

        stopped = []
        for p in points:
            jid = p.get("backend_id")
            if not jid:
                continue
            try:
                self._client().stop(jid)
            except NrunError:
                pass
            try:
                self._client().delete(jid)
                stopped.append(p["idx"])
            except NrunError:
                continue
        for var in (self.sweep.get("conf") or {}).get("secret_env") or []:
            try:
                self._client().delete_secret(ls.secret_name(self.sweep["id"], var))
            except NrunError:
                pass
        return stopped
