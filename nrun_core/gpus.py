"""GPUs handed to points a few at a time: this machine's (nrun_local) or a host's (nrun_ssh).

A sweep on a multi-GPU machine must not start every point on GPU 0: with ``gpus_per_node=N``
each point (each node of it) gets N GPUs of its own (``CUDA_VISIBLE_DEVICES``) and waits while
none are free. On this machine the GPUs are the ones the launching shell lists in
``CUDA_VISIBLE_DEVICES`` (so ``CUDA_VISIBLE_DEVICES=2,3 python train.py -m ...`` keeps a sweep off
GPUs 0 and 1), else every GPU ``nvidia-smi`` shows; an SSH host's are its hosts-file ``gpus``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import List, Optional


def visible() -> Optional[List[str]]:
    """GPU ids a point may be given, in order; None when this machine shows none we can name."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g.strip() for g in listed.split(",") if g.strip() and g.strip() != "-1"]
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    try:
        out = subprocess.run([smi, "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


class Pool:
    """Free GPUs; a point takes ``per_point`` of them at its start and gives them back at its end."""

    def __init__(self, ids: List[str], per_point: int) -> None:
        self.ids = list(ids)
        self.per_point = per_point
        self._free = list(ids)

    @property
    def slots(self) -> int:
        """Points that can hold GPUs at once."""
        return len(self.ids) // self.per_point

    def can_take(self) -> bool:
        return len(self._free) >= self.per_point

    def take(self) -> List[str]:
        got, self._free = self._free[: self.per_point], self._free[self.per_point:]
        return got

    def give(self, ids: List[str]) -> None:
        """Back to the pool, in the machine's order (the next point gets the lowest free ones)."""
        order = {g: i for i, g in enumerate(self.ids)}
        self._free = sorted(set(self._free) | set(ids), key=order.__getitem__)
