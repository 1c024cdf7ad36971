"""A fake Run:ai REST API (``/api/v1``) as the Run:ai docs describe it: ``POST /token`` (client
credentials → accessToken with expiresIn), ``GET /org-unit/projects`` (offset/limit pages),
trainings and distributed workloads (create → 202 with workloadId, get with actualPhase,
``POST .../suspend`` (GET there is 405, as documented), DELETE), ``GET /workloads`` (pages).
Bearer tokens expire (``token_ttl_s``); an unknown or expired token gets 401.

A workload's replicas run as containers on a real Docker engine: ``spec.command`` + the
shell-split ``spec.args``, ``environmentVariables``, ``storage.pvc`` entries bound from
``pvcs[claimName]`` at their ``path``, ``workingDir``. A distributed workload of n replicas runs
as a Kubeflow PyTorchJob does: replica 0 is ``<name>-master-0`` (MASTER_ADDR=localhost), the
others ``<name>-worker-<k>`` (MASTER_ADDR=<name>-master-0), each with MASTER_PORT (23456, the
operator's default), WORLD_SIZE=n and RANK=its index, on a network of the workload's own.
"""

from __future__ import annotations

import secrets
import shlex
import time
from typing import Any, Dict, List

from fakes.common import DockerJobs, FakeServer, Reply, Replica, new_id, stop_then_kill

LIVE = ("Creating", "Initializing", "Running", "Stopping")
MASTER_PORT = 23456   # the PyTorchJob operator's default master port
KINDS = ("trainings", "distributed")


class FakeRunai(FakeServer):
    def __init__(self, clients: Dict[str, str], projects: List[str], pvcs: Dict[str, str], docker_host: str,
                 token_ttl_s: float = 3600.0) -> None:
        super().__init__("runai")
        self.clients, self.pvcs, self.token_ttl_s = clients, pvcs, token_ttl_s
        self.projects = [{"id": str(100 + i), "name": n, "clusterId": "cluster-" + new_id()[:8]}
                         for i, n in enumerate(["team-a", "team-b", *projects])]
        self.tokens: Dict[str, float] = {}
        self.workloads: Dict[str, Dict[str, Any]] = {}
        self.replicas: Dict[str, List[Replica]] = {}
        self.k8s_secrets: Dict[str, Dict[str, str]] = {}
        self.docker = DockerJobs(docker_host, "runai")
        b = "/api/v1"
        self.route("POST", b + "/token", self.token)
        self.route("GET", b + "/org-unit/projects", self.list_projects)
        self.route("GET", b + "/workloads", self.list_workloads)
        for kind in KINDS:
            self.route("POST", f"{b}/workloads/{kind}", lambda m, q, body, k=kind: self.create(k, body))
            self.route("GET", f"{b}/workloads/{kind}/(?P<id>[^/]+)", lambda m, q, body, k=kind: self.get(k, m["id"]))
            self.route("DELETE", f"{b}/workloads/{kind}/(?P<id>[^/]+)",
                       lambda m, q, body, k=kind: self.delete(k, m["id"]))
            self.route("POST", f"{b}/workloads/{kind}/(?P<id>[^/]+)/suspend",
                       lambda m, q, body, k=kind: self.suspend(k, m["id"]))

    def authorized(self, headers: Any, path: str) -> bool:
        if path.endswith("/token"):
            return True
        tok = (headers.get("Authorization") or "").removeprefix("Bearer ")
        return self.tokens.get(tok, 0) > time.time()

    # -- auth and projects -----------------------------------------------------------------
    def token(self, m: Any, q: Any, body: Any) -> Any:
        body = body or {}
        if body.get("grantType") != "client_credentials" or \
                self.clients.get(body.get("clientId")) != body.get("clientSecret"):
            raise Reply(401, {"message": "invalid client credentials"})
        tok = "rt-" + secrets.token_hex(16)
        with self.lock:
            self.tokens[tok] = time.time() + self.token_ttl_s
        return 200, {"accessToken": tok, "expiresIn": int(self.token_ttl_s)}

    def expire_tokens(self) -> None:
        """Every token issued so far stops working (tests of the refresh on 401)."""
        with self.lock:
            self.tokens = {t: 0.0 for t in self.tokens}

    def list_projects(self, m: Any, q: Any, body: Any) -> Any:
        off, lim = int(q.get("offset", ["0"])[0]), int(q.get("limit", ["2"])[0])
        lim = min(lim, 2)  # small pages, so clients must follow them
        page = self.projects[off: off + lim]
        ans: Dict[str, Any] = {"projects": page}
        if off + lim < len(self.projects):
            ans["next"] = off + lim
        return 200, ans

    # -- workloads -------------------------------------------------------------------------
    def create(self, kind: str, body: Any) -> Any:
        name, spec = body.get("name"), dict(body.get("spec") or {})
        if not name or not body.get("projectId") or not spec.get("image"):
            raise Reply(400, {"message": "name, projectId and spec.image are required"})
        if not any(p["id"] == str(body["projectId"]) and p["clusterId"] == str(body.get("clusterId"))
                   for p in self.projects):
            raise Reply(400, {"message": f"no project {body['projectId']} on cluster {body.get('clusterId')}"})
        with self.lock:
            if any(w["name"] == name and w["projectId"] == body["projectId"] for w in self.workloads.values()):
                raise Reply(409, {"message": f"workload {name} already exists in the project"})
            wid = new_id()
            w = {"workloadId": wid, "name": name, "projectId": body["projectId"], "clusterId": body.get("clusterId"),
                 "type": kind, "createdAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                 "actualPhase": "Creating", "spec": spec}
            self.workloads[wid] = w
            self.note_jobs(len(self.workloads))
            reps = self._replicas(kind, name, spec)
            self.replicas[wid] = reps
        sweep = next((r.env.get("NRUN_SWEEP_ID") for r in reps if r.env.get("NRUN_SWEEP_ID")), "")
        self.docker.run(wid, spec["image"], reps, {"nrun-fake.sweep": sweep} if sweep else {},
                        on_start=lambda: self._phase(wid, "Running"),
                        on_end=lambda failed, why: self._ended(wid, failed, why), network=len(reps) > 1)
        return 202, {"workloadId": wid, "name": name, "actualPhase": "Creating", "type": kind}

    def _replicas(self, kind: str, name: str, spec: Dict[str, Any]) -> List[Replica]:
        binds = {}
        for pvc in (spec.get("storage") or {}).get("pvc") or []:
            host = self.pvcs.get(pvc.get("claimName"))
            if host is None:
                raise Reply(400, {"message": f"no PVC {pvc.get('claimName')} in the project"})
            binds[host] = {"bind": pvc["path"], "mode": "ro" if pvc.get("readOnly") else "rw"}
        env: Dict[str, str] = {}
        for e in spec.get("environmentVariables") or []:
            if "secret" in e:
                ref = e["secret"]
                env[e["name"]] = (self.k8s_secrets.get(ref["name"]) or {}).get(ref["key"], "")
            else:
                env[e["name"]] = str(e.get("value") or "")
        argv = shlex.split(spec.get("command") or "") + shlex.split(spec.get("args") or "")
        n = int(spec.get("numWorkers") or 1) if kind == "distributed" else 1
        if n == 1:
            return [Replica(argv=argv, env=dict(env), binds=binds, workdir=spec.get("workingDir"))]
        master = f"{name}-master-0"
        out = []
        for i in range(n):
            pod = master if i == 0 else f"{name}-worker-{i - 1}"
            torch_env = {"MASTER_ADDR": "localhost" if i == 0 else master, "MASTER_PORT": str(MASTER_PORT),
                         "WORLD_SIZE": str(n), "RANK": str(i)}
            out.append(Replica(argv=argv, env={**env, **torch_env}, binds=binds, workdir=spec.get("workingDir"),
                               hostname=pod, aliases=[pod]))
        return out

    def _phase(self, wid: str, phase: str) -> None:
        with self.lock:
            w = self.workloads.get(wid)
            if w and w["actualPhase"] in ("Creating", "Initializing"):
                w["actualPhase"] = phase

    def _ended(self, wid: str, failed: bool, why: str) -> None:
        with self.lock:
            w = self.workloads.get(wid)
            if w is None:
                return
            if w["actualPhase"] in ("Stopping", "Stopped"):
                w["actualPhase"] = "Stopped"
            else:
                w["actualPhase"] = "Failed" if failed else "Completed"
                if why:
                    w["phaseMessage"] = why

    def _workload(self, kind: str, wid: str) -> Dict[str, Any]:
        w = self.workloads.get(wid)
        if w is None or w["type"] != kind:
            raise Reply(404, {"message": f"workload {wid} not found"})
        return w

    def get(self, kind: str, wid: str) -> Any:
        with self.lock:
            w = dict(self._workload(kind, wid))
        w.pop("spec", None)
        return 200, w

    def suspend(self, kind: str, wid: str) -> Any:
        with self.lock:
            w = self._workload(kind, wid)
            if w["actualPhase"] in LIVE:
                w["actualPhase"] = "Stopping"
                stop_then_kill(self.docker, self.replicas.get(wid) or [])
        return 202, {}

    def delete(self, kind: str, wid: str) -> Any:
        with self.lock:
            self._workload(kind, wid)
            self.workloads.pop(wid)
            reps = self.replicas.pop(wid, [])
        self.docker.remove(reps, wid)
        return 202, {}

    def list_workloads(self, m: Any, q: Any, body: Any) -> Any:
        off, lim = int(q.get("offset", ["0"])[0]), int(q.get("limit", ["50"])[0])
        with self.lock:
            items = [{k: v for k, v in w.items() if k != "spec"} for w in self.workloads.values()]
        ans: Dict[str, Any] = {"workloads": items[off: off + lim]}
        if off + lim < len(items):
            ans["next"] = off + lim
        return 200, ans

    def live_containers(self, sweep: str) -> List[Any]:
        return self.docker.containers(sweep)

    def live_networks(self, sweep: str) -> List[str]:
        return self.docker.sweep_networks(sweep)
