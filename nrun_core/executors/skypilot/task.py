"""A sweep point as a SkyPilot task: plain YAML-ready data, built without importing sky.

``task_config`` is what the dry run prints and golden files pin; ``to_sky`` turns it into a
``sky.Task`` (SkyPilot's own schema check) only when something is submitted or shown.
"""

from __future__ import annotations

import re
import shlex
from typing import Any, Dict, List, Optional

from nrun_core import wrappers
from nrun_core.errors import ConfigError
from nrun_core.spec import JobSpec

SECRET_SHOWN = "<from the launching shell>"
CLUSTERS = ("shared", "per_point")
TEARDOWN = ("auto", "down", "stop", "keep")
RDZV_PORT = 29500
# nrun's files in the task's workdir (stdlib only where they run).
LIB = {"nrun_point.py": "nrun_core.runtime.point", "nrun_unpack.py": "nrun_core.packaging.unpack",
       "nrun_sky.py": "nrun_core.executors.skypilot.remote"}


def lib_dir() -> str:
    """``lib/<digest of nrun's files>``: sweeps of different nrun versions can share a cluster."""
    import hashlib
    import importlib

    h = hashlib.sha256()
    for name, mod in sorted(LIB.items()):
        h.update(name.encode())
        with open(importlib.import_module(mod).__file__ or "", "rb") as f:
            h.update(f.read())
    return f"lib/{h.hexdigest()[:16]}"


def point_path(spec: JobSpec) -> str:
    return f"points/{spec.sweep_id}/{spec.index}.json"


def check(opts: Any) -> None:
    """Option errors that name the setting, before anything is packaged or submitted."""
    if opts.clusters not in CLUSTERS:
        raise ConfigError(f"hydra.launcher.clusters={opts.clusters!r}: choose one of {', '.join(CLUSTERS)}")
    if opts.teardown not in TEARDOWN:
        raise ConfigError(f"hydra.launcher.teardown={opts.teardown!r}: choose one of {', '.join(TEARDOWN)}")
    if int(opts.nodes) < 1:
        raise ConfigError(f"hydra.launcher.nodes={opts.nodes}: must be at least 1")
    if opts.cluster_name is not None and not re.fullmatch(r"[a-zA-Z]([-_.a-zA-Z0-9]*[a-zA-Z0-9])?",
                                                          str(opts.cluster_name)):
        raise ConfigError(f"hydra.launcher.cluster_name={opts.cluster_name!r}: SkyPilot cluster names start "
                          "with a letter and hold letters, digits, '-', '_' and '.'")
    if opts.managed and (opts.cluster_name or opts.clusters != "shared"):
        raise ConfigError("hydra.launcher.managed=true runs each point as a managed job on a cluster "
                          "SkyPilot creates: drop hydra.launcher.cluster_name / clusters")
    where = infra(opts) or ""
    if opts.managed and where.split("/")[0].lower() == "slurm":
        raise ConfigError(f"hydra.launcher.managed=true on infra {where}: SkyPilot does not run its managed-jobs "
                          "controller on Slurm (NotSupportedError: host_controllers), and would retry the launch "
                          "forever; use managed=false (points as jobs on a cluster: clusters=shared or per_point) "
                          "or a cloud infra for managed jobs")
    if opts.gpus and opts.accelerators:
        raise ConfigError("set hydra.launcher.gpus or hydra.launcher.accelerators, not both")
    if float(opts.max_files_mb) <= 0:
        raise ConfigError(f"hydra.launcher.max_files_mb={opts.max_files_mb}: must be positive")
    if opts.idle_minutes_to_autostop is not None and int(opts.idle_minutes_to_autostop) < 0:
        raise ConfigError(f"hydra.launcher.idle_minutes_to_autostop={opts.idle_minutes_to_autostop}: "
                          "must be 0 or more")


def infra(opts: Any) -> Optional[str]:
    import os

    if opts.infra:
        return str(opts.infra)
    if opts.cloud:
        return "/".join(str(x) for x in (opts.cloud, opts.region, opts.zone) if x)
    return os.environ.get("NRUN_SKYPILOT_INFRA") or None


def python(opts: Any) -> str:
    import os

    return str(opts.python or os.environ.get("NRUN_SKYPILOT_PYTHON") or "python3")


def resources(opts: Any, spec: JobSpec) -> Dict[str, Any]:
    r: Dict[str, Any] = {}
    where = infra(opts)
    if where:
        r["infra"] = where
    if opts.accelerators:
        r["accelerators"] = opts.accelerators if isinstance(opts.accelerators, str) else dict(opts.accelerators)
    elif opts.gpus:
        r["accelerators"] = str(opts.gpus) if ":" in str(opts.gpus) else f"{opts.gpus}:{max(1, spec.gpus_per_node)}"
    elif spec.gpus_per_node:
        raise ConfigError(f"hydra.launcher.gpus_per_node={spec.gpus_per_node} needs a GPU type: set "
                          "hydra.launcher.gpus=A100 (or H100, L4, ...), or hydra.launcher.accelerators")
    cpus = opts.cpus if opts.cpus is not None else spec.cpus_per_task
    for key, value in (("cpus", cpus), ("memory", opts.memory), ("instance_type", opts.instance_type),
                       ("disk_size", opts.disk_size), ("image_id", opts.image_id)):
        if value is not None:
            r[key] = str(value) if key in ("cpus", "memory") else value
    if opts.container_image:
        r["image_id"] = f"docker:{opts.container_image}"
    if opts.use_spot:
        r["use_spot"] = True
    if opts.labels:
        r["labels"] = {str(k): str(v) for k, v in opts.labels.items()}
    return r


def run_script(opts: Any, spec: JobSpec) -> str:
    """The task's ``run``: rendezvous from SkyPilot's node list for multi-node points, then the
    point through nrun_sky.py (which is in the workdir, the job's cwd)."""
    lines: List[str] = []
    if spec.nodes > 1:
        lay = wrappers.layout(opts.launcher, nodes=spec.nodes, gpus_per_node=spec.gpus_per_node)
        port = getattr(lay, "rdzv_port", RDZV_PORT) + spec.index % 1000
        lines.append('head=$(echo "$SKYPILOT_NODE_IPS" | head -n1)')
        if spec.launcher == "torchrun":
            lines.append(f'export PET_NODE_RANK="$SKYPILOT_NODE_RANK" PET_RDZV_ENDPOINT="$head:{port}"')
            lines.append('[ "$SKYPILOT_NODE_RANK" = 0 ] && export PET_RDZV_CONF=is_host=true '
                         '|| export PET_RDZV_CONF=is_host=false')
        else:
            lines.append(f'export MASTER_ADDR="$head" MASTER_PORT={port} WORLD_SIZE="$SKYPILOT_NUM_NODES" '
                         'RANK="$SKYPILOT_NODE_RANK" NODE_RANK="$SKYPILOT_NODE_RANK" LOCAL_RANK=0 LOCAL_WORLD_SIZE=1')
    lines.append("cd ~/sky_workdir")  # where SkyPilot put the workdir (a job's cwd on most infras already)
    lines.append(shlex.join([python(opts), f"{lib_dir()}/nrun_sky.py", point_path(spec)]))
    return "\n".join(lines) + "\n"


def task_config(opts: Any, spec: JobSpec, *, workdir: str, envs: Dict[str, str],
                secret_names: List[str], setup: bool) -> Dict[str, Any]:
    """The sky.Task of one point as YAML-ready data (secret values never in it)."""
    cfg: Dict[str, Any] = {"name": f"nrun-{spec.sweep_id}-{spec.index}", "workdir": workdir}
    if spec.nodes > 1:
        cfg["num_nodes"] = int(spec.nodes)
    res = resources(opts, spec)
    if res:
        cfg["resources"] = res
    if envs:
        cfg["envs"] = dict(sorted(envs.items()))
    if secret_names:
        cfg["secrets"] = {n: SECRET_SHOWN for n in sorted(secret_names)}
    if opts.file_mounts:
        cfg["file_mounts"] = {str(k): str(v) for k, v in opts.file_mounts.items()}
    if setup and opts.setup:
        cfg["setup"] = "\n".join(str(x) for x in opts.setup) + "\n"
    cfg["run"] = run_script(opts, spec)
    return cfg


def to_sky(cfg: Dict[str, Any], secrets: Optional[Dict[str, str]] = None) -> Any:
    """A sky.Task from the config (SkyPilot checks its schema), secret values filled in last."""
    from nrun_core.executors.skypilot.executor import _sky

    sky = _sky()
    body = dict(cfg)
    if secrets is not None and "secrets" in body:
        body["secrets"] = {n: secrets.get(n, "") for n in body["secrets"]}
    try:
        return sky.Task.from_yaml_config(body)
    except Exception as exc:  # noqa: BLE001 - sky's ValueError / schema errors: name our settings
        raise ConfigError(f"SkyPilot refuses the task {cfg.get('name')}: {str(exc).strip()[:1500]}\n"
                          "check the hydra.launcher settings it comes from (infra, gpus, accelerators, cpus, "
                          "memory, instance_type, image_id/container_image, file_mounts)") from None


def to_yaml(cfg: Dict[str, Any], *, check: bool = True) -> str:
    """The YAML a dry run shows (multi-line scripts as blocks); with ``check``, SkyPilot parses it
    first (its schema and value checks, offline)."""
    import yaml

    if check:
        to_sky(cfg)

    class _Dumper(yaml.SafeDumper):
        pass

    def _str(dumper: Any, value: str) -> Any:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    _Dumper.add_representer(str, _str)
    return yaml.dump(cfg, Dumper=_Dumper, sort_keys=False, default_flow_style=False)
