"""`nrun sandbox NAME up|down|status|env`: real backends on one machine, for users, tests and CI.

Each sandbox is a module here exposing the same four functions:

- ``up() -> dict[str, str]``: idempotent; installs what is missing, starts only what is not
  already running, waits until usable, returns the environment a client needs.
- ``down() -> None``: stops only the processes this sandbox started (by the pids it recorded).
- ``status() -> tuple[bool, str]``: (usable?, a human-readable report).
- ``env() -> dict[str, str]``: the variables to export (printed as ``export K=V`` lines).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from nrun_core.errors import ConfigError

SANDBOXES = {
    "slurm": "nrun_core.sandbox.slurm",
    "docker": "nrun_core.sandbox.docker",
    "ssh": "nrun_core.sandbox.ssh",
    "skypilot": "nrun_core.sandbox.skypilot",
    "kube": "nrun_core.sandbox.kube",
}


def get(name: str) -> ModuleType:
    """The sandbox module called NAME, or a ConfigError listing the known ones."""
    try:
        return importlib.import_module(SANDBOXES[name])
    except KeyError:
        raise ConfigError(
            f"unknown sandbox {name!r}; choose one of: {', '.join(sorted(SANDBOXES))}"
        ) from None
