"""What a Slurm task used, from accounting (sacct): for points that could not say it themselves.

The point runtime writes its own usage into its result file on every backend; a task killed by
Slurm (time limit, OOM, scancel, a node failure) leaves none, so its wall time (Elapsed), CPU
(TotalCPU: user + system of every step) and peak RSS (MaxRSS, the largest of its steps) come
from the accounting record instead. Best effort: accounting lags the task's end by about a
second, and TotalCPU and MaxRSS need a jobacct_gather plugin (``JobAcctGatherType``; the sandbox
has none): a field Slurm does not have is left out.
"""

from __future__ import annotations

import re
from typing import Any, Dict, Optional, Sequence

FIELDS = "JobID,Elapsed,TotalCPU,MaxRSS"
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}


def seconds(text: str) -> Optional[float]:
    """Slurm's durations: ``[D-]HH:MM:SS``, ``MM:SS.mmm`` (TotalCPU), or empty."""
    text = (text or "").strip()
    if not text or text in ("INVALID", "UNLIMITED", "Partition_Limit"):
        return None
    days = 0
    if "-" in text:
        d, text = text.split("-", 1)
        days = int(d)
    try:
        parts = [float(p) for p in text.split(":")]
    except ValueError:
        return None
    total = 0.0
    for p in parts:
        total = total * 60 + p
    return days * 86400 + total


def size(text: str) -> Optional[int]:
    """Slurm's sizes (``2048K``, ``1.50M``, ``0``): bytes; None when empty."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*([KMGTP]?)\s*", text or "")
    if not m:
        return None
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def parse(text: str) -> Dict[str, Dict[str, Any]]:
    """``sacct -n -P -o JobID,Elapsed,TotalCPU,MaxRSS`` lines → task id (``123`` or ``123_4``)
    → {wall_s, cpu_s, max_rss}: the allocation's line gives Elapsed and TotalCPU, its steps
    (``.batch``, ``.0``, ``.extern``) the largest MaxRSS."""
    out: Dict[str, Dict[str, Any]] = {}
    for line in text.splitlines():
        cols = line.split("|")
        if len(cols) < 4 or not cols[0].strip():
            continue
        job, _, step = cols[0].strip().partition(".")
        entry = out.setdefault(job, {"source": "sacct"})
        rss = size(cols[3])
        if rss is not None:
            entry["max_rss"] = max(rss, entry.get("max_rss", 0))
        if not step:
            wall, cpu = seconds(cols[1]), seconds(cols[2])
            if wall is not None:
                entry["wall_s"] = wall
            if cpu is not None:
                entry["cpu_s"] = cpu
    for entry in out.values():
        # Without a jobacct_gather plugin Slurm reports TotalCPU 0 and no MaxRSS: unknown, not 0.
        if not entry.get("cpu_s") and "max_rss" not in entry:
            entry.pop("cpu_s", None)
    return out


def query(site: Any, task_ids: Sequence[str]) -> Dict[str, Dict[str, Any]]:
    """What each task used, by one sacct call on the sweep's site; {} if sacct cannot say."""
    if not task_ids:
        return {}
    try:
        out = site.run(["sacct", "-n", "-P", "-o", FIELDS, "-j", ",".join(task_ids)], timeout=30)
    except Exception:  # accounting is a nicety here: never fail a point's end over it
        return {}
    return parse(out.stdout) if out.returncode == 0 else {}


def of_task(site: Any, task_id: str) -> Optional[Dict[str, Any]]:
    """One task's usage, or None."""
    return query(site, [task_id]).get(task_id) or None
