"""One point's Run:ai workload body, as plain data: the dry run prints exactly what ``api`` posts.

One node: ``POST /workloads/trainings``; several: ``POST /workloads/distributed`` with
distributedFramework PyTorch and one replica per node. The command is ``sh`` with the point's
words as one shell-quoted ``args`` string (Run:ai takes a string), built with shlex from the same
constant script every cloud executor uses. Secrets are references to Kubernetes secrets only.
"""

from __future__ import annotations

import os
import re
import shlex
from typing import Any, Dict, List, Optional

from nrun_core.errors import ConfigError
from nrun_core.executors.cloudjob import command
from nrun_core.executors.cloudjob.storage import SharedStorage
from nrun_core.executors.lepton.spec import job_name
from nrun_core.spec import JobSpec

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def storage_of(opts: Any) -> SharedStorage:
    return SharedStorage("nrun_dgxcloud", opts.storage_dir, opts.mount_path)


def kind_of(spec_or_nodes: Any) -> str:
    nodes = spec_or_nodes if isinstance(spec_or_nodes, int) else int(spec_or_nodes.nodes)
    return "distributed" if nodes > 1 else "trainings"


def base_url(opts: Any) -> Optional[str]:
    return opts.base_url or os.environ.get("RUNAI_BASE_URL")


def check_options(opts: Any) -> None:
    for key, example in (("image", "nvcr.io/nvidia/pytorch:24.05-py3"), ("project", "my-project"),
                         ("pvc", "my-data-pvc")):
        if not getattr(opts, key) or not str(getattr(opts, key)).strip():
            raise ConfigError(f"hydra.launcher.{key} is not set: nrun_dgxcloud needs it, e.g. "
                              f"hydra.launcher.{key}={example}")
    if not base_url(opts):
        raise ConfigError("no Run:ai API URL: set hydra.launcher.base_url (or $RUNAI_BASE_URL), e.g. "
                          "https://<tenant>.run.ai/api/v1")
    storage_of(opts)
    if int(opts.nodes) < 1:
        raise ConfigError(f"hydra.launcher.nodes={opts.nodes}: must be at least 1")
    for var, ref in (opts.secret_refs or {}).items():
        if not _ENV_NAME.match(str(var)) or ":" not in str(ref or ""):
            raise ConfigError(f"hydra.launcher.secret_refs.{var}={ref!r}: give VAR: \"<secret name>:<key>\" "
                              "(a Kubernetes secret of the project)")
    if opts.secret_env:
        raise ConfigError(
            f"hydra.launcher.secret_env={list(opts.secret_env)}: nrun_dgxcloud cannot hand a value from this "
            "shell to a Run:ai workload without writing it into the workload's spec, where anyone who can "
            "read the workload sees it. Fix: keep it in a Kubernetes secret of the project and use "
            "hydra.launcher.secret_refs={VAR: \"<secret name>:<key>\"}")
    for key in ("poll_s", "poll_max_s", "request_timeout_s"):
        if float(getattr(opts, key)) <= 0:
            raise ConfigError(f"hydra.launcher.{key}={getattr(opts, key)}: must be positive")


def body(opts: Any, spec: JobSpec, project_id: str, cluster_id: str, attempt: int = 1) -> Dict[str, Any]:
    storage = storage_of(opts)
    where = storage.placement(spec, str(opts.python or "python3"))
    argv = command.argv(where, spec, list(opts.command_prefix or []), replicas="pytorchjob")
    env = command.env(where, spec, attempt, command.node_env(spec, opts.launcher, "pytorchjob"))
    envs: List[Dict[str, Any]] = [{"name": k, "value": v} for k, v in sorted(env.items())]
    for var, ref in sorted((opts.secret_refs or {}).items()):
        name, _, key = str(ref).partition(":")
        envs.append({"name": str(var), "secret": {"name": name, "key": key}})
    compute: Dict[str, Any] = {"gpuDevicesRequest": int(spec.gpus_per_node or 0), "largeShmRequest": bool(opts.large_shm)}
    if opts.cpu_core_request is not None:
        compute["cpuCoreRequest"] = float(opts.cpu_core_request)
    if opts.cpu_memory_request is not None:
        compute["cpuMemoryRequest"] = str(opts.cpu_memory_request)
    pvcs = [{"claimName": str(opts.pvc), "path": storage.remote, "existingPvc": True, "readOnly": False}]
    pvcs += [{str(k): v for k, v in dict(p).items()} for p in opts.pvcs or []]
    body_spec: Dict[str, Any] = {
        "image": str(opts.image),
        "command": argv[0],
        "args": shlex.join(argv[1:]),
        "workingDir": where.workdir(spec),
        "environmentVariables": envs,
        "compute": compute,
        "storage": {"pvc": pvcs},
    }
    if opts.node_pools:
        body_spec["nodePools"] = [str(p) for p in opts.node_pools]
    nodes = int(spec.nodes)
    if nodes > 1:
        body_spec.update({"distributedFramework": "PyTorch", "numWorkers": nodes, "minReplicas": nodes,
                          "maxReplicas": nodes})
    body_spec.update({str(k): v for k, v in dict(opts.custom_spec or {}).items()})
    return {"name": job_name(spec, attempt), "projectId": str(project_id), "clusterId": str(cluster_id),
            "spec": body_spec}
