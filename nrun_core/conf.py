"""Structured configs (dataclasses) of the nrun launchers, registered with Hydra's ConfigStore.

Imported by the Hydra plugin at every start of every Hydra app, so it imports nothing beyond
dataclasses, typing and omegaconf (which Hydra has already loaded). Each executor's config
subclasses ``NrunConf``; options shared by every backend live there so they spell the same
everywhere.
"""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

PLUGIN = "hydra_plugins.nrun_launcher.nrun_launcher"


@dataclass
class NrunConf:
    """Options every nrun launcher understands (``hydra.launcher.<name>=...``)."""

    _target_: str = ""
    # Submit and wait (true), or submit and return at once; follow with `nrun status/logs`.
    wait: bool = True
    # Print the exact request of every point (command, script, spec) and submit nothing.
    dry_run: bool = False
    # Live view while waiting: auto (table on a terminal, lines otherwise), table, lines, quiet.
    progress: str = "auto"
    # Points running at once; null = the executor's default (local: the machine's cores).
    max_parallel: Optional[int] = None
    # Wall-clock limit per point, in seconds; null = none. A point over it is killed, marked TIMEOUT.
    timeout_s: Optional[float] = None
    # Times a failed point is started again before it counts as failed.
    retries: int = 0
    # Environment variables set for every point (values are stored with the sweep: no secrets).
    env: Dict[str, str] = field(default_factory=dict)
    # Names of variables passed from the launching shell to every point; values are never stored.
    secret_env: List[str] = field(default_factory=list)
    # Sweep name shown by `nrun list` (default: the app's task name).
    sweep_name: Optional[str] = None
    # Skip points that already completed in an earlier sweep with the same name and overrides.
    resume: bool = False
    # Resources of one point; launchers (torchrun, ...) derive their process layout from them.
    nodes: int = 1
    gpus_per_node: int = 0
    cpus_per_task: Optional[int] = None
    # Filled by the config groups `nrun/packager=...` and `nrun/launcher=...`.
    packager: Any = None
    launcher: Any = None


@dataclass
class LocalConf(NrunConf):
    """`hydra/launcher=nrun_local`: points as isolated processes on this machine."""

    _target_: str = f"{PLUGIN}.NrunLocalLauncher"
    # fork: run the task in a forked child of the launcher (cheapest; needs the direct launcher
    # and the passthrough packager); command: run `python app.py <overrides>` as a subprocess;
    # auto: fork when possible, command otherwise (torchrun, a packaged snapshot).
    mode: str = "auto"
