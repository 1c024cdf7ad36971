"""One point's TrainJob, as plain data (the dry run prints it), and what its status means.

The trainer container runs the point's command with its environment, numNodes = nodes,
resourcesPerNode from cpu/memory/gpus_per_node. The volume, its mount, node selector and
tolerations reach the pods through a ``runtimePatches`` entry for the runtime's ``node`` job and
container (the names Trainer's runtimes use), owned by manager ``nrun.dev/launcher``.

Status: Trainer sets conditions Complete / Failed / Suspended and counts child Jobs in
``jobsStatus``; Complete → exit 0, Failed → exit 1 with the condition's message, any active or
ready Job → running, anything else → queued.
"""

from __future__ import annotations

from typing import Any, Dict, List

from nrun_core.errors import ConfigError
from nrun_core.executors.base import ENDED, QUEUED, RUNNING
from nrun_core.executors.k8s import manifest as mf
from nrun_core.executors.k8s.api import Kind
from nrun_core.executors.k8s.resource import Resource
from nrun_core.spec import JobSpec

KIND = Kind("trainer.kubeflow.org", "v1alpha1", "trainjobs", "TrainJob")
OPTION = "nrun_kubeflow"
NODE = "node"              # the replicated job and container Trainer's runtimes call the trainer
MANAGER = "nrun.dev/launcher"
RUNTIME_KINDS = ("ClusterTrainingRuntime", "TrainingRuntime")


def check_options(opts: Any) -> None:
    if str(opts.runtime_kind) not in RUNTIME_KINDS:
        raise ConfigError(f"hydra.launcher.runtime_kind={opts.runtime_kind}: choose one of {', '.join(RUNTIME_KINDS)}")
    if not str(opts.runtime or "").strip():
        raise ConfigError("hydra.launcher.runtime is not set: name the training runtime, e.g. "
                          "hydra.launcher.runtime=torch-distributed (`kubectl get clustertrainingruntimes`)")
    if opts.num_proc_per_node is not None and int(opts.num_proc_per_node) < 1:
        raise ConfigError(f"hydra.launcher.num_proc_per_node={opts.num_proc_per_node}: must be at least 1 (or null)")


def trainjob(opts: Any, spec: JobSpec, attempt: int = 1) -> Dict[str, Any]:
    name = mf.object_name(spec, attempt)
    labels = mf.labels(opts, spec, attempt)
    trainer: Dict[str, Any] = {
        "image": str(opts.image),
        "command": mf.argv(opts, OPTION, spec),
        "env": mf.env_list(opts, OPTION, spec, attempt),
        "numNodes": int(spec.nodes),
    }
    res = mf.resources(opts, spec)
    if res:
        trainer["resourcesPerNode"] = res
    if opts.num_proc_per_node is not None:
        trainer["numProcPerNode"] = int(opts.num_proc_per_node)
    pod_spec: Dict[str, Any] = {"volumes": mf.volumes(opts),
                                "containers": [{"name": NODE, "volumeMounts": mf.volume_mounts(opts, OPTION)}]}
    pod_spec.update(mf.pod_scheduling(opts))
    patch = {"manager": MANAGER, "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [
        {"name": NODE, "template": {"spec": {"template": {"metadata": {"labels": labels}, "spec": pod_spec}}}}]}}}}
    body_spec: Dict[str, Any] = {
        "runtimeRef": {"apiGroup": KIND.group, "kind": str(opts.runtime_kind), "name": str(opts.runtime)},
        "trainer": trainer,
        "runtimePatches": [patch],
    }
    body_spec = mf.merged(body_spec, mf.plain(opts.spec_overrides))
    return {"apiVersion": KIND.api_version, "kind": KIND.kind,
            "metadata": {"name": name, "namespace": str(opts.namespace), "labels": labels},
            "spec": body_spec}


def _condition(obj: Dict[str, Any], kind: str) -> Dict[str, Any]:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind and c.get("status") == "True":
            return c
    return {}


def state_of(obj: Dict[str, Any]) -> Any:
    from nrun_core.executors.cloudjob.polled import RemoteState

    name = (obj.get("metadata") or {}).get("name")
    if _condition(obj, "Complete"):
        return RemoteState(ENDED, exit_code=0, raw="Complete")
    failed = _condition(obj, "Failed")
    if failed:
        why = failed.get("message") or failed.get("reason") or ""
        return RemoteState(ENDED, exit_code=1, raw="Failed",
                           detail=f"TrainJob {name} failed" + (f": {why}" if why else ""))
    if _condition(obj, "Suspended"):
        return RemoteState(QUEUED, raw="Suspended")
    jobs: List[Dict[str, Any]] = (obj.get("status") or {}).get("jobsStatus") or []
    if any(int(j.get("active") or 0) + int(j.get("ready") or 0) > 0 for j in jobs):
        return RemoteState(RUNNING, raw="Running")
    return RemoteState(QUEUED, raw="Created" if _condition(obj, "Created") else "")


RESOURCE = Resource(KIND, OPTION, "the Kubeflow Trainer (v2) operator", check_options, trainjob, state_of)
