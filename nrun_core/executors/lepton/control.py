"""nrun_lepton seen from any shell (`nrun status`, `nrun cancel`): a point's backend id is its
Lepton job id; the workspace comes from the sweep's stored options and this shell's
environment (the token is never stored)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from nrun_core.errors import NrunError
from nrun_core.executors.base import ENDED, QUEUED, RUNNING
from nrun_core.executors.cloudjob.control import JobControl

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


class LeptonControl(JobControl):
    noun = "Lepton job"

    def make_client(self) -> Any:
        from nrun_core.executors.lepton.api import Lepton

        conf = dict(self.sweep.get("conf") or {})
        return Lepton(SimpleNamespace(workspace_id=conf.get("workspace_id"),
                                      workspace_url=conf.get("workspace_url"),
                                      token_env=conf.get("token_env") or "LEPTON_WORKSPACE_TOKEN"))

    def state_of(self, job: Any) -> Any:
        return state_of(job)

    def gone_error(self) -> type:
        from nrun_core.executors.lepton.api import Gone

        return Gone

    def after_cancel(self) -> None:
        """The sweep's Lepton secrets (its `secret_env` values) go with its jobs."""
        from nrun_core.executors.lepton import spec as ls

        for var in (self.sweep.get("conf") or {}).get("secret_env") or []:
            try:
                self._client().delete_secret(ls.secret_name(self.sweep["id"], var))
            except NrunError:
                pass
