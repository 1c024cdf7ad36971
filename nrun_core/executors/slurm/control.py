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


def task_of(backend_id: str) -> str:
    """The Slurm array task of a point's id: ``123_4:2`` (point 2 of a pack) -> ``123_4``."""
    return backend_id.split(":")[0]


class SlurmControl(Control):
    """Also what the live executor polls with (``squeue``, ``sacct``, ``scancel``), on its site."""

    def __init__(self, sweep: Dict[str, Any], site: Any = None) -> None:
        super().__init__(sweep)
        self._site: Any = site
        self._failed: Dict[str, str] = {}  # command -> its error, of the last states()

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
            if "Invalid job id" in out.stderr:
                return {}
            self._failed["squeue"] = out.stderr.strip()[-300:]
            return None
        return slurm_state.parse_squeue(out.stdout)

    def sacct(self, ids: Sequence[str]) -> Dict[str, slurm_state.TaskState]:
        """The accounting record (exit codes; tasks squeue forgot); empty when sacct failed."""
        out = self.site.run(["sacct", "-X", "-n", "-P", "-o", slurm_state.SACCT_FIELDS, "-j", ",".join(ids)],
                            timeout=30)
        if out.returncode != 0:
            self._failed["sacct"] = out.stderr.strip()[-300:]
            return {}
        return slurm_state.parse_sacct(out.stdout)

    def scancel(self, ids: Sequence[str]) -> Any:
        return self.site.run(["scancel", *ids])

    def states(self, ids: Sequence[str]) -> Dict[str, slurm_state.TaskState]:
        """squeue for what Slurm still holds, sacct for the rest. BackendError when neither
        answered (slurmctld and slurmdbd unreachable): their silence says nothing of the points."""
        if not ids:
            return {}
        self._failed.clear()
        queued = self.squeue(ids)
        found = dict(queued or {})
        missing = [i for i in ids if i not in found]
        if missing:
            found.update(self.sacct(missing))
        if queued is None and "sacct" in self._failed:
            raise BackendError("Slurm did not answer: " + "; ".join(f"{k}: {v or 'failed'}" for k, v in self._failed.items())
                               + ". The points' states stay as recorded; check the controller (`scontrol ping`) "
                               "and the SLURM_CONF this shell uses, then ask again")
        return found

    def describe(self, points: Sequence[Dict[str, Any]]) -> Dict[int, Optional[BackendState]]:
        """A packed point (``123_4:2``) is what its pack's record says while its array task runs
        or once it ended; the task's own state otherwise."""
        ids = {p["idx"]: str(p["backend_id"]) for p in points if p.get("backend_id")}
        found = self.states(list(dict.fromkeys(task_of(i) for i in ids.values())))
        out: Dict[int, Optional[BackendState]] = {}
        for p in points:
            bid = ids.get(p["idx"], "")
            st = found.get(task_of(bid))
            rec = self._pack_record(p) if bid and bid != task_of(bid) and st is not None else None
            if rec is not None and "ended" in rec:
                out[p["idx"]] = BackendState(ENDED, exit_code=rec.get("exit_code"), detail=rec.get("reason", ""))
            elif st is None:
                out[p["idx"]] = None if not found else BackendState(ENDED, detail="unknown to Slurm")
            elif st.live:
                running = st.state == "RUNNING" and (rec is not None and bool(rec.get("started"))
                                                     or bid == task_of(bid))
                out[p["idx"]] = BackendState(RUNNING if running else QUEUED, detail=st.state)
            else:
                out[p["idx"]] = BackendState(ENDED, exit_code=st.exit_code, detail=st.state)
        return out

    def cancel(self, points: Sequence[Dict[str, Any]]) -> List[int]:
        """scancel array tasks; a packed point whose pack has other live points not being
        cancelled gets its cancel marker instead (its pack runner stops just that point)."""
        sent = [p for p in points if p.get("backend_id")]
        if not sent:
            return []
        chosen = {p["idx"] for p in sent}
        packed = [p for p in sent if ":" in str(p["backend_id"])]
        keep_running = set()
        if packed:
            from nrun_core.store import TERMINAL

            for q in self._sweep_points():
                bid = str(q.get("backend_id") or "")
                if ":" in bid and q["idx"] not in chosen and q.get("state") not in TERMINAL:
                    keep_running.add(task_of(bid))
        ids: List[str] = []
        for p in sent:
            task = task_of(str(p["backend_id"]))
            if task in keep_running:
                self._mark_cancel(p)
            elif task not in ids:
                ids.append(task)
        if ids:
            out = self.scancel(ids)
            if out.returncode != 0:
                raise BackendError(f"scancel {' '.join(ids)} failed: {(out.stderr or out.stdout).strip()}")
        return [p["idx"] for p in sent]

    def _sweep_points(self) -> List[Dict[str, Any]]:
        from nrun_core.store import Store

        store = Store(create=False)
        try:
            return store.points(self.sweep["id"])
        finally:
            store.close(timeout=5.0)

    def _nrun_path(self, point: Dict[str, Any], name: str) -> str:
        """A file of the point's nrun dir where the cluster has it (the login node over SSH)."""
        job_dir = os.path.dirname(point.get("stdout") or "")
        local = os.path.join(job_dir, ".nrun", self.sweep["id"], name)
        if not self.site.remote or not self.sweep.get("sweep_dir"):
            return local
        rel = os.path.relpath(local, self.sweep["sweep_dir"])
        return posixpath.join(self.site.root(), "sweeps", self.sweep["id"], rel)

    def _pack_record(self, point: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        import json

        from nrun_core.runtime.pack import STATUS_FILE

        data = self.site.transport.read(self._nrun_path(point, STATUS_FILE), 0, 1 << 16)
        try:
            return json.loads(data) if data else None
        except ValueError:
            return None

    def _mark_cancel(self, point: Dict[str, Any]) -> None:
        from nrun_core.runtime.pack import CANCEL_FILE

        self.site.touch(self._nrun_path(point, CANCEL_FILE))

    def logs(self, point: Dict[str, Any], stream: str) -> LogSource:
        """Over SSH, the log on the login node itself (live, even while nobody copies it back)."""
        local = point.get(stream) or ""
        if not self.site.remote or not local or not self.sweep.get("sweep_dir"):
            return LogSource(local)
        rel = os.path.relpath(local, self.sweep["sweep_dir"])
        return LogSource(posixpath.join(self.site.root(), "sweeps", self.sweep["id"], rel), self.site.transport)
