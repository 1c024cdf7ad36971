"""`hydra.launcher.dependencies`: start a sweep only after other Slurm jobs or nrun sweeps.

Each item is ``[TYPE:]REF``: TYPE afterok (default), afterany, afternotok or after; REF a Slurm
job id (``123``, ``123_4``), an nrun sweep (id, id prefix, name or ``last``), or one point of a
sweep (``SWEEP/3``). A sweep behaves like its Slurm array: afterok waits for every point to
succeed, afternotok for the sweep to end with a failure, afterany for every point to end.

Slurm forgets finished jobs after MinJobAge and then refuses a dependency on them, so a sweep
whose points have all finished is decided here from nrun's store: the dependency is dropped when
it is satisfied, and the submission stops with an error when it never can be.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

from nrun_core.errors import ConfigError

TYPES = ("afterok", "afterany", "afternotok", "after")
JOB_ID = re.compile(r"^\d+(_\d+)?$")
WAIT_FOR_SUBMISSION_S = 30.0


@dataclass(frozen=True)
class Dependency:
    type: str
    ref: str

    @property
    def text(self) -> str:
        return f"{self.type}:{self.ref}"


def parse(item: str) -> Dependency:
    item = item.strip()
    head, sep, rest = item.partition(":")
    dep = Dependency(head, rest) if sep and head in TYPES else Dependency("afterok", item)
    if not dep.ref or any(c.isspace() for c in dep.ref) or ":" in dep.ref or "," in dep.ref:
        raise ConfigError(f"hydra.launcher.dependencies: {item!r} is not [TYPE:]REF; TYPE one of "
                          f"{', '.join(TYPES)}, REF a Slurm job id or an nrun sweep (e.g. afterok:1234)")
    return dep


def resolve(items: Sequence[str], store: Callable[[], Any]) -> Optional[str]:
    """The sbatch --dependency value (None when nothing is left to wait for).

    ``store`` opens nrun's store only if a sweep is referenced.
    """
    clauses: Dict[str, List[str]] = {}
    for item in items:
        dep = parse(item)
        if JOB_ID.match(dep.ref):
            ids: List[str] = [dep.ref]
        else:
            ids = _sweep_ids(dep, store())
        for i in ids:
            if i not in clauses.setdefault(dep.type, []):
                clauses[dep.type].append(i)
    parts = [f"{kind}:{':'.join(ids)}" for kind, ids in clauses.items() if ids]
    return ",".join(parts) or None


def _sweep_ids(dep: Dependency, store: Any) -> List[str]:
    """Slurm ids to wait on for a sweep reference; [] if already satisfied."""
    from nrun_core.reconcile import supervised
    from nrun_core.store import COMPLETED, TERMINAL

    ref, _, point = dep.ref.partition("/")
    sweep = store.sweep(ref)
    if sweep["executor"] != "slurm":
        raise ConfigError(f"hydra.launcher.dependencies: sweep {sweep['id']} ran on {sweep['executor']}, "
                          "not Slurm; only Slurm jobs and nrun_slurm sweeps can be waited on")

    def points() -> List[Dict[str, Any]]:
        if point:
            if not point.isdigit():
                raise ConfigError(f"hydra.launcher.dependencies: {dep.ref!r}: write SWEEP/POINT with a "
                                  "point number, e.g. my_sweep/3")
            return [store.point(sweep["id"], int(point))]
        return store.points(sweep["id"])

    # A detached sweep is submitted by its supervisor moments after its launcher returned.
    deadline = time.monotonic() + WAIT_FOR_SUBMISSION_S
    found = points()
    while any(not p["backend_id"] and p["state"] not in TERMINAL for p in found) \
            and supervised(store.sweep(sweep["id"])) and time.monotonic() < deadline:
        time.sleep(0.2)
        found = points()
    unsent = [p["idx"] for p in found if not p["backend_id"] and p["state"] not in TERMINAL]
    if unsent:
        raise ConfigError(f"hydra.launcher.dependencies: points {unsent} of sweep {sweep['id']} were never "
                          "submitted to Slurm (their launcher is gone); nothing to wait for")
    if all(p["state"] in TERMINAL for p in found):
        ok = all(p["state"] == COMPLETED for p in found)
        satisfied = {"afterok": ok, "afternotok": not ok, "afterany": True, "after": True}[dep.type]
        if satisfied:
            return []
        states = sorted({p["state"] for p in found})
        raise ConfigError(f"hydra.launcher.dependencies: {dep.text} can never be satisfied: sweep "
                          f"{sweep['id']} already ended ({', '.join(states)}); remove the dependency "
                          "or choose another type (afterany, afternotok)")
    ids: List[str] = []
    for p in found:
        bid = str(p["backend_id"] or "")
        if not bid:
            continue
        # A point waits on its own array task (a packed point: its whole pack, ``123_4:2`` -> 123_4);
        # a sweep on every array it was submitted as.
        job = bid.split(":")[0] if point else bid.split("_")[0].split(":")[0]
        if job not in ids:
            ids.append(job)
    return ids
