"""One point's RayJob, as plain data (the dry run prints it), and what its status means.

The entrypoint is the point's command as one shell-quoted line (KubeRay runs it through a shell
on the head); the point's plain environment travels in the runtime env's ``env_vars`` (where Ray
sets a job driver's environment), secret references in the head and worker containers' env.
Head plus ``nodes - 1`` workers, each with the volume, resources and scheduling of every pod.

Status: KubeRay's ``jobStatus`` SUCCEEDED → exit 0, FAILED → exit 1 (with ``message``), STOPPED →
ended before it finished; ``jobDeploymentStatus`` Failed → exit 1 (cluster never came up, or a
deadline); RUNNING → running; anything else (PENDING, Initializing, Suspended) → queued.
"""

from __future__ import annotations

import shlex
from typing import Any, Dict, List

import yaml

from nrun_core.errors import ConfigError
from nrun_core.executors.base import ENDED, QUEUED, RUNNING
from nrun_core.executors.k8s import manifest as mf
from nrun_core.executors.k8s.api import Kind
from nrun_core.executors.k8s.resource import Resource
from nrun_core.spec import JobSpec

KIND = Kind("ray.io", "v1", "rayjobs", "RayJob")
OPTION = "nrun_kuberay"
MODES = ("K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode")
WORKERS = "workers"


def check_options(opts: Any) -> None:
    if str(opts.submission_mode) not in MODES:
        raise ConfigError(f"hydra.launcher.submission_mode={opts.submission_mode}: choose one of {', '.join(MODES)}")
    if not str(opts.ray_version or "").strip():
        raise ConfigError("hydra.launcher.ray_version is not set: give the image's Ray version, e.g. 2.46.0")
    if "env_vars" in (opts.runtime_env or {}):
        raise ConfigError("hydra.launcher.runtime_env.env_vars: nrun sets the job's env_vars itself; put variables "
                          "in hydra.launcher.env instead")


def _pod(opts: Any, spec: JobSpec, attempt: int, container: str) -> Dict[str, Any]:
    c: Dict[str, Any] = {"name": container, "image": str(opts.image),
                         "volumeMounts": mf.volume_mounts(opts, OPTION)}
    env = mf.env_list(opts, OPTION, spec, attempt, plain=False)
    if env:
        c["env"] = env
    res = mf.resources(opts, spec)
    if res:
        c["resources"] = res
    pod: Dict[str, Any] = {"containers": [c], "volumes": mf.volumes(opts)}
    pod.update(mf.pod_scheduling(opts))
    return {"metadata": {"labels": mf.labels(opts, spec, attempt)}, "spec": pod}


def entrypoint(opts: Any, spec: JobSpec) -> str:
    return shlex.join(mf.argv(opts, OPTION, spec))


def runtime_env(opts: Any, spec: JobSpec, attempt: int) -> Dict[str, Any]:
    out = dict(mf.plain(opts.runtime_env) or {})
    out["env_vars"] = dict(sorted(mf.plain_env(opts, OPTION, spec, attempt).items()))
    return out


def rayjob(opts: Any, spec: JobSpec, attempt: int = 1) -> Dict[str, Any]:
    cluster: Dict[str, Any] = {
        "rayVersion": str(opts.ray_version),
        "headGroupSpec": {"rayStartParams": {str(k): str(v) for k, v in (opts.head_start_params or {}).items()},
                          "template": _pod(opts, spec, attempt, "ray-head")},
    }
    workers = int(spec.nodes) - 1
    if workers > 0:
        cluster["workerGroupSpecs"] = [{
            "groupName": WORKERS, "replicas": workers, "minReplicas": workers, "maxReplicas": workers,
            "rayStartParams": {str(k): str(v) for k, v in (opts.worker_start_params or {}).items()},
            "template": _pod(opts, spec, attempt, "ray-worker")}]
    body_spec: Dict[str, Any] = {
        "entrypoint": entrypoint(opts, spec),
        "runtimeEnvYAML": yaml.safe_dump(runtime_env(opts, spec, attempt), sort_keys=True),
        "submissionMode": str(opts.submission_mode),
        "shutdownAfterJobFinishes": bool(opts.shutdown_after_job_finishes),
        "rayClusterSpec": cluster,
    }
    if opts.ttl_seconds_after_finished is not None:
        body_spec["ttlSecondsAfterFinished"] = int(opts.ttl_seconds_after_finished)
    body_spec = mf.merged(body_spec, mf.plain(opts.spec_overrides))
    return {"apiVersion": KIND.api_version, "kind": KIND.kind,
            "metadata": {"name": mf.object_name(spec, attempt), "namespace": str(opts.namespace),
                         "labels": mf.labels(opts, spec, attempt)},
            "spec": body_spec}


def state_of(obj: Dict[str, Any]) -> Any:
    from nrun_core.executors.cloudjob.polled import RemoteState

    status: Dict[str, Any] = obj.get("status") or {}
    name = (obj.get("metadata") or {}).get("name")
    job, deploy = str(status.get("jobStatus") or ""), str(status.get("jobDeploymentStatus") or "")
    why = status.get("message") or status.get("reason") or ""
    if job == "SUCCEEDED":
        return RemoteState(ENDED, exit_code=0, raw=job)
    if job == "FAILED" or deploy == "Failed":
        return RemoteState(ENDED, exit_code=1, raw=job or deploy,
                           detail=f"RayJob {name} failed" + (f": {why}" if why else ""))
    if job == "STOPPED":
        return RemoteState(ENDED, raw=job, detail=f"RayJob {name} was stopped before it finished")
    if job == "RUNNING":
        return RemoteState(RUNNING, raw=job)
    return RemoteState(QUEUED, raw=job or deploy)


RESOURCE = Resource(KIND, OPTION, "the KubeRay operator", check_options, rayjob, state_of)

__all__: List[str] = ["KIND", "RESOURCE", "rayjob", "state_of", "check_options"]
