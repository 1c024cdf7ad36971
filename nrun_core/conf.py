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


@dataclass
class DockerConf(NrunConf):
    """`hydra/launcher=nrun_docker`: each point in its own container(s) on a Docker engine."""

    _target_: str = f"{PLUGIN}.NrunDockerLauncher"
    # Image to run (required), e.g. "python:3.11" or "nvcr.io/nvidia/pytorch:24.05-py3".
    image: Optional[str] = None
    # Python inside the image; it replaces the launcher's own interpreter in the point's command.
    python: str = "python3"
    # Words put before the point's command, e.g. ["nsys", "profile", "-o", "prof"].
    command_prefix: List[str] = field(default_factory=list)
    # GPUs per container: null = gpus_per_node, -1 = all, N = N (needs a GPU runtime).
    num_gpus: Optional[int] = None
    # Raw device requests, each {driver, count, device_ids, capabilities, options}.
    device_requests: List[Dict[str, Any]] = field(default_factory=list)
    # Container runtime (e.g. "nvidia"), ipc mode ("host"), /dev/shm size ("16g").
    runtime: Optional[str] = None
    ipc_mode: Optional[str] = None
    shm_size: Optional[str] = None
    # ulimits by name: N (soft = hard) or "SOFT:HARD", e.g. {memlock: -1, stack: 67108864}.
    ulimits: Dict[str, Any] = field(default_factory=dict)
    # Extra mounts in `docker run -v` syntax: "HOST:CONTAINER[:ro]" (relative HOST paths start at
    # the launch directory; a name without a slash is a named volume).
    volumes: List[str] = field(default_factory=list)
    # Network to join; null = the default bridge for one node, a network of its own (created and
    # removed by nrun) for each multi-node point.
    network: Optional[str] = None
    # "UID:GID" or a name; null = the caller's uid:gid when the caller is not root (files in the
    # job dir stay the caller's), the image's user otherwise.
    user: Optional[str] = None
    # Where the command starts in the container; null = the code's working directory.
    working_dir: Optional[str] = None
    # Memory limit (e.g. "4g"; swap is not added: a point over it is killed and reported OOM)
    # and CPUs (e.g. 1.5); null cpus = cpus_per_task, else no limit.
    mem_limit: Optional[str] = None
    cpus: Optional[float] = None
    # Image pull: missing (pull only if absent), always, never.
    pull: str = "missing"
    # Container removal once its exit code and OOM state are read: always, on_success, never.
    remove: str = "always"
    # Extra labels on every container and network (nrun adds nrun.sweep / nrun.point / nrun.node).
    labels: Dict[str, str] = field(default_factory=dict)
    # Engine address; null = $DOCKER_HOST, else the local default socket.
    docker_host: Optional[str] = None
