"""One point's Lepton job body, as plain data: the same dict is what the dry run prints and what
``api`` hands the SDK (``LeptonJob(**body)``), so what is shown is what is sent.

Secrets appear only as references (``value_from.secret_name_ref``): values go from the launching
shell into Lepton's own secret store, never into the body, the store or a log.
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import Any, Dict, List, Optional

from nrun_core.errors import ConfigError
from nrun_core.executors.cloudjob import command
from nrun_core.executors.cloudjob.storage import SharedStorage
from nrun_core.spec import JobSpec

MAX_NAME = 36
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def storage_of(opts: Any) -> SharedStorage:
    return SharedStorage("nrun_lepton", opts.storage_dir, opts.mount_path)


def job_name(spec: JobSpec, attempt: int = 1) -> str:
    """``nrun-<sweep>-<point>[-a<attempt>]``: Lepton's rules (lowercase, digits, '-', 36 max)."""
    tail = f"-{spec.index}" + (f"-a{attempt}" if attempt > 1 else "")
    sweep = re.sub(r"[^a-z0-9-]", "-", spec.sweep_id.lower())
    name = f"nrun-{sweep}{tail}"
    if len(name) > MAX_NAME:
        name = f"nrun-{hashlib.sha1(spec.sweep_id.encode()).hexdigest()[:MAX_NAME - 5 - len(tail)]}{tail}"
    return name


def secret_name(sweep_id: str, var: str) -> str:
    """The Lepton secret nrun creates for one ``secret_env`` variable of one sweep."""
    return f"nrun-{sweep_id.lower()}-{var.lower().replace('_', '-')}"


def check_options(opts: Any) -> None:
    if not opts.image or not str(opts.image).strip():
        raise ConfigError("hydra.launcher.image is not set: nrun_lepton needs the container image of each "
                          "job, e.g. hydra.launcher.image=nvcr.io/nvidia/pytorch:24.05-py3 (it needs python3 "
                          "and hydra-core inside)")
    if not opts.storage:
        raise ConfigError("hydra.launcher.storage is not set: name the Lepton storage every job mounts "
                          "(its code, logs and results travel through it), e.g. "
                          "hydra.launcher.storage=node-nfs:lepton-shared-fs")
    storage_of(opts)
    if int(opts.nodes) < 1:
        raise ConfigError(f"hydra.launcher.nodes={opts.nodes}: must be at least 1")
    if int(opts.nodes) > 1 and opts.intra_job_communication is False:
        raise ConfigError(f"hydra.launcher.nodes={opts.nodes} with intra_job_communication=false: the replicas "
                          "of a multi-node point must reach replica 0 to form one job. Fix: "
                          "hydra.launcher.intra_job_communication=null (or true)")
    if opts.allowed_nodes and not opts.node_group:
        raise ConfigError("hydra.launcher.allowed_nodes is set but node_group is not: allowed nodes are "
                          "nodes of a dedicated node group; set hydra.launcher.node_group=<id>")
    shape = str(opts.resource_shape or "")
    m = re.match(r"^gpu\.(\d+)x", shape)
    if int(opts.gpus_per_node or 0) and m and int(m.group(1)) != int(opts.gpus_per_node):
        raise ConfigError(f"hydra.launcher.gpus_per_node={opts.gpus_per_node} but resource_shape={shape} has "
                          f"{m.group(1)} GPUs per replica; make them agree")
    for var, ref in (opts.secret_refs or {}).items():
        if not _ENV_NAME.match(str(var)) or not str(ref or "").strip():
            raise ConfigError(f"hydra.launcher.secret_refs.{var}={ref!r}: give VAR: <Lepton secret name>")
    for key in ("poll_s", "poll_max_s"):
        if float(getattr(opts, key)) <= 0:
            raise ConfigError(f"hydra.launcher.{key}={getattr(opts, key)}: must be positive")
    for i, m2 in enumerate(opts.mounts or []):
        if not hasattr(m2, "keys") or not {"from", "mount_path"} <= set(m2.keys()):
            raise ConfigError(f"hydra.launcher.mounts[{i}]={m2!r}: give {{path, from, mount_path}} as Lepton "
                              "spells a mount")


def body(opts: Any, spec: JobSpec, attempt: int = 1) -> Dict[str, Any]:
    """The job body of one attempt of one point."""
    storage = storage_of(opts)
    where = storage.placement(spec, str(opts.python or "python3"))
    env = command.env(where, spec, attempt, command.node_env(spec, opts.launcher, "lepton"))
    envs: List[Dict[str, Any]] = [{"name": k, "value": v} for k, v in sorted(env.items())]
    refs = {**{n: secret_name(spec.sweep_id, n) for n in spec.secret_env}, **dict(opts.secret_refs or {})}
    envs += [{"name": k, "value_from": {"secret_name_ref": str(v)}} for k, v in sorted(refs.items())]
    mounts = [{"path": str(opts.storage_path or "/"), "from": str(opts.storage), "mount_path": storage.remote}]
    mounts += [{str(k): v for k, v in dict(m).items()} for m in opts.mounts or []]
    nodes = int(spec.nodes)
    job: Dict[str, Any] = {
        "resource_shape": str(opts.resource_shape),
        "container": {"image": str(opts.image), "command": command.argv(where, spec, list(opts.command_prefix or []),
                                                                          replicas="lepton")},
        "completions": nodes,
        "parallelism": nodes,
        "envs": envs,
        "mounts": mounts,
        "image_pull_secrets": [str(s) for s in opts.image_pull_secrets or []],
    }
    if opts.node_group:
        job["affinity"] = {"allowed_dedicated_node_groups": [str(opts.node_group)]}
        if opts.allowed_nodes:
            job["affinity"]["allowed_nodes_in_node_group"] = [str(n) for n in opts.allowed_nodes]
    if opts.shared_memory_size is not None:
        job["shared_memory_size"] = int(opts.shared_memory_size)
    if opts.ttl_seconds_after_finished is not None:
        job["ttl_seconds_after_finished"] = int(opts.ttl_seconds_after_finished)
    ijc = opts.intra_job_communication
    if ijc is None and nodes > 1:
        ijc = True
    if ijc is not None:
        job["intra_job_communication"] = bool(ijc)
    queue_config = {k: getattr(opts, k) for k in ("priority_class", "can_be_preempted", "can_preempt")
                    if getattr(opts, k) is not None}
    if queue_config:
        job["queue_config"] = queue_config
    name = job_name(spec, attempt)
    labels = {str(k): str(v) for k, v in (opts.labels or {}).items()}
    labels.update({"nrun.sweep": spec.sweep_id, "nrun.point": str(spec.index)})
    return {"metadata": {"id": name, "name": name, "labels": labels}, "spec": job}


def masked_url(opts: Any) -> str:
    """The workspace URL for the dry run (no token in it, ever)."""
    url = opts.workspace_url or os.environ.get("LEPTON_WORKSPACE_URL")
    ws = opts.workspace_id or os.environ.get("LEPTON_WORKSPACE_ID") or "<workspace>"
    return url or f"https://gateway.dgxc-lepton.nvidia.com/api/v2/workspaces/{ws}"


__all__ = ["body", "check_options", "job_name", "secret_name", "storage_of", "masked_url", "Optional"]
