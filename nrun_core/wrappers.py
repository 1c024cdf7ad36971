"""Launchers (the `nrun/launcher` group): how a point's command becomes processes on nodes.

`direct` runs the command as it is. `torchrun` puts torch's elastic agent in front, with its
layout derived from the executor's resources (nodes, gpus_per_node) unless set explicitly.
`ft` is NVIDIA's fault-tolerant launcher (nvidia-resiliency-ext's ``ft_launcher``): torchrun's
agent plus rank monitors, the same argv shape and PET_* variables, its ``--ft-*`` options from
config. Multi-node executors pass the per-node values through torch's elastic environment
variables (PET_NODE_RANK, PET_RDZV_ENDPOINT), so the argv stays the same on every node and needs
no shell. `ray` starts a Ray cluster inside a Slurm allocation (head on the first node, workers
on the others: ``ray_start_argv``) and runs the point's command, unchanged, as the Ray driver
on the head (nrun_core/runtime/ray_node.py).

Which launchers an executor can run is its ``Executor.launchers``; ``validate`` refuses the
others at config time, before anything is composed or submitted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Union

from nrun_core.errors import ConfigError

# Launchers with torch's elastic agent on every node (they read PET_* as their flags).
ELASTIC = ("torchrun", "ft")

_ELASTIC_KEYS = {"name", "nproc_per_node", "nnodes", "max_restarts", "rdzv_backend", "rdzv_port", "extra_args"}
# ft_launcher's own options: config key -> flag (null in config: the flag is left out, ft's default holds).
FT_FLAGS = {
    "restart_policy": "--ft-restart-policy",
    "workload_check_interval": "--ft-workload-check-interval",
    "initial_rank_heartbeat_timeout": "--ft-initial-rank-heartbeat-timeout",
    "rank_heartbeat_timeout": "--ft-rank-heartbeat-timeout",
    "rank_section_timeouts": "--ft-rank-section-timeouts",
    "rank_out_of_section_timeout": "--ft-rank-out-of-section-timeout",
    "node_health_check_interval": "--ft-node-health-check-interval",
    "safety_factor": "--ft-safety-factor",
    "restart_check_interval": "--ft-restart-check-interval",
    "rank_termination_signal": "--ft-rank-termination-signal",
    "log_level": "--ft-log-level",
    "enable_nic_monitor": "--ft-enable-nic-monitor",
    "cfg_path": "--ft-cfg-path",
    "term_timeout": "--term-timeout",
    "workers_stop_timeout": "--workers-stop-timeout",
    "monitor_interval": "--monitor-interval",
}
RAY_DEFAULTS = {"port_base": 20000, "port_block": 100, "port_slots": 120, "object_store_bytes": None,
                "num_cpus": None, "num_gpus": None, "include_dashboard": False, "start_timeout_s": 120,
                "extra_args": []}
_KEYS = {
    "direct": {"name"},
    "torchrun": _ELASTIC_KEYS,
    "ft": _ELASTIC_KEYS | set(FT_FLAGS) | {"max_retries"},
    "ray": {"name"} | set(RAY_DEFAULTS),
}
# Why a launcher needs what it needs: the refusal names it when an executor cannot run it.
NEEDS = {
    "torchrun": "torch's elastic agent on every node of the point",
    "ft": "ft_launcher (nvidia-resiliency-ext, with torch) on every node of the point",
    "ray": "a Ray head and workers started inside one Slurm allocation (hydra/launcher=nrun_slurm)",
}
RESTART_POLICIES = ("any-failed", "min-healthy")
# Offsets of each Ray process's port inside a node's block (workers take the rest of the block).
RAY_PORTS = ("gcs", "node_manager", "object_manager", "client_server", "dashboard_agent_listen",
             "dashboard_agent_grpc", "runtime_env_agent", "metrics_export", "dashboard")
RAY_WORKER_PORTS_FROM = 10


@dataclass(frozen=True)
class Layout:
    """Processes of one point: what executors must provide (nodes) and set per node."""

    nnodes: int
    nproc_per_node: int
    rdzv_port: int = 29500

    @property
    def world_size(self) -> int:
        return self.nnodes * self.nproc_per_node


def name_of(cfg: Optional[Mapping[str, Any]]) -> str:
    return (cfg or {}).get("name", "direct")


def validate(cfg: Optional[Mapping[str, Any]], executor: Any = None, option: str = "") -> None:
    """The launcher's settings, and (given the executor class) that the executor can run it.
    ``option``: the executor's Hydra option, for the message (``nrun_local``)."""
    name = name_of(cfg)
    if name not in _KEYS:
        raise ConfigError(f"nrun/launcher={name!r} is not a launcher; choose one of: "
                          f"{', '.join(sorted(_KEYS))} (e.g. nrun/launcher=torchrun)")
    unknown = set(cfg or {}) - _KEYS[name]
    if unknown:
        raise ConfigError(f"hydra.launcher.launcher has unknown key(s) {sorted(unknown)} for "
                          f"nrun/launcher={name}; valid keys: {sorted(_KEYS[name] - {'name'})}")
    if executor is not None:
        _check_executor(cfg or {}, name, executor, option)
    if name in ELASTIC:
        for key in ("nproc_per_node", "nnodes"):
            _positive(cfg, key, "or null to derive it from the executor's resources", null=True)
        _non_negative(cfg, "max_restarts")
    if name == "ft":
        _check_ft(cfg or {})
    if name == "ray":
        _check_ray(cfg or {})


def _check_executor(cfg: Mapping[str, Any], name: str, executor: Any, option: str) -> None:
    supported = getattr(executor, "launchers", frozenset({"direct", "torchrun"}))
    where = f"hydra/launcher={option}" if option else (getattr(executor, "name", "") or executor.__name__)
    if name not in supported:
        raise ConfigError(f"nrun/launcher={name} cannot run on {where}: it needs {NEEDS.get(name, name)}. "
                          f"Launchers {where} runs: {', '.join(sorted(supported))}; choose one of them "
                          "(nrun/launcher=...) or another executor. Nothing was submitted.")
    retries = cfg.get("max_retries") or 0
    if name == "ft" and retries and not getattr(executor, "requeues", False):
        raise ConfigError(f"hydra.launcher.launcher.max_retries={retries}: requeueing the job is Slurm's "
                          f"(hydra/launcher=nrun_slurm); {where} has no job to requeue. Set max_retries=0 "
                          "and use max_restarts (restarts inside the point) or hydra.launcher.retries "
                          "(the sweep resubmits a failed point)")


def _positive(cfg: Mapping[str, Any], key: str, hint: str = "", null: bool = False) -> None:
    value = cfg.get(key)
    if value is None and null:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"hydra.launcher.launcher.{key}={value!r}: must be a positive integer"
                          + (f", {hint}" if hint else ""))


def _non_negative(cfg: Mapping[str, Any], key: str) -> None:
    value = cfg.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"hydra.launcher.launcher.{key}={value!r}: must be an integer >= 0")


def _check_ft(cfg: Mapping[str, Any]) -> None:
    _non_negative(cfg, "max_retries")
    policy = cfg.get("restart_policy")
    if policy is not None and policy not in RESTART_POLICIES:
        raise ConfigError(f"hydra.launcher.launcher.restart_policy={policy!r}: choose one of "
                          f"{', '.join(RESTART_POLICIES)} (or null for ft_launcher's default, any-failed)")
    for key in ("workload_check_interval", "initial_rank_heartbeat_timeout", "rank_heartbeat_timeout",
                "rank_out_of_section_timeout", "node_health_check_interval", "safety_factor",
                "restart_check_interval", "term_timeout", "workers_stop_timeout", "monitor_interval"):
        value = cfg.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
            raise ConfigError(f"hydra.launcher.launcher.{key}={value!r}: must be a number of seconds > 0 "
                              "(or null for ft_launcher's default)")
    sections = cfg.get("rank_section_timeouts")
    if sections is not None:
        if not isinstance(sections, Mapping) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in sections.values()):
            raise ConfigError(f"hydra.launcher.launcher.rank_section_timeouts={sections!r}: give section "
                              "name -> seconds, e.g. {setup: 600, step: 180}")
    signal = cfg.get("rank_termination_signal")
    if signal is not None and not str(signal).startswith("SIG"):
        raise ConfigError(f"hydra.launcher.launcher.rank_termination_signal={signal!r}: give a signal "
                          "name such as SIGKILL or SIGTERM")


def _check_ray(cfg: Mapping[str, Any]) -> None:
    c = {**RAY_DEFAULTS, **cfg}
    for key in ("port_base", "port_block", "port_slots", "start_timeout_s"):
        _positive(c, key)
    if c["port_block"] < RAY_WORKER_PORTS_FROM + 2:
        raise ConfigError(f"hydra.launcher.launcher.port_block={c['port_block']}: each node needs "
                          f"{RAY_WORKER_PORTS_FROM} ports for Ray's processes plus its workers' ports; "
                          "give at least 12 (default 100)")
    top = c["port_base"] + c["port_block"] * c["port_slots"]
    if c["port_base"] < 1024 or top > 65535:
        raise ConfigError(f"hydra.launcher.launcher: ports {c['port_base']}..{top - 1} (port_base + "
                          "port_block * port_slots) must lie within 1024..65535")
    for key in ("object_store_bytes", "num_cpus", "num_gpus"):
        value = c.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ConfigError(f"hydra.launcher.launcher.{key}={value!r}: must be an integer >= 0, or null "
                              "(object_store_bytes: Ray's default; num_cpus/num_gpus: the Slurm allocation's)")


def layout(cfg: Optional[Mapping[str, Any]], *, nodes: int, gpus_per_node: int) -> Layout:
    cfg = cfg or {}
    if name_of(cfg) not in ELASTIC:
        return Layout(nnodes=nodes, nproc_per_node=1)
    nnodes = cfg.get("nnodes") or nodes
    if nnodes != nodes:
        raise ConfigError(f"hydra.launcher.launcher.nnodes={nnodes} but the executor asks for "
                          f"hydra.launcher.nodes={nodes}; set one of them (or nnodes=null)")
    nproc = cfg.get("nproc_per_node") or gpus_per_node or 1
    return Layout(nnodes=nnodes, nproc_per_node=nproc, rdzv_port=int(cfg.get("rdzv_port", 29500)))


def wrap(command: List[str], cfg: Optional[Mapping[str, Any]], *, nodes: int,
         gpus_per_node: int, run_id: str) -> List[str]:
    """The point's argv under the chosen launcher. ``command[0]`` is the Python interpreter.
    ``ray`` keeps the command: it is the driver, run on the head node once the cluster is up."""
    cfg = cfg or {}
    name = name_of(cfg)
    if name not in ELASTIC:
        return list(command)
    lay = layout(cfg, nodes=nodes, gpus_per_node=gpus_per_node)
    python, rest = command[0], command[1:]
    module = "torch.distributed.run" if name == "torchrun" else "nvidia_resiliency_ext.fault_tolerance.launcher"
    argv = [python, "-m", module, f"--nnodes={lay.nnodes}",
            f"--nproc-per-node={lay.nproc_per_node}", f"--max-restarts={int(cfg.get('max_restarts', 0))}"]
    if lay.nnodes == 1:
        argv.append("--standalone")
    else:
        argv += [f"--rdzv-backend={cfg.get('rdzv_backend', 'c10d')}", f"--rdzv-id={run_id}"]
    if name == "ft":
        argv += ft_flags(cfg)
    argv += [str(a) for a in cfg.get("extra_args") or []]
    if rest and rest[0] == "-m":  # module apps: the agent's own -m
        argv += ["-m", *rest[1:]]
    else:
        argv += rest
    return argv


def ft_flags(cfg: Mapping[str, Any]) -> List[str]:
    """ft_launcher's options set in config (a null one is left to ft_launcher's default)."""
    out = []
    for key, flag in FT_FLAGS.items():
        value = cfg.get(key)
        if value is None:
            continue
        if key == "rank_section_timeouts":
            value = ",".join(f"{k}:{v}" for k, v in value.items())
        elif isinstance(value, bool):
            value = "true" if value else "false"
        out.append(f"{flag}={value}")
    return out


def node_env(lay: Layout, *, node_rank: int | str, head_host: str) -> Dict[str, str]:
    """Per-node variables a multi-node executor sets (torchrun and ft read PET_* as their flags)."""
    if lay.nnodes == 1:
        return {}
    return {"PET_NODE_RANK": str(node_rank), "PET_RDZV_ENDPOINT": f"{head_host}:{lay.rdzv_port}"}


# -- ray ---------------------------------------------------------------------------------
Port = Union[int, str]


def ray_conf(cfg: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    return {**RAY_DEFAULTS, **dict(cfg or {})}


def ray_block(cfg: Mapping[str, Any], job: int, node: int, nnodes: int) -> int:
    """First port of node ``node``'s block: every node of every job its own block, so two
    Ray nodes on one machine (a shared node, or a test cluster) never take the same port."""
    c = ray_conf(cfg)
    base, block, slots = int(c["port_base"]), int(c["port_block"]), int(c["port_slots"])
    return base + ((job * nnodes + node) % slots) * block


def ray_block_formula(cfg: Mapping[str, Any], nnodes: int) -> str:
    """``ray_block`` as the dry run shows it (the job id is known only once submitted)."""
    c = ray_conf(cfg)
    return (f"P=$(( {c['port_base']} + ((SLURM_JOB_ID * {nnodes} + SLURM_NODEID) % {c['port_slots']})"
            f" * {c['port_block']} ))")


def _at(start: Port, offset: int) -> Port:
    """Port ``offset`` of a block; a symbolic block (the dry run's ``$P``) stays a formula."""
    if isinstance(start, int):
        return start + offset
    return f"$(({start.lstrip('$')} + {offset}))" if offset else start


def ray_start_argv(python: str, cfg: Optional[Mapping[str, Any]], *, head: bool, block: Port,
                   head_address: str, temp_dir: str, num_cpus: Optional[int] = None,
                   num_gpus: Optional[int] = None) -> List[str]:
    """``ray start`` of one node, blocking (it ends when its processes end, and stops them on
    SIGTERM): the head with the GCS at ``head_address``, or a worker joining it. Every port is
    explicit, from the node's block; the object store is capped when configured."""
    c = ray_conf(cfg)
    ports = {name: _at(block, i) for i, name in enumerate(RAY_PORTS)}
    argv = [python, "-m", "ray.scripts.scripts", "start", "--block", "--disable-usage-stats",
            f"--temp-dir={temp_dir}"]
    if head:
        argv += ["--head", f"--port={ports['gcs']}", f"--ray-client-server-port={ports['client_server']}",
                 f"--include-dashboard={'true' if c['include_dashboard'] else 'false'}",
                 f"--dashboard-port={ports['dashboard']}"]
    else:
        argv.append(f"--address={head_address}")
    argv += [f"--node-manager-port={ports['node_manager']}", f"--object-manager-port={ports['object_manager']}",
             f"--dashboard-agent-listen-port={ports['dashboard_agent_listen']}",
             f"--dashboard-agent-grpc-port={ports['dashboard_agent_grpc']}",
             f"--runtime-env-agent-port={ports['runtime_env_agent']}",
             f"--metrics-export-port={ports['metrics_export']}",
             f"--min-worker-port={_at(block, RAY_WORKER_PORTS_FROM)}",
             f"--max-worker-port={_at(block, int(c['port_block']) - 1)}"]
    cpus = c["num_cpus"] if c["num_cpus"] is not None else num_cpus
    gpus = c["num_gpus"] if c["num_gpus"] is not None else num_gpus
    if cpus is not None:
        argv.append(f"--num-cpus={cpus}")
    if gpus is not None:
        argv.append(f"--num-gpus={gpus}")
    if c["object_store_bytes"]:
        argv.append(f"--object-store-memory={int(c['object_store_bytes'])}")
    argv += [str(a) for a in c.get("extra_args") or []]
    return argv
