"""A cloud executor's points seen from any shell: one remote job per point, named by its backend
id, asked about one by one and stopped then deleted. Each executor says how to read its id, what
its client is, and how to word a job; the loops live here once."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from nrun_core.errors import BackendError, NrunError
from nrun_core.executors.base import ENDED, BackendState, Control


class JobControl(Control):
    noun = "job"          # how the backend calls a job, in messages
    # The client's method that stops a job before it is deleted; None: deleting alone stops it.
    stop_method: Optional[str] = "stop"

    def __init__(self, sweep: Dict[str, Any]) -> None:
        super().__init__(sweep)
        self._api: Any = None

    # -- what each executor says ----------------------------------------------------------------
    def make_client(self) -> Any:
        raise NotImplementedError

    def ref(self, backend_id: str) -> Any:
        """The job's reference for the client (a tuple is passed as several arguments); None
        when ``backend_id`` names no job of this backend."""
        return backend_id or None

    def state_of(self, job: Any) -> Any:
        """The client's answer about a job → cloudjob.polled.RemoteState."""
        raise NotImplementedError

    def gone_error(self) -> type:
        """The client's exception for a job the backend does not know (404)."""
        raise NotImplementedError

    def after_cancel(self) -> None:
        """Anything the sweep left at the backend besides its jobs (secrets...)."""

    # -- the loops ------------------------------------------------------------------------------
    def _client(self) -> Any:
        if self._api is None:
            self._api = self.make_client()
        return self._api

    def _args(self, ref: Any) -> tuple:
        return ref if isinstance(ref, tuple) else (ref,)

    def describe(self, points: Sequence[Dict[str, Any]]) -> Dict[int, Optional[BackendState]]:
        gone = self.gone_error()
        out: Dict[int, Optional[BackendState]] = {}
        for p in points:
            ref = self.ref(p.get("backend_id") or "")
            if ref is None:
                out[p["idx"]] = None
                continue
            try:
                st = self.state_of(self._client().get(*self._args(ref)))
                out[p["idx"]] = BackendState(st.phase, exit_code=st.exit_code, detail=st.detail)
            except gone:
                out[p["idx"]] = BackendState(ENDED, detail=f"{self.noun} {p['backend_id']} is gone (404)")
            except NrunError as exc:  # the service could not be asked: its silence says nothing of the point
                raise BackendError(f"could not ask about {self.noun} {p['backend_id']}: {exc}; "
                                   "the points' states stay as recorded") from None
        return out

    def cancel(self, points: Sequence[Dict[str, Any]]) -> List[int]:
        """Stop each point's job (the backend's stop or suspend), then delete it."""
        stopped = []
        for p in points:
            ref = self.ref(p.get("backend_id") or "")
            if ref is None:
                continue
            if self.stop_method is not None:
                try:
                    getattr(self._client(), self.stop_method)(*self._args(ref))
                except NrunError:
                    pass
            try:
                self._client().delete(*self._args(ref))
                stopped.append(p["idx"])
            except NrunError:
                continue
        self.after_cancel()
        return stopped

    def close(self) -> None:
        close = getattr(self._api, "close", None)
        if close is not None:
            close()
