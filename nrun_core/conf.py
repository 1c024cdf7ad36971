"""Structured configs (dataclasses) of the nrun launchers, registered with Hydra's ConfigStore.

Imported by the Hydra plugin at every start of every Hydra app, so it imports nothing beyond
dataclasses, typing and omegaconf (which Hydra has already loaded). Each executor's config
subclasses ``NrunConf``; options shared by every backend live there so they spell the same
everywhere.
"""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

PLUGIN = "hydra_plugins.nrun_launcher.nrun_launcher"


@dataclass
class NrunConf:
    """Options every nrun launcher understands (``hydra.launcher.<name>=...``)."""

    _target_: str = f"{PLUGIN}.NrunLauncher"
    # The executor this config selects (set by the registry; not a user setting).
    _executor_: str = ""
    # Submit and wait (true), or submit and return at once; follow with `nrun status/logs`.
    wait: bool = True
    # Print the exact request of every point (command, script, spec) and submit nothing.
    dry_run: bool = False
    # Live view while waiting: auto (table on a terminal, lines otherwise), table, lines, quiet.
    progress: str = "auto"
    # The points' own output (stdout/stderr) on this terminal, each line prefixed by its point:
    # auto (on for a sweep of one point), true, false. Never in the detached mode (wait=false).
    stream: str = "auto"
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

    # fork: run the task in a forked child of the launcher (cheapest; needs the direct launcher
    # and the passthrough packager); command: run `python app.py <overrides>` as a subprocess;
    # auto: fork when possible, command otherwise (torchrun, a packaged snapshot).
    mode: str = "auto"


@dataclass
class SlurmSshConf:
    """Submit from a machine that is not the login node: ship the code over SSH, run sbatch there."""

    # Login node; null = submit with the local sbatch (the usual case on the login node itself).
    host: Optional[str] = None
    port: int = 22
    user: Optional[str] = None
    # Private key file (default: the SSH agent and ~/.ssh/id_*). Passphrases are never stored.
    key_file: Optional[str] = None
    # Host keys are checked strictly against this file (default ~/.ssh/known_hosts); an unknown
    # or changed host key stops the submission.
    known_hosts: Optional[str] = None
    # Directory on the cluster's shared filesystem for code, job dirs and submitit files.
    remote_dir: str = "nrun"
    # Seconds to wait for the connection.
    connect_timeout_s: float = 15.0
    # Environment of the commands nrun runs on the login node (e.g. SLURM_CONF, PATH).
    env: Dict[str, str] = field(default_factory=dict)


@dataclass
class SlurmConf(NrunConf):
    """`hydra/launcher=nrun_slurm`: the sweep as Slurm job arrays, submitted through submitit.

    Array task i runs point i (or, packed, several points in one Python); hydra.job.id is its
    Slurm id (<array>_<i>, or <array>_<i>:<k> for point k of a pack). A sweep larger than the
    cluster's MaxArraySize is split into several arrays. secret_env values
    reach the points through the environment sbatch exports from the submitting process (over
    SSH: through the encrypted stdin of the remote submit): nrun writes them nowhere (not in the
    batch script, the submitit pickles or the store); Slurm itself keeps each job's environment
    in its state directory, as for any sbatch.
    """

    # inprocess: each array task runs the task function in submitit's worker with the config
    # composed here (one Python per point, no second composition: the cheapest); command: each
    # task runs `python app.py <overrides>`; auto: inprocess for one-process points
    # (direct launcher, one node, one task, no container, no SSH), command otherwise.
    mode: str = "auto"
    # sbatch options; null leaves each to the cluster's defaults.
    partition: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    # Time limit of each point: minutes, or "[D-]HH:MM[:SS]"; null = timeout_s rounded up to
    # minutes plus one, else the partition's default (a pack of K points: K times the limit).
    time: Any = None
    # Tasks per node (direct launcher: each task runs the command with RANK/WORLD_SIZE/MASTER_ADDR
    # set from Slurm); with torchrun keep 1 (torchrun starts one worker per GPU itself).
    ntasks_per_node: int = 1
    gres: Optional[str] = None
    # Memory per node, e.g. "16G", "500M"; null = the cluster's default.
    mem: Optional[str] = None
    constraint: Optional[str] = None
    exclude: Optional[str] = None
    nodelist: Optional[str] = None
    # true, or one of "user", "mcs", "topo" (sbatch --exclusive[=...]).
    exclusive: Any = None
    # Array tasks running at once across the whole sweep (sbatch --array=...%N, shared over the
    # arrays of a split sweep); null = max_parallel, else all.
    array_parallelism: Optional[int] = None
    # Points run one after the other in each array task, in one warm Python (a fork per point;
    # in-process points only). null = auto: packs many short in-process points so that the
    # array tasks still outnumber what can run at once (see the dry run); 1 = never pack.
    points_per_task: Optional[int] = None
    # Largest array index + 1 (Slurm's MaxArraySize); a larger sweep is split into several
    # arrays. null = read from the cluster (scontrol show config).
    max_array_size: Optional[int] = None
    job_name: Optional[str] = None
    comment: Optional[str] = None
    # Any other sbatch option, e.g. {"mail-type": "END", "reservation": "mine"}.
    additional_parameters: Dict[str, Any] = field(default_factory=dict)
    # Extra srun arguments (multi-node and container points run through srun).
    srun_args: List[str] = field(default_factory=list)
    # Shell lines run in the sbatch script before the point (module load ..., source env).
    # They are shell by design: nrun does not quote them.
    setup: List[str] = field(default_factory=list)
    # Run the point through srun (a job step); null = only when needed (several nodes or tasks,
    # a container). Without srun a single-node point starts faster and costs less.
    use_srun: Optional[bool] = None
    # Python on the compute nodes (with hydra-nrun and submitit); null = this Python (shared
    # filesystem), "python" in a container, "python3" over SSH.
    python: Optional[str] = None
    # Container (pyxis/enroot): image, and mounts "src:dst[:flags]". The sweep dir and the code
    # dir are mounted at the same paths automatically.
    container_image: Optional[str] = None
    container_mounts: List[str] = field(default_factory=list)
    container_workdir: Optional[str] = None
    # Wait for other jobs first: "[afterok|afterany|afternotok|after:]REF", REF a Slurm job id
    # (123, 123_4), an nrun sweep (id, id prefix, name, "last") or one of its points ("SWEEP/3").
    dependencies: List[str] = field(default_factory=list)
    # submitit: times a timed-out point is checkpointed and requeued (it restarts; read
    # SLURM_RESTART_COUNT to resume), and how long before the limit it is warned (USR2).
    max_num_timeout: int = 0
    signal_delay_s: int = 90
    # Check the request with `sbatch --test-only` before submitting (unknown partition, too many
    # nodes, time over the limit...).
    test_only: bool = True
    # submitit's files (pickles, worker logs); null = <sweep dir>/.submitit.
    submitit_folder: Optional[str] = None
    ssh: SlurmSshConf = field(default_factory=SlurmSshConf)


@dataclass
class ContainerConf(NrunConf):
    """Options of every launcher whose points run in a container image (docker, the cloud ones)."""

    # Image to run (required), e.g. "python:3.11" or "nvcr.io/nvidia/pytorch:24.05-py3".
    image: Optional[str] = None
    # Python inside the image; it replaces the launcher's own interpreter in the point's command.
    python: str = "python3"
    # Words put before the point's command, e.g. ["nsys", "profile", "-o", "prof"].
    command_prefix: List[str] = field(default_factory=list)


@dataclass
class DockerConf(ContainerConf):
    """`hydra/launcher=nrun_docker`: each point in its own container(s) on a Docker engine."""
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


@dataclass
class SshConf(NrunConf):
    """`hydra/launcher=nrun_ssh`: a list of SSH hosts as a cluster, no scheduler needed.

    Hosts are strings (``[user@]address[:port]``) or mappings with name, address, port, user,
    key_file, slots, gpus, python, remote_dir, env; or a hosts file (YAML, ``hosts: [...]``).
    """

    # The hosts; empty = hosts_file, else $NRUN_SSH_HOSTS_FILE (`nrun sandbox ssh env` exports it).
    hosts: List[Any] = field(default_factory=list)
    hosts_file: Optional[str] = None
    # Host keys are checked strictly against this file (null = $NRUN_SSH_KNOWN_HOSTS, else
    # ~/.ssh/known_hosts); an unknown or changed key stops the sweep. Nothing is ever added.
    known_hosts: Optional[str] = None
    # Where nrun keeps code and its helpers on each host (relative = the remote home).
    remote_dir: str = ".nrun/ssh"
    # Python on the hosts (with hydra-core and the task's packages); a host's own `python` wins.
    python: str = "python3"
    # Shell lines run on the host before each point (e.g. "source ~/venv/bin/activate");
    # shell by design: nrun does not quote them.
    setup: List[str] = field(default_factory=list)
    # Keep each point's job dir on hosts that do not share the launcher's filesystem (after its
    # files came back); false removes it.
    keep_remote: bool = False
    connect_timeout_s: float = 15.0
    # A host that stops answering this long: its running points end as lost.
    host_lost_s: float = 30.0
    # Run each node in `docker run` on its host: image (null = no container), docker (the CLI on
    # the host), python (in the image), gpus ("all" or N; null = gpus_per_node), shm_size, ipc,
    # mounts ("SRC:DST[:ro]"), options (more `docker run` words). Host network.
    container: Dict[str, Any] = field(default_factory=lambda: {
        "image": None, "docker": "docker", "python": "python3", "gpus": None, "shm_size": None,
        "ipc": None, "mounts": [], "options": []})
