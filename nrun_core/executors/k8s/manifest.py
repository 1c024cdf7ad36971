"""The pod pieces every Kubernetes manifest of a point shares, as plain data (the dry run prints
exactly what is created): object name, labels tying it to its sweep and point, the storage
volume, the container's command and environment, resources, and option checks.

Code, logs and results travel only through one volume (a PVC, or a hostPath on single-node
clusters), laid out by ``cloudjob.storage``: the sweep's code snapshot and the point runtime are
copied there once, each point's job dir is on it. The container runs the same constant script
as every cloud executor (``cloudjob.command``): every user word is an argument, never shell text.
Secret values never enter a manifest: ``secret_refs`` names Kubernetes secrets, and
``secret_env`` values go into one Secret per sweep that the pods reference.
"""

from __future__ import annotations

import copy
import re
from typing import Any, Dict, List, Optional

from nrun_core.errors import ConfigError
from nrun_core.executors.cloudjob import command
from nrun_core.executors.cloudjob.storage import SharedStorage
from nrun_core.executors.lepton.spec import job_name
from nrun_core.placement import Placement
from nrun_core.spec import JobSpec

VOLUME = "nrun-storage"
SWEEP_LABEL, POINT_LABEL, ATTEMPT_LABEL = "nrun.dev/sweep", "nrun.dev/point", "nrun.dev/attempt"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def object_name(spec: JobSpec, attempt: int = 1) -> str:
    """``nrun-<sweep>-<point>[-a<attempt>]``, lowercase and short enough for the names the
    operators derive from it (JobSet, RayCluster and their pods)."""
    return job_name(spec, attempt)


def labels(opts: Any, spec: JobSpec, attempt: int) -> Dict[str, str]:
    out = {str(k): str(v) for k, v in (opts.labels or {}).items()}
    out.update({SWEEP_LABEL: spec.sweep_id, POINT_LABEL: str(spec.index), ATTEMPT_LABEL: str(attempt),
                "app.kubernetes.io/managed-by": "nrun"})
    return out


def secret_name(sweep_id: str) -> str:
    """The Secret holding one sweep's ``secret_env`` values (deleted when the sweep ends)."""
    return f"nrun-{sweep_id.lower()}-secret-env"


def storage_of(opts: Any, option: str) -> SharedStorage:
    return SharedStorage(option, opts.storage_dir, opts.mount_path)


def placement(opts: Any, option: str, spec: JobSpec) -> Placement:
    return storage_of(opts, option).placement(spec, str(opts.python or "python3"))


def argv(opts: Any, option: str, spec: JobSpec) -> List[str]:
    """The container's command: ``sh -c SCRIPT nrun-point WORKDIR ARGV...``."""
    return command.argv(placement(opts, option, spec), spec, [str(w) for w in opts.command_prefix or []])


def plain_env(opts: Any, option: str, spec: JobSpec, attempt: int) -> Dict[str, str]:
    return command.env(placement(opts, option, spec), spec, attempt, {})


def env_list(opts: Any, option: str, spec: JobSpec, attempt: int, *, plain: bool = True) -> List[Dict[str, Any]]:
    """The container's env: plain values (if PLAIN), then secret references only."""
    out: List[Dict[str, Any]] = []
    if plain:
        out += [{"name": k, "value": v} for k, v in sorted(plain_env(opts, option, spec, attempt).items())]
    out += secret_env_refs(opts, spec)
    return out


def secret_env_refs(opts: Any, spec: JobSpec) -> List[Dict[str, Any]]:
    out: List[Dict[str, Any]] = []
    for var, ref in sorted((opts.secret_refs or {}).items()):
        name, _, key = str(ref).partition(":")
        out.append({"name": str(var), "valueFrom": {"secretKeyRef": {"name": name, "key": key}}})
    for var in spec.secret_env:
        out.append({"name": var, "valueFrom": {"secretKeyRef": {"name": secret_name(spec.sweep_id), "key": var,
                                                                "optional": True}}})
    return out


def volumes(opts: Any) -> List[Dict[str, Any]]:
    if opts.pvc:
        vol: Dict[str, Any] = {"name": VOLUME, "persistentVolumeClaim": {"claimName": str(opts.pvc)}}
    else:
        vol = {"name": VOLUME, "hostPath": {"path": str(opts.host_path), "type": "Directory"}}
    return [vol] + [copy.deepcopy(dict(v)) for v in opts.volumes or []]


def volume_mounts(opts: Any, option: str) -> List[Dict[str, Any]]:
    mount = {"name": VOLUME, "mountPath": storage_of(opts, option).remote}
    return [mount] + [copy.deepcopy(dict(m)) for m in opts.volume_mounts or []]


def resources(opts: Any, spec: JobSpec) -> Dict[str, Any]:
    """Requests per node; GPUs (an extended resource) as equal request and limit."""
    requests: Dict[str, Any] = {}
    limits: Dict[str, Any] = {}
    if opts.cpu is not None:
        requests["cpu"] = str(opts.cpu)
    if opts.memory is not None:
        requests["memory"] = str(opts.memory)
    gpus = int(spec.gpus_per_node or 0)
    if gpus:
        requests[str(opts.gpu_resource)] = str(gpus)
        limits[str(opts.gpu_resource)] = str(gpus)
    out: Dict[str, Any] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def pod_scheduling(opts: Any) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    if opts.node_selector:
        out["nodeSelector"] = {str(k): str(v) for k, v in opts.node_selector.items()}
    if opts.tolerations:
        out["tolerations"] = [copy.deepcopy(dict(t)) for t in opts.tolerations]
    return out


def merged(base: Dict[str, Any], extra: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """BASE with EXTRA merged in (dicts deeply, anything else replaced): ``spec_overrides``."""
    out = copy.deepcopy(base)
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[str(key)] = copy.deepcopy(value)
    return out


def plain(value: Any) -> Any:
    """OmegaConf containers → plain dicts and lists (manifests are JSON)."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(value, (DictConfig, ListConfig)):
            return OmegaConf.to_container(value, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def check_options(opts: Any, option: str) -> None:
    """Refuse a bad setting before anything is packaged or created, naming it and the fix."""
    for key, example in (("image", "nvcr.io/nvidia/pytorch:24.05-py3"), ("namespace", "default")):
        if not getattr(opts, key) or not str(getattr(opts, key)).strip():
            raise ConfigError(f"hydra.launcher.{key} is not set: {option} needs it, e.g. "
                              f"hydra.launcher.{key}={example}")
    if bool(opts.pvc) == bool(opts.host_path):
        raise ConfigError(
            f"{option} needs exactly one volume for code, logs and results: set hydra.launcher.pvc=<claim "
            "name> (a PVC of the namespace) or hydra.launcher.host_path=<dir on every node>, not "
            f"{'both' if opts.pvc else 'neither'}; and hydra.launcher.storage_dir to where this machine sees it")
    storage_of(opts, option)
    if int(opts.nodes) < 1:
        raise ConfigError(f"hydra.launcher.nodes={opts.nodes}: must be at least 1")
    for var, ref in (opts.secret_refs or {}).items():
        if not _ENV_NAME.match(str(var)) or ":" not in str(ref or ""):
            raise ConfigError(f"hydra.launcher.secret_refs.{var}={ref!r}: give VAR: \"<secret name>:<key>\" "
                              "(a Kubernetes secret of the namespace)")
    for key, value in (opts.labels or {}).items():
        if not _LABEL_VALUE.match(str(value)) or len(str(value)) > 63:
            raise ConfigError(f"hydra.launcher.labels.{key}={value!r}: a Kubernetes label value is at most 63 "
                              "characters of letters, digits, '-', '_' and '.', starting and ending alphanumeric")
    for key in ("poll_s", "poll_max_s", "request_timeout_s"):
        if float(getattr(opts, key)) <= 0:
            raise ConfigError(f"hydra.launcher.{key}={getattr(opts, key)}: must be positive")
