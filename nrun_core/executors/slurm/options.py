"""nrun_slurm settings → submitit's sbatch parameters, checked before anything is submitted.

Pure functions (no submitit, no cluster): the executor, the dry run and the remote submit helper
all build the same parameters from here. Every value that lands in an ``#SBATCH`` line is
checked for control characters: a newline there would start a new line of the batch script,
i.e. run arbitrary shell. ``setup`` lines are shell by design and are the one exception.
"""

from __future__ import annotations

import math
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence

from nrun_core.errors import ConfigError

MODES = ("auto", "inprocess", "command")
EXCLUSIVE = ("user", "mcs", "topo")
# sbatch options nrun sets itself; each has its own setting.
MANAGED = {
    "array": "nrun builds --array itself (throttle: array_parallelism; points per task: points_per_task)",
    "output": "point logs go to the point's job dir; submitit's own logs to submitit_folder",
    "error": "point logs go to the point's job dir; submitit's own logs to submitit_folder",
    "open-mode": "nrun appends to the logs so a requeued point keeps its first attempt's output",
    "signal": "use hydra.launcher.signal_delay_s",
    "dependency": "use hydra.launcher.dependencies=[afterok:ID,...]",
    "job-name": "use hydra.launcher.job_name",
    "wrap": "nrun writes the batch script",
    "parsable": "nrun reads sbatch's answer itself",
    "test-only": "use hydra.launcher.test_only",
}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_FLAG = re.compile(r"^[a-z][a-z0-9_-]*$")
_MEM = re.compile(r"^\d+(\.\d+)?[KMGT]?B?$", re.IGNORECASE)
_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")
_MOUNT = re.compile(r"^[^:,]+(:[^:,]+(:[^:,]+)?)?$")
_TEXT_KEYS = ("partition", "account", "qos", "gres", "constraint", "exclude", "nodelist", "job_name",
              "comment", "container_image", "container_workdir", "python", "submitit_folder")


def check(conf: Any) -> None:
    """Every nrun_slurm setting, or a ConfigError naming the setting and the fix."""
    mode = conf.mode
    if mode not in MODES:
        raise ConfigError(f"hydra.launcher.mode={mode!r}: choose one of {', '.join(MODES)}")
    for key in _TEXT_KEYS:
        value = getattr(conf, key)
        if value is None:
            continue
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"hydra.launcher.{key}={value!r}: must be a non-empty string, or null")
        _no_control(f"hydra.launcher.{key}", value)
    time_minutes(conf.time, conf.timeout_s)
    mem = conf.mem
    if mem is not None and not _MEM.match(str(mem)):
        raise ConfigError(f"hydra.launcher.mem={mem!r}: write memory per node like 16G, 500M or 4000 "
                          "(megabytes)")
    exclusive = conf.exclusive
    if exclusive not in (None, True, False) and exclusive not in EXCLUSIVE:
        raise ConfigError(f"hydra.launcher.exclusive={exclusive!r}: use true, or one of {EXCLUSIVE}")
    for key in ("ntasks_per_node", "array_parallelism", "cpus_per_task", "points_per_task"):
        value = getattr(conf, key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ConfigError(f"hydra.launcher.{key}={value!r}: must be an integer >= 1")
    mas = conf.max_array_size
    if mas is not None and (not isinstance(mas, int) or isinstance(mas, bool) or mas < 2):
        raise ConfigError(f"hydra.launcher.max_array_size={mas!r}: must be an integer >= 2 (Slurm's "
                          "MaxArraySize: array indices go up to MaxArraySize-1), or null to read it from "
                          "the cluster")
    ap, mp = conf.array_parallelism, conf.max_parallel
    if ap is not None and mp is not None and ap != mp:
        raise ConfigError(f"hydra.launcher.array_parallelism={ap} and max_parallel={mp} say the same "
                          "thing differently for Slurm; set only one of them")
    for key in ("max_num_timeout", "signal_delay_s"):
        value = getattr(conf, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"hydra.launcher.{key}={value!r}: must be an integer >= 0")
    _check_additional(conf.additional_parameters or {})
    for key in ("srun_args", "setup", "container_mounts", "dependencies"):
        items = getattr(conf, key) or []
        if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
            raise ConfigError(f"hydra.launcher.{key} must be a list of strings, got {items!r}")
        for item in items:
            if key != "setup":
                _no_control(f"hydra.launcher.{key}", item)
            elif "\n" in item or "\r" in item:
                raise ConfigError("hydra.launcher.setup: give one shell line per list item (no newlines)")
    for mount in conf.container_mounts or []:
        if not _MOUNT.match(mount):
            raise ConfigError(f"hydra.launcher.container_mounts: {mount!r} is not SRC[:DST[:FLAGS]]")
    use_srun, nodes = conf.use_srun, conf.nodes
    tasks = conf.ntasks_per_node or 1
    if use_srun is False and (nodes > 1 or tasks > 1):
        raise ConfigError(f"hydra.launcher.use_srun=false with nodes={nodes}, ntasks_per_node={tasks}: "
                          "only srun starts a task on every node; set use_srun=true (or null)")
    if use_srun is False and conf.container_image:
        raise ConfigError("hydra.launcher.container_image needs srun (pyxis adds its flags to srun); "
                          "set use_srun=true (or null)")
    launcher = (conf.launcher or {}).get("name", "direct")
    if launcher in ("torchrun", "ft") and tasks > 1:
        raise ConfigError(f"hydra.launcher.ntasks_per_node={tasks} with nrun/launcher={launcher}: {launcher} "
                          "starts the workers of a node itself; keep ntasks_per_node=1 and set "
                          "hydra.launcher.launcher.nproc_per_node (or gpus_per_node)")
    if launcher == "ray" and tasks > 1:
        raise ConfigError(f"hydra.launcher.ntasks_per_node={tasks} with nrun/launcher=ray: one Ray node per "
                          "Slurm node runs all of that node's Ray tasks; keep ntasks_per_node=1 (give Ray "
                          "the node's CPUs with cpus_per_task, or hydra.launcher.launcher.num_cpus)")
    if conf.gres and conf.gpus_per_node:
        raise ConfigError("hydra.launcher.gres and gpus_per_node both ask for GPUs; set one of them")


def time_minutes(value: Any, timeout_s: Optional[float]) -> Optional[int]:
    """The per-point time limit in whole minutes (what sbatch --time and submitit take).

    Unset: with timeout_s, that rounded up plus a minute (nrun itself stops the point at
    timeout_s; Slurm's limit is only the backstop); without, None: no --time at all, so the
    partition's own default and maximum apply, as for any sbatch the user writes.
    """
    if value is None:
        return math.ceil(timeout_s / 60) + 1 if timeout_s else None
    if isinstance(value, bool):
        raise ConfigError(f"hydra.launcher.time={value!r}: give minutes or \"[D-]HH:MM[:SS]\"")
    if isinstance(value, (int, float)):
        if value <= 0:
            raise ConfigError(f"hydra.launcher.time={value!r}: must be > 0 minutes")
        return max(1, math.ceil(value))
    m = _TIME.match(str(value).strip())
    if not m:
        raise ConfigError(f"hydra.launcher.time={value!r}: write minutes (90), \"HH:MM:SS\" (01:30:00) "
                          "or \"D-HH:MM\" (1-12:00)")
    days, a, b, c = m.groups()
    nums = [int(x) for x in (a, b, c) if x is not None]
    if days is not None:  # D-HH, D-HH:MM, D-HH:MM:SS
        h, mi, s = (nums + [0, 0])[:3]
        seconds = int(days) * 86400 + h * 3600 + mi * 60 + s
    elif len(nums) == 1:  # MM
        seconds = nums[0] * 60
    elif len(nums) == 2:  # MM:SS
        seconds = nums[0] * 60 + nums[1]
    else:  # HH:MM:SS
        seconds = nums[0] * 3600 + nums[1] * 60 + nums[2]
    if seconds <= 0:
        raise ConfigError(f"hydra.launcher.time={value!r}: must be longer than 0")
    return max(1, math.ceil(seconds / 60))


def use_srun(conf: Any) -> bool:
    """srun only when needed: several nodes or tasks, or a container (pyxis hooks srun)."""
    explicit = conf.use_srun
    if explicit is not None:
        return bool(explicit)
    return conf.nodes > 1 or (conf.ntasks_per_node or 1) > 1 or bool(conf.container_image)


def python(conf: Any, default: Optional[str]) -> Optional[str]:
    """The interpreter on the nodes: the setting; "python" in a container; "python3" on a login
    node reached over SSH (this machine's path means nothing there); else ``default``."""
    if conf.python:
        return str(conf.python)
    if conf.container_image:
        return "python"
    return "python3" if conf.ssh.host else default


def container_args(conf: Any, auto_mounts: Sequence[str]) -> List[str]:
    """pyxis srun flags; the sweep's own directories are mounted at the same paths."""
    image = conf.container_image
    if not image:
        return []
    mounts: List[str] = []
    for m in [*(conf.container_mounts or []), *(f"{p}:{p}" for p in auto_mounts)]:
        if m not in mounts:
            mounts.append(m)
    args = [f"--container-image={image}"]
    if mounts:
        args.append(f"--container-mounts={','.join(mounts)}")
    if conf.container_workdir:
        args.append(f"--container-workdir={conf.container_workdir}")
    return args


def time_text(conf: Any) -> str:
    """Where each point's Slurm time limit comes from, for the dry run and the sweep header."""
    minutes = time_minutes(conf.time, conf.timeout_s)
    if conf.time is not None:
        return f"{minutes} min (hydra.launcher.time)"
    if minutes is not None:
        return (f"{minutes} min (hydra.launcher.timeout_s={conf.timeout_s:g} rounded up, plus a minute; "
                "nrun stops the point at timeout_s)")
    return "the partition's default (hydra.launcher.time and timeout_s unset)"


def pack_minutes(conf: Any, points_per_task: int) -> Optional[int]:
    """The time limit of an array task that runs ``points_per_task`` points one after the other:
    the per-point limit times the points (from timeout_s: their sum, plus a minute)."""
    if points_per_task <= 1:
        return time_minutes(conf.time, conf.timeout_s)
    if conf.time is None:
        return math.ceil(points_per_task * conf.timeout_s / 60) + 1 if conf.timeout_s else None
    return (time_minutes(conf.time, conf.timeout_s) or 0) * points_per_task


def parameters(conf: Any, *, job_name: str, dependency: Optional[str],
               auto_mounts: Sequence[str], points_per_task: int = 1) -> Dict[str, Any]:
    """Keyword arguments of submitit's ``SlurmExecutor.update_parameters`` (its own names)."""
    srun = use_srun(conf)
    params: Dict[str, Any] = {
        "job_name": conf.job_name or job_name,
        "time": pack_minutes(conf, points_per_task),
        "nodes": conf.nodes,
        "ntasks_per_node": conf.ntasks_per_node or 1,
        "signal_delay_s": conf.signal_delay_s,
        "use_srun": srun,
        "stderr_to_stdout": False,
    }
    for key in ("partition", "account", "qos", "gres", "mem", "constraint", "exclude", "nodelist",
                "cpus_per_task", "comment"):
        if getattr(conf, key) is not None:
            params[key] = getattr(conf, key)
    if conf.gpus_per_node:
        params["gpus_per_node"] = conf.gpus_per_node
    if conf.exclusive:
        params["exclusive"] = conf.exclusive
    throttle = conf.array_parallelism or conf.max_parallel
    if throttle:
        params["array_parallelism"] = throttle
    if conf.setup:
        params["setup"] = list(conf.setup)
    srun_args = [*container_args(conf, auto_mounts), *(conf.srun_args or [])]
    if srun_args:
        params["srun_args"] = srun_args
    extra: Dict[str, Any] = {}
    if dependency:
        params["dependency"] = dependency
        extra["kill-on-invalid-dep"] = "yes"  # a never-satisfiable dependency cancels, not pends forever
    if not srun:
        # No job step: the worker is the batch shell itself (exec), so Slurm's warning before the
        # time limit must go to the batch shell (B:), or submitit never sees it.
        extra["signal"] = f"B:USR2@{conf.signal_delay_s}"
    extra.update({str(k).replace("_", "-"): v for k, v in (conf.additional_parameters or {}).items()})
    if extra:
        params["additional_parameters"] = extra
    return params


def _check_additional(extra: Mapping[str, Any]) -> None:
    if not isinstance(extra, Mapping):
        raise ConfigError(f"hydra.launcher.additional_parameters must be a mapping of sbatch options, got {extra!r}")
    for key, value in extra.items():
        flag = str(key).replace("_", "-")
        if not _FLAG.match(flag):
            raise ConfigError(f"hydra.launcher.additional_parameters: {key!r} is not an sbatch option name "
                              "(write it without dashes, e.g. mail-type)")
        if flag in MANAGED:
            raise ConfigError(f"hydra.launcher.additional_parameters.{key}: nrun sets --{flag} itself; "
                              f"{MANAGED[flag]}")
        if not isinstance(value, (str, int, float, bool)) or value is False:
            raise ConfigError(f"hydra.launcher.additional_parameters.{key}={value!r}: give a string or "
                              "number (true for a flag without value)")
        _no_control(f"hydra.launcher.additional_parameters.{key}", str(value))


def _no_control(name: str, value: str) -> None:
    if _CONTROL.search(value):
        raise ConfigError(f"{name}={value!r} holds a newline or control character; it would change the "
                          "batch script. Remove it.")
