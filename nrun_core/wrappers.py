"""Launchers (the `nrun/launcher` group): how a point's command becomes processes on nodes.

`direct` runs the command as it is. `torchrun` puts torch's elastic agent in front, with its
layout derived from the executor's resources (nodes, gpus_per_node) unless set explicitly.
Multi-node executors pass the per-node values through torchrun's own environment variables
(PET_NODE_RANK, PET_RDZV_ENDPOINT), so the argv stays the same on every node and needs no shell.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional

from nrun_core.errors import ConfigError

_KEYS = {
    "direct": {"name"},
    "torchrun": {"name", "nproc_per_node", "nnodes", "max_restarts", "rdzv_backend", "rdzv_port",
                 "extra_args"},
}


@dataclass(frozen=True)
class Layout:
    """Processes of one point: what executors must provide (nodes) and set per node."""

    nnodes: int
    nproc_per_node: int
    rdzv_port: int = 29500

    @property
    def world_size(self) -> int:
        return self.nnodes * self.nproc_per_node


def validate(cfg: Optional[Mapping[str, Any]]) -> None:
    name = (cfg or {}).get("name", "direct")
    if name not in _KEYS:
        raise ConfigError(f"nrun/launcher={name!r} is not a launcher; choose one of: "
                          f"{', '.join(sorted(_KEYS))} (e.g. nrun/launcher=torchrun)")
    unknown = set(cfg or {}) - _KEYS[name]
    if unknown:
        raise ConfigError(f"hydra.launcher.launcher has unknown key(s) {sorted(unknown)} for "
                          f"nrun/launcher={name}; valid keys: {sorted(_KEYS[name] - {'name'})}")
    if name == "torchrun":
        for key in ("nproc_per_node", "nnodes"):
            value = cfg.get(key)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"hydra.launcher.launcher.{key}={value!r}: must be a positive "
                                  "integer, or null to derive it from the executor's resources")


def layout(cfg: Optional[Mapping[str, Any]], *, nodes: int, gpus_per_node: int) -> Layout:
    cfg = cfg or {}
    if cfg.get("name", "direct") != "torchrun":
        return Layout(nnodes=nodes, nproc_per_node=1)
    nnodes = cfg.get("nnodes") or nodes
    if nnodes != nodes:
        raise ConfigError(f"hydra.launcher.launcher.nnodes={nnodes} but the executor asks for "
                          f"hydra.launcher.nodes={nodes}; set one of them (or nnodes=null)")
    nproc = cfg.get("nproc_per_node") or gpus_per_node or 1
    return Layout(nnodes=nnodes, nproc_per_node=nproc, rdzv_port=int(cfg.get("rdzv_port", 29500)))


def wrap(command: List[str], cfg: Optional[Mapping[str, Any]], *, nodes: int,
         gpus_per_node: int, run_id: str) -> List[str]:
    """The point's argv under the chosen launcher. ``command[0]`` is the Python interpreter."""
    cfg = cfg or {}
    if cfg.get("name", "direct") != "torchrun":
        return list(command)
    lay = layout(cfg, nodes=nodes, gpus_per_node=gpus_per_node)
    python, rest = command[0], command[1:]
    argv = [python, "-m", "torch.distributed.run", f"--nnodes={lay.nnodes}",
            f"--nproc-per-node={lay.nproc_per_node}", f"--max-restarts={int(cfg.get('max_restarts', 0))}"]
    if lay.nnodes == 1:
        argv.append("--standalone")
    else:
        argv += [f"--rdzv-backend={cfg.get('rdzv_backend', 'c10d')}", f"--rdzv-id={run_id}"]
    argv += [str(a) for a in cfg.get("extra_args") or []]
    if rest and rest[0] == "-m":  # module apps: torchrun's own -m
        argv += ["-m", *rest[1:]]
    else:
        argv += rest
    return argv


def node_env(lay: Layout, *, node_rank: int | str, head_host: str) -> Dict[str, str]:
    """Per-node variables a multi-node executor sets (torchrun reads PET_* as its flags)."""
    if lay.nnodes == 1:
        return {}
    return {"PET_NODE_RANK": str(node_rank), "PET_RDZV_ENDPOINT": f"{head_host}:{lay.rdzv_port}"}
