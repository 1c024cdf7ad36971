"""What Slurm says about array tasks, read from one squeue (or sacct) call for the whole sweep.

squeue answers from slurmctld's memory at once and keeps finished jobs for MinJobAge; sacct
lags ~1 s behind but remembers everything and has exit codes. The executor asks squeue first
and sacct only for tasks squeue no longer knows or for exit codes of failures.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Tuple

from nrun_core import procs

# States in which a task may still run (or run again): never report these as ended.
LIVE = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING", "SUSPENDED",
        "COMPLETING", "CONFIGURING", "STAGE_OUT", "SIGNALING", "STOPPED", "PREEMPTED", "RESV_DEL_HOLD"}
TIMEOUT = {"TIMEOUT", "DEADLINE"}
LOST = {"NODE_FAIL", "BOOT_FAIL", "REVOKED"}

SQUEUE_FORMAT = "%i|%T|%r"
SACCT_FIELDS = "JobID,State,ExitCode,Reason"
_RANGE = re.compile(r"^(\d+)_\[([^\]]+)\]$")


@dataclass(frozen=True)
class TaskState:
    """One array task (``123_4``) or plain job (``123``) as Slurm reports it."""

    state: str                    # first word: "CANCELLED by 0" -> CANCELLED
    reason: str = ""
    exit_code: Optional[int] = None   # negative: killed by that signal

    @property
    def live(self) -> bool:
        return self.state in LIVE


def expand(job_id: str) -> List[str]:
    """``123_[0-3,7%4]`` -> 123_0 .. 123_3, 123_7; other ids unchanged."""
    m = _RANGE.match(job_id)
    if not m:
        return [job_id]
    base, spec = m.group(1), m.group(2).split("%")[0]
    out: List[str] = []
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        if not lo.isdigit():
            continue
        out += [f"{base}_{i}" for i in range(int(lo), int(hi or lo) + 1)]
    return out


def parse_squeue(text: str) -> Dict[str, TaskState]:
    found: Dict[str, TaskState] = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 2 or not parts[0]:
            continue
        st = TaskState(parts[1].split()[0] if parts[1].split() else "UNKNOWN",
                       parts[2] if len(parts) > 2 else "")
        for jid in expand(parts[0]):
            found[jid] = st
    return found


def parse_sacct(text: str) -> Dict[str, TaskState]:
    """``sacct -X -n -P -o JobID,State,ExitCode,Reason`` lines (allocations only)."""
    found: Dict[str, TaskState] = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 3 or not parts[0] or "." in parts[0]:
            continue
        words = parts[1].split()
        st = TaskState(words[0] if words else "UNKNOWN", parts[3] if len(parts) > 3 else "",
                       exit_code(parts[2]))
        for jid in expand(parts[0]):
            found[jid] = st
    return found


def exit_code(text: str) -> Optional[int]:
    """sacct's ``CODE:SIGNAL`` -> CODE, or -SIGNAL when a signal ended it."""
    code, _, sig = text.partition(":")
    try:
        c, s = int(code), int(sig or 0)
    except ValueError:
        return None
    return -s if s else c


def ended_reason(st: TaskState, time_setting: str = "hydra.launcher.time") -> Tuple[str, str]:
    """(Ended.reason, detail) for a task in a terminal state; ``time_setting`` names where its
    time limit came from."""
    if st.state == "CANCELLED":
        if st.reason == "DependencyNeverSatisfied":
            return "cancelled", "its dependency can never be satisfied (Slurm DependencyNeverSatisfied)"
        return "cancelled", "cancelled in Slurm (scancel)"
    if st.state in TIMEOUT:
        return "timeout", f"hit its Slurm time limit ({st.state}; {time_setting}): raise hydra.launcher.time"
    if st.state in LOST:
        return "lost", f"Slurm {st.state}: the node failed; the point did not finish"
    if st.state == "OUT_OF_MEMORY":
        return "exited", "ran out of memory (Slurm OUT_OF_MEMORY): raise hydra.launcher.mem"
    if st.state == "COMPLETED":
        return "exited", "exited with code 0"
    return "exited", f"Slurm {st.state}: {procs.describe_exit(st.exit_code)}"


def array_ids(backend_ids: Iterable[str]) -> List[str]:
    """The distinct job ids (array ids) behind some task ids, in first-seen order."""
    out: List[str] = []
    for bid in backend_ids:
        j = bid.split("_")[0]
        if j not in out:
            out.append(j)
    return out
