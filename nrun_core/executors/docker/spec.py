"""What one container of a point is: plain data built from a JobSpec and the nrun_docker options.

The same ``ContainerSpec`` is sent to the engine by ``docker_engine`` and shown by the dry run as
the equivalent ``docker run`` line, so what is printed is what runs. Nothing here talks to the
engine or imports docker-py.

Layout inside every container (the job dir is at the same absolute path as on the host, so the
point's Hydra config, its logs and its result file mean the same thing on both sides):
- packaged code (workdir/git/... packagers): the host snapshot, read-only, at ``/nrun/code``;
- passthrough: the launch directory (and the app's directory if elsewhere), read-only, at the
  same paths;
- the point runtime (``nrun_point.py``: stdlib + hydra + omegaconf), read-only, at ``/nrun/lib``;
  nothing is put on PYTHONPATH, so an nrun installed in the image is never shadowed;
- the point's job dir, read-write, at its host path; user volumes as given.
The command runs under ``sh -c 'exec "$@" >>"$NRUN_STDOUT" 2>>"$NRUN_STDERR"'``: the container
writes its logs straight into the job dir (live, and kept even if the launcher dies); the script
is a constant and every user word travels as an argument, never through the shell.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

from nrun_core import wrappers
from nrun_core.errors import ConfigError
from nrun_core.placement import Placement
from nrun_core.spec import JobSpec

CODE_DIR = "/nrun/code"
LIB_DIR = "/nrun/lib"
RUNTIME = f"{LIB_DIR}/nrun_point.py"
LOG_SCRIPT = 'exec "$@" >>"$NRUN_STDOUT" 2>>"$NRUN_STDERR"'
PULL = ("missing", "always", "never")
REMOVE = ("always", "on_success", "never")
_SIZE = re.compile(r"^[0-9]+[bkmg]?$", re.I)
_DEVICE_KEYS = {"driver", "count", "device_ids", "capabilities", "options"}
_SHARED_NETWORKS = {"bridge", "default", "host", "none"}


@dataclass(frozen=True)
class Mount:
    source: str          # host path (bind) or volume name (volume)
    target: str          # path in the container
    read_only: bool = False
    kind: str = "bind"   # bind | volume


@dataclass
class ContainerSpec:
    """One container of one point, exactly as it is created."""

    name: str
    image: str
    command: List[str]
    labels: Dict[str, str]
    env: Dict[str, str]
    secret_env: List[str]          # names only; values are read from the launching shell at create
    working_dir: str
    mounts: List[Mount]
    user: Optional[str] = None
    network: Optional[str] = None
    mem_limit: Optional[str] = None
    nano_cpus: Optional[int] = None
    shm_size: Optional[str] = None
    ipc_mode: Optional[str] = None
    runtime: Optional[str] = None
    ulimits: List[Tuple[str, int, int]] = field(default_factory=list)
    device_requests: List[Dict[str, Any]] = field(default_factory=list)

    @property
    def hostname(self) -> str:
        return self.name


@dataclass(frozen=True)
class CodeLayout:
    """Where the point's code comes from on the host, per point (its artifact or the tree)."""

    snapshot_root: Optional[str]          # host snapshot of a packaged artifact, else None
    passthrough_dirs: Tuple[str, ...] = ()  # host dirs mounted at the same path (passthrough)


# ---------------------------------------------------------------------------------- naming
def container_name(spec: JobSpec, node: int, attempt: int = 1) -> str:
    suffix = f"-a{attempt}" if attempt > 1 else ""
    return f"nrun-{spec.sweep_id}-{spec.index}-{node}{suffix}"


def network_name(spec: JobSpec, attempt: int = 1) -> str:
    suffix = f"-a{attempt}" if attempt > 1 else ""
    return f"nrun-{spec.sweep_id}-{spec.index}{suffix}"


def node_log(spec: JobSpec, node: int, stream: str) -> str:
    """Node 0 writes the point's stdout.log/stderr.log (what `nrun logs` shows); node k its own."""
    if node == 0:
        return spec.stdout if stream == "stdout" else spec.stderr
    return os.path.join(spec.job_dir, f"{stream}.node{node}.log")


def labels_for(conf: Any, spec: JobSpec, node: Optional[int] = None) -> Dict[str, str]:
    out = {str(k): str(v) for k, v in (conf.labels or {}).items()}
    out.update({"nrun.sweep": spec.sweep_id, "nrun.point": str(spec.index)})
    if node is not None:
        out["nrun.node"] = str(node)
    return out


# ---------------------------------------------------------------------------------- checks
def check_options(conf: Any) -> None:
    """Static checks of the nrun_docker options: ConfigError naming the setting and the fix."""
    image = conf.image
    if not image or not str(image).strip():
        raise ConfigError("hydra.launcher.image is not set: nrun_docker needs the image to run each "
                          "point in, e.g. hydra.launcher.image=python:3.11 (it needs python3 and "
                          "hydra-core inside)")
    if conf.pull not in PULL:
        raise ConfigError(f"hydra.launcher.pull={conf.pull!r}: choose one of {', '.join(PULL)}")
    if conf.remove not in REMOVE:
        raise ConfigError(f"hydra.launcher.remove={conf.remove!r}: choose one of {', '.join(REMOVE)}")
    if not str(conf.python or "").strip():
        raise ConfigError("hydra.launcher.python is empty: name the image's Python, e.g. python3")
    gpus = conf.num_gpus
    if gpus is not None and (not isinstance(gpus, int) or gpus < -1):
        raise ConfigError(f"hydra.launcher.num_gpus={gpus!r}: -1 (all), 0, a positive count, or null "
                          "(= hydra.launcher.gpus_per_node)")
    for i, req in enumerate(conf.device_requests or []):
        unknown = set(req or {}) - _DEVICE_KEYS
        if not isinstance(req, Mapping) or unknown:
            raise ConfigError(f"hydra.launcher.device_requests[{i}]: unknown key(s) {sorted(unknown)}; "
                              f"valid: {sorted(_DEVICE_KEYS)}")
    for key in ("shm_size", "mem_limit"):
        value = getattr(conf, key)
        if value is not None and not _SIZE.match(str(value)):
            raise ConfigError(f"hydra.launcher.{key}={value!r}: a size like 512m, 4g or 1073741824")
    cpus = conf.cpus
    if cpus is not None and (not isinstance(cpus, (int, float)) or cpus <= 0):
        raise ConfigError(f"hydra.launcher.cpus={cpus!r}: a positive number of CPUs (e.g. 1.5), or null")
    for name, value in (conf.ulimits or {}).items():
        _ulimit(str(name), value)
    for i, vol in enumerate(conf.volumes or []):
        parse_volume(i, str(vol), check_source=False)
    wd = conf.working_dir
    if wd is not None and not str(wd).startswith("/"):
        raise ConfigError(f"hydra.launcher.working_dir={wd!r}: must be an absolute path in the container")
    nodes = int(conf.nodes)
    if nodes > 1:
        if (conf.launcher or {}).get("name", "direct") not in wrappers.ELASTIC:
            raise ConfigError(f"hydra.launcher.nodes={nodes} starts one container per node; they need "
                              "a launcher to cooperate: add nrun/launcher=torchrun")
        net = conf.network
        if net in _SHARED_NETWORKS:
            raise ConfigError(f"hydra.launcher.network={net}: containers of a multi-node point must "
                              "find each other by name, which needs a user-defined network; leave "
                              "network unset (nrun creates one per point) or name one you created")


def _ulimit(name: str, value: Any) -> Tuple[str, int, int]:
    try:
        if isinstance(value, Mapping):
            soft, hard = int(value["soft"]), int(value["hard"])
        elif isinstance(value, str) and ":" in value:
            a, b = value.split(":", 1)
            soft, hard = int(a), int(b)
        else:
            soft = hard = int(value)
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"hydra.launcher.ulimits.{name}={value!r}: give N (soft = hard), "
                          "\"SOFT:HARD\" or {soft: N, hard: M}; -1 means unlimited") from None
    return name, soft, hard


def parse_volume(i: int, text: str, check_source: bool = True) -> Mount:
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise ConfigError(f"hydra.launcher.volumes[{i}]={text!r}: use HOST:CONTAINER or "
                          "HOST:CONTAINER:ro (HOST a path, or a volume name)")
    source, target = parts[0], parts[1]
    mode = parts[2] if len(parts) == 3 else "rw"
    if mode not in ("ro", "rw"):
        raise ConfigError(f"hydra.launcher.volumes[{i}]={text!r}: the mode must be ro or rw, not {mode!r}")
    if not target.startswith("/"):
        raise ConfigError(f"hydra.launcher.volumes[{i}]={text!r}: the container path must be absolute")
    if target == "/nrun" or target.startswith("/nrun/"):
        raise ConfigError(f"hydra.launcher.volumes[{i}]={text!r}: /nrun is nrun's own (code, runtime); "
                          "mount elsewhere")
    is_path = source.startswith(("/", ".", "~"))
    if not is_path:
        return Mount(source, target, mode == "ro", "volume")
    host = os.path.abspath(os.path.expanduser(source))
    if check_source and not os.path.exists(host):
        raise ConfigError(f"hydra.launcher.volumes[{i}]={text!r}: {host} does not exist on this "
                          "machine; create it or fix the path (relative paths start at the launch dir)")
    return Mount(host, target, mode == "ro", "bind")


# ---------------------------------------------------------------------------------- building
def default_user(conf: Any) -> Optional[str]:
    """The configured user; unset: the caller's uid:gid unless the caller is root."""
    user = conf.user
    if user is not None:
        return str(user) or None
    uid = os.geteuid()
    return None if uid == 0 else f"{uid}:{os.getegid()}"


def numeric_uid(user: Optional[str]) -> Optional[int]:
    """The uid of a numeric ``UID[:GID]`` user, else None (names resolve only in the image)."""
    if not user:
        return None
    head = user.split(":", 1)[0]
    return int(head) if head.isdigit() else None


def placement(conf: Any, spec: JobSpec, code: CodeLayout) -> Placement:
    """The point's words inside its containers: the image's Python, the runtime at RUNTIME, the
    code at CODE_DIR (or, passthrough, at its host path), the job dir at its host path."""
    from nrun_core import threads

    return Placement(python=str(conf.python or "python3"), runtime=RUNTIME,
                     code_dir=CODE_DIR if code.snapshot_root else (spec.code_dir or os.getcwd()),
                     threads=threads.container_budget(conf.cpus, spec.cpus_per_task, conf.max_parallel))


def build(conf: Any, spec: JobSpec, node: int, *, code: CodeLayout, runtime_dir: str,
          attempt: int = 1) -> ContainerSpec:
    """The container of ``spec``'s node ``node``, from the options and where the code lives."""
    nodes = spec.nodes
    name = container_name(spec, node, attempt)
    user = default_user(conf)
    where = placement(conf, spec, code)
    mounts: List[Mount] = []
    if code.snapshot_root:
        mounts.append(Mount(code.snapshot_root, CODE_DIR, read_only=True))
    else:
        mounts += [Mount(d, d, read_only=True) for d in code.passthrough_dirs]
    mounts.append(Mount(runtime_dir, LIB_DIR, read_only=True))
    mounts.append(Mount(spec.job_dir, spec.job_dir))
    mounts += [parse_volume(i, str(v)) for i, v in enumerate(conf.volumes or [])]

    extra = {"NRUN_NODE": str(node), "NRUN_STDOUT": node_log(spec, node, "stdout"),
             "NRUN_STDERR": node_log(spec, node, "stderr")}
    if numeric_uid(user) not in (None, 0) and "HOME" not in spec.env:
        extra["HOME"] = "/tmp"  # an arbitrary uid has no home in the image
    network = conf.network
    if nodes > 1:
        lay = wrappers.layout(conf.launcher, nodes=nodes, gpus_per_node=spec.gpus_per_node)
        extra.update(wrappers.node_env(lay, node_rank=node, head_host=container_name(spec, 0, attempt)))
        network = network or network_name(spec, attempt)
    env = where.env(spec, token=spec.token(attempt), extra=extra)

    command = ["sh", "-c", LOG_SCRIPT, "nrun-point", *[str(w) for w in conf.command_prefix or []],
               *where.argv(spec)]
    cpus = conf.cpus if conf.cpus is not None else conf.cpus_per_task
    return ContainerSpec(
        name=name, image=str(conf.image), command=command, labels=labels_for(conf, spec, node),
        env=env, secret_env=list(spec.secret_env), working_dir=str(conf.working_dir or where.workdir(spec)),
        mounts=mounts, user=user, network=network, mem_limit=conf.mem_limit,
        nano_cpus=int(float(cpus) * 1e9) if cpus else None, shm_size=conf.shm_size,
        ipc_mode=conf.ipc_mode, runtime=conf.runtime,
        ulimits=[_ulimit(str(k), v) for k, v in (conf.ulimits or {}).items()],
        device_requests=device_requests(conf, spec))


def device_requests(conf: Any, spec: JobSpec) -> List[Dict[str, Any]]:
    """`--gpus` as the engine's device requests, plus any raw ones given."""
    count = conf.num_gpus
    count = spec.gpus_per_node if count is None else count
    out: List[Dict[str, Any]] = []
    if count:
        out.append({"driver": "", "count": int(count), "capabilities": [["gpu"]]})
    for req in conf.device_requests or []:
        out.append({k: v for k, v in dict(req).items() if v is not None})
    return out


def gpu_setting(conf: Any) -> str:
    """The setting a GPU request came from, for error messages."""
    if conf.device_requests:
        return "hydra.launcher.device_requests"
    if conf.num_gpus is not None:
        return f"hydra.launcher.num_gpus={conf.num_gpus}"
    return f"hydra.launcher.gpus_per_node={conf.gpus_per_node}"


# ---------------------------------------------------------------------------------- rendering
def render_run(cs: ContainerSpec) -> str:
    """The equivalent `docker run` line (every word quoted), one option group per line."""
    q = shlex.quote
    lines = ["docker run --detach --init", f"--name {q(cs.name)} --hostname {q(cs.hostname)}"]
    lines.append(" ".join(f"--label {q(f'{k}={v}')}" for k, v in sorted(cs.labels.items())))
    if cs.user:
        lines.append(f"--user {q(cs.user)}")
    lines.append(f"--workdir {q(cs.working_dir)}")
    for m in cs.mounts:
        kind = f"type={m.kind},source={m.source},target={m.target}" + (",readonly" if m.read_only else "")
        lines.append(f"--mount {q(kind)}")
    for k, v in sorted(cs.env.items()):
        lines.append(f"--env {q(f'{k}={v}')}")
    for k in cs.secret_env:
        lines.append(f"--env {q(k)}")  # docker's own syntax: the value comes from this shell
    opts = []
    if cs.network:
        opts.append(f"--network {q(cs.network)}")
    if cs.mem_limit:
        opts.append(f"--memory {q(cs.mem_limit)} --memory-swap {q(cs.mem_limit)}")
    if cs.nano_cpus:
        opts.append(f"--cpus {cs.nano_cpus / 1e9:g}")
    if cs.shm_size:
        opts.append(f"--shm-size {q(cs.shm_size)}")
    if cs.ipc_mode:
        opts.append(f"--ipc {q(cs.ipc_mode)}")
    opts += [f"--ulimit {q(f'{n}={s}:{h}')}" for n, s, h in cs.ulimits]
    if cs.runtime:
        opts.append(f"--runtime {q(cs.runtime)}")
    opts += [f"--gpus {q(_gpus_flag(r))}" for r in cs.device_requests]
    if opts:
        lines.append(" ".join(opts))
    lines.append(q(cs.image))
    lines.append(" ".join(q(w) for w in cs.command))
    return " \\\n    ".join(lines)


def _gpus_flag(req: Mapping[str, Any]) -> str:
    if set(req) <= {"driver", "count", "capabilities"} and not req.get("driver") \
            and req.get("capabilities") == [["gpu"]]:
        return "all" if req.get("count") == -1 else str(req.get("count"))
    parts = []
    if req.get("driver"):
        parts.append(f"driver={req['driver']}")
    if req.get("count") is not None:
        parts.append(f"count={'all' if req['count'] == -1 else req['count']}")
    if req.get("device_ids"):
        parts.append("device=" + ",".join(map(str, req["device_ids"])))
    for caps in req.get("capabilities") or []:
        parts.append("capabilities=" + ",".join(caps))
    for k, v in (req.get("options") or {}).items():
        parts.append(f"{k}={v}")
    return ",".join(f'"{p}"' if "," in p else p for p in parts)  # the CLI reads --gpus as CSV


def render_network(conf: Any, spec: JobSpec, name: str) -> str:
    labels = " ".join(f"--label {shlex.quote(f'{k}={v}')}" for k, v in sorted(labels_for(conf, spec).items()))
    return f"docker network create --driver bridge {labels} {shlex.quote(name)}"
