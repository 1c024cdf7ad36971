"""A fake Kubeflow Trainer + KubeRay operator for the kube sandbox (which has no kubelet).

It watches (by listing every ``interval`` s) the TrainJobs and RayJobs nrun created on the real
apiserver and plays controller and kubelet at once: it runs each object's command as a real
local process - the trainer container's command and env for a TrainJob, the entrypoint through
``sh -c`` with the runtime env's env_vars for a RayJob - with the pod's volume mounted by path
mapping (mountPath -> the hostPath dir, or the host dir a PVC name maps to), secretKeyRef env
resolved from real Secrets, then patches the object's status the way the operator does:
running, then Complete/Failed (Trainer conditions) or SUCCEEDED/FAILED (KubeRay jobStatus). An
object deleted while its process runs has that process group killed (cancel = delete).
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import yaml

TRAINJOB = ("trainer.kubeflow.org", "v1alpha1", "trainjobs")
RAYJOB = ("ray.io", "v1", "rayjobs")
SELECTOR = "app.kubernetes.io/managed-by=nrun"


@dataclass
class Run:
    kind: Tuple[str, str, str]
    namespace: str
    name: str
    uid: str
    sweep: str
    proc: Optional[subprocess.Popen] = None
    ended: bool = False
    announced: bool = False  # its running status is patched (then its process starts)
    argv: List[str] = field(default_factory=list)
    env: Dict[str, str] = field(default_factory=dict)
    log: List[str] = field(default_factory=list)


class FakeOperator:
    def __init__(self, kubeconfig: str, pvcs: Optional[Dict[str, str]] = None, interval: float = 0.2) -> None:
        from kubernetes import client, config

        api = config.new_client_from_config(config_file=kubeconfig)
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.pvcs = dict(pvcs or {})
        self.interval = interval
        self.runs: Dict[str, Run] = {}
        self.errors: List[str] = []
        self.peak: Dict[str, int] = {}  # sweep -> most of its processes running at once
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> "FakeOperator":
        self._thread = threading.Thread(target=self._loop, daemon=True, name="fake-kube-operator")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        for run in list(self.runs.values()):
            self._kill(run)

    def live(self, sweep: str) -> List[Run]:
        """Processes of a sweep still running (what a cancelled sweep must not leave)."""
        with self._lock:
            return [r for r in self.runs.values() if r.sweep == sweep and r.proc is not None
                    and r.proc.poll() is None]

    # -- the loop --------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._tick()
            except Exception as exc:  # keep playing; tests read .errors when something is off
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self._stop.wait(self.interval)

    def _tick(self) -> None:
        seen = set()
        for kind in (TRAINJOB, RAYJOB):
            items = self.custom.list_cluster_custom_object(*kind, label_selector=SELECTOR)["items"]
            for obj in items:
                meta = obj["metadata"]
                seen.add(meta["uid"])
                if meta["uid"] not in self.runs and not obj.get("status"):
                    self._launch(kind, obj)
        for uid, run in list(self.runs.items()):
            if uid not in seen:
                self._kill(run)  # deleted: cancel or cleanup
                with self._lock:
                    self.runs.pop(uid, None)
            elif not run.announced and not run.ended:
                self._start(run)
            elif not run.ended and run.proc is not None and run.proc.poll() is not None:
                self._finish(run, run.proc.returncode)
                run.ended = True  # only once the status is patched: a failed patch is tried again

    # -- one object ------------------------------------------------------------------------
    def _launch(self, kind: Tuple[str, str, str], obj: Dict[str, Any]) -> None:
        meta = obj["metadata"]
        run = Run(kind, meta["namespace"], meta["name"], meta["uid"],
                  (meta.get("labels") or {}).get("nrun.dev/sweep", ""))
        with self._lock:
            self.runs[run.uid] = run
        try:
            argv, env, mounts = self._command(kind, obj)
        except Exception as exc:
            run.announced = run.ended = True
            self._finish(run, 1, f"fake operator: cannot run it: {exc}")
            return
        argv = [_mapped(a, mounts) for a in argv]
        env = {k: _mapped(v, mounts) for k, v in env.items()}
        base = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ}
        run.argv, run.env = argv, {**base, **env}
        self._start(run)

    def _start(self, run: Run) -> None:
        """Patch the running status, then start the process (a failed patch: next tick again)."""
        self._status(run, running=True)
        run.announced = True
        run.proc = subprocess.Popen(run.argv, env=run.env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    start_new_session=True, cwd="/")
        self.peak[run.sweep] = max(self.peak.get(run.sweep, 0), len(self.live(run.sweep)))

    def _command(self, kind: Tuple[str, str, str], obj: Dict[str, Any]) -> Tuple[List[str], Dict[str, str], Dict[str, str]]:
        ns, spec = obj["metadata"]["namespace"], obj["spec"]
        if kind == TRAINJOB:
            trainer = spec["trainer"]
            pod = spec["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0][
                "template"]["spec"]["template"]["spec"]
            container = pod["containers"][0]
            return (list(trainer["command"]) + list(trainer.get("args") or []),
                    self._env(ns, trainer.get("env") or []), self._mounts(pod, container))
        pod = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
        container = pod["containers"][0]
        runtime_env = yaml.safe_load(spec.get("runtimeEnvYAML") or "") or {}
        env = {str(k): str(v) for k, v in (runtime_env.get("env_vars") or {}).items()}
        env.update(self._env(ns, container.get("env") or []))
        return ["sh", "-c", spec["entrypoint"]], env, self._mounts(pod, container)

    def _env(self, ns: str, entries: List[Dict[str, Any]]) -> Dict[str, str]:
        out: Dict[str, str] = {}
        for e in entries:
            if "value" in e:
                out[e["name"]] = str(e["value"])
                continue
            ref = ((e.get("valueFrom") or {}).get("secretKeyRef")) or {}
            if not ref:
                continue
            try:
                secret = self.core.read_namespaced_secret(ref["name"], ns)
                out[e["name"]] = base64.b64decode((secret.data or {})[ref["key"]]).decode()
            except Exception:
                if not ref.get("optional"):
                    raise RuntimeError(f"secret {ref['name']}/{ref['key']} not found (the kubelet would "
                                       "refuse to start the pod: CreateContainerConfigError)")
        return out

    def _mounts(self, pod: Dict[str, Any], container: Dict[str, Any]) -> Dict[str, str]:
        """mountPath -> host dir, for the volumes this fake can map."""
        vols = {v["name"]: v for v in pod.get("volumes") or []}
        out = {}
        for m in container.get("volumeMounts") or []:
            vol = vols.get(m["name"]) or {}
            if "hostPath" in vol:
                out[m["mountPath"]] = vol["hostPath"]["path"]
            elif "persistentVolumeClaim" in vol and vol["persistentVolumeClaim"]["claimName"] in self.pvcs:
                out[m["mountPath"]] = self.pvcs[vol["persistentVolumeClaim"]["claimName"]]
            else:
                raise RuntimeError(f"volume {m['name']} cannot be mounted by the fake operator")
        return out

    def _status(self, run: Run, *, running: bool = False, code: Optional[int] = None, why: str = "") -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if run.kind == TRAINJOB:
            if running:
                status = {"conditions": [_cond("Created", "True", "JobsCreationSucceeded", now)],
                          "jobsStatus": [{"name": "node", "active": 1, "ready": 1, "failed": 0, "succeeded": 0,
                                          "suspended": 0}]}
            else:
                ok = code == 0
                status = {"conditions": [_cond("Created", "True", "JobsCreationSucceeded", now),
                                         _cond("Complete" if ok else "Failed", "True",
                                               "JobsCompleted" if ok else "TrainingFailed", now,
                                               why or ("" if ok else f"trainer node exited with code {code}"))],
                          "jobsStatus": [{"name": "node", "active": 0, "ready": 0, "failed": 0 if ok else 1,
                                          "succeeded": 1 if ok else 0, "suspended": 0}]}
        else:
            if running:
                status = {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING", "startTime": now,
                          "rayClusterName": run.name + "-raycluster"}
            else:
                ok = code == 0
                status = {"jobDeploymentStatus": "Complete" if ok else "Failed",
                          "jobStatus": "SUCCEEDED" if ok else "FAILED", "endTime": now}
                if not ok:
                    status["message"] = why or f"Job entrypoint command failed with exit code {code}"
        try:
            self.custom.patch_namespaced_custom_object_status(*run.kind[:2], run.namespace, run.kind[2], run.name,
                                                              {"status": status},
                                                              _content_type="application/merge-patch+json")
        except Exception as exc:
            if getattr(exc, "status", None) != 404:
                raise

    def _finish(self, run: Run, code: int, why: str = "") -> None:
        self._status(run, code=code, why=why)

    def _kill(self, run: Run) -> None:
        proc = run.proc
        if proc is None or proc.poll() is not None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(timeout=5)
                return
            except subprocess.TimeoutExpired:
                continue


def _cond(kind: str, status: str, reason: str, now: str, message: str = "") -> Dict[str, str]:
    return {"type": kind, "status": status, "reason": reason, "message": message or reason,
            "lastTransitionTime": now}


def _mapped(value: str, mounts: Dict[str, str]) -> str:
    """A path inside the pod -> the same file on this host (longest mountPath first)."""
    for mount in sorted(mounts, key=len, reverse=True):
        host = mounts[mount]
        if mount != host and mount in value:
            value = value.replace(mount.rstrip("/") + "/", host.rstrip("/") + "/")
            if value == mount:
                value = host
    return value
