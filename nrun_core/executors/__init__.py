"""Executors: one per backend, all with the same shape (render → start → poll → cancel).

Imported by name on use, so `nrun status` on a local sweep never imports docker or submitit.
"""

from __future__ import annotations

import importlib
from typing import Any

EXECUTORS = {
    "local": "nrun_core.executors.local:LocalExecutor",
    "slurm": "nrun_core.executors.slurm:SlurmExecutor",
    "docker": "nrun_core.executors.docker:DockerExecutor",
}


def executor_class(name: str) -> Any:
    module, _, attr = EXECUTORS[name].partition(":")
    return getattr(importlib.import_module(module), attr)
