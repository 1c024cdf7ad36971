"""nrun_slurm seen from any shell: squeue/sacct/scancel by Slurm id, with only the store's record.

The executor's live polling asks the same questions for the whole array once a second; this is
the stateless form `nrun status` and `nrun cancel` use when no supervisor watches the sweep.
"""

from __future__ import annotations

import os
import posixpath
from typing import Any, Dict, List, Optional, Sequence

from nrun_core.errors import BackendError
from nrun_core.executors.slurm import state as slurm_state
from nrun_core.executors.base import ENDED, QUEUED, RUNNING, BackendState, Control, LogSource


class SlurmControl(Control):
    """Also what the live executor polls with (``squeue``, ``sacct``, ``scancel``), on its site."""

    def __init__(self, sweep: Dict[str, Any], site: Any = None) -> None:
        super().__init__(sweep)
        self._site: Any = site

    @property
    def site(self) -> Any:
        if self._site is None:
            from nrun_core.conf import SlurmConf
            from nrun_core.executors.slurm.site import site_for
            from nrun_core.options import typed

            self._site = site_for(typed(SlurmConf, self.sweep.get("conf") or {}))
        return self._site

    def close(self) -> None:
        if self._site is not None:
            self._site.close()

    def squeue(self, ids: Sequence[str]) -> Optional[Dict[str, slurm_state.TaskState]]:
        """What slurmctld holds of these tasks' arrays; None when squeue itself failed."""
        out = self.site.run(["squeue", "-h", "--states=all", "-o", slurm_state.SQUEUE_FORMAT,
                             "-j", ",".join(slurm_state.array_ids(ids))], timeout=30)
        if out.returncode != 0:
            return {} if "Invalid job id" in out.stderr else None
        return slurm_state.parse_squeue(out.stdout)

    def sacct(self, ids: Sequence[str]) -> Dict[str, slurm_state.TaskState]:
        """The accounting record (exit codes; tasks squeue forgot)."""
        out = self.site.run(["sacct", "-X", "-n", "-P", "-o", slurm_state.SACCT_FIELDS, "-j", ",".join(ids)],
                            timeout=30)
        return slurm_state.parse_sacct(out.stdout) if out.returncode == 0 else {}

    def scancel(self, ids: Sequence[str]) -> Any:
        return self.site.run(["scancel", *ids])

    def states(self, ids: Sequence[str]) -> Dict[str, slurm_state.TaskState]:
        """squeue for what Slurm still holds, sacct for the rest."""
        if not ids:
            return {}
        found = self.squeue(ids) or {}
        missing = [i for i in ids if i not in found]
        if missing:
            found.update(self.sacct(missing))
        return found

    def describe(self, points: Sequence[Dict[str, Any]]) -> Dict[int, Optional[BackendState]]:
        ids = {p["idx"]: str(p["backend_id"]) for p in points if p.get("backend_id")}
        found = self.states(list(ids.values()))
        out: Dict[int, Optional[BackendState]] = {}
        for p in points:
            st = found.get(ids.get(p["idx"], ""))
            if st is None:
                out[p["idx"]] = None if not found else BackendState(ENDED, detail="unknown to Slurm")
            elif st.live:
                out[p["idx"]] = BackendState(RUNNING if st.state == "RUNNING" else QUEUED, detail=st.state)
            else:
                out[p["idx"]] = BackendState(ENDED, exit_code=st.exit_code, detail=st.state)
        return out

    def cancel(self, points: Sequence[Dict[str, Any]]) -> List[int]:
        ids = [str(p["backend_id"]) for p in points if p.get("backend_id")]
        if not ids:
            return []
        out = self.scancel(ids)
        if out.returncode != 0:
            raise BackendError(f"scancel {' '.join(ids)} failed: {(out.stderr or out.stdout).strip()}")
        return [p["idx"] for p in points if p.get("backend_id")]

    def logs(self, point: Dict[str, Any], stream: str) -> LogSource:
        """Over SSH, the log on the login node itself (live, even while nobody copies it back)."""
        local = point.get(stream) or ""
        if not self.site.remote or not local or not self.sweep.get("sweep_dir"):
            return LogSource(local)
        rel = os.path.relpath(local, self.sweep["sweep_dir"])
        return LogSource(posixpath.join(self.site.root(), "sweeps", self.sweep["id"], rel), self.site.transport)
