"""nrun_dgxcloud seen from any shell: a point's backend id is ``<trainings|distributed>/<workloadId>``;
the API URL, application id and project come from the sweep's stored options, the client secret
from this shell's environment (never stored)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Dict, Optional, Tuple

from nrun_core.executors.base import ENDED, QUEUED, RUNNING
from nrun_core.executors.cloudjob.control import JobControl

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


class DgxCloudControl(JobControl):
    noun = "Run:ai workload"
    stop_method = "suspend"  # the documented POST .../suspend

    def make_client(self) -> Any:
        return client_for(dict(self.sweep.get("conf") or {}))

    def ref(self, backend_id: str) -> Optional[Tuple[str, str]]:
        return split_id(backend_id)

    def state_of(self, workload: Any) -> Any:
        return state_of(workload)

    def gone_error(self) -> type:
        from nrun_core.executors.dgxcloud.api import Gone

        return Gone
