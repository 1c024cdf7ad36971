"""A fake DGX Cloud Lepton workspace API (``/api/v2/workspaces/<id>``), as the leptonai v2 SDK
calls it: jobs (create, get, list with page/page_size, PATCH stop, delete, replicas, replica
logs) and user secrets. Bearer auth (401), 404 for unknown jobs, 409 for a taken name.

A job's replicas (``completions``) run as containers on a real Docker engine: each Lepton mount
``{path, from, mount_path}`` binds ``storages[from]/path`` at ``mount_path``; env entries with
``value_from.secret_name_ref`` take the workspace secret's value. Every replica gets Lepton's
job variables (LEPTON_JOB_NAME, LEPTON_JOB_SERVICE_PREFIX, LEPTON_SUBDOMAIN,
LEPTON_JOB_WORKER_INDEX, LEPTON_JOB_TOTAL_WORKERS); replicas of a job with
``intra_job_communication`` share a network on which replica i is ``<prefix>-i`` and
``<prefix>-i.<subdomain>``, as Lepton's multi-node recipe addresses them.
"""

from __future__ import annotations

import os
import time
from typing import Any, Dict, List, Optional

from fakes.common import DockerJobs, FakeServer, Reply, Replica, stop_then_kill

LIVE = ("Starting", "Running", "Stopping")


class FakeLepton(FakeServer):
    def __init__(self, token: str, storages: Dict[str, str], docker_host: str, workspace: str = "ws-test") -> None:
        super().__init__("lepton")
        self.token, self.storages, self.workspace = token, storages, workspace
        self.jobs: Dict[str, Dict[str, Any]] = {}
        self.replicas: Dict[str, List[Replica]] = {}
        self.secrets: Dict[str, str] = {}
        self.docker = DockerJobs(docker_host, "lepton")
        base = f"/api/v2/workspaces/{workspace}"
        self.prefix = base
        self.route("POST", base + "/jobs", self.create)
        self.route("GET", base + "/jobs", self.list)
        self.route("GET", base + r"/jobs/(?P<id>[^/]+)", self.get)
        self.route("PATCH", base + r"/jobs/(?P<id>[^/]+)", self.patch)
        self.route("DELETE", base + r"/jobs/(?P<id>[^/]+)", self.delete)
        self.route("GET", base + r"/jobs/(?P<id>[^/]+)/replicas", self.get_replicas)
        self.route("GET", base + r"/jobs/(?P<id>[^/]+)/replicas/(?P<rid>[^/]+)/log", self.log)
        self.route("GET", base + "/usersecrets", self.list_secrets)
        self.route("POST", base + "/usersecrets", self.create_secrets)
        self.route("DELETE", base + r"/usersecrets/(?P<name>[^/]+)", self.delete_secret)

    def url(self, root: str) -> str:
        return root + self.prefix

    def authorized(self, headers: Any, path: str) -> bool:
        return headers.get("Authorization") == f"Bearer {self.token}"

    # -- jobs ------------------------------------------------------------------------------
    def create(self, m: Any, q: Any, body: Any) -> Any:
        meta, spec = dict(body.get("metadata") or {}), dict(body.get("spec") or {})
        jid = meta.get("id") or meta.get("name")
        if not jid:
            raise Reply(400, {"message": "metadata.id is required"})
        with self.lock:
            if jid in self.jobs:
                raise Reply(409, {"message": f"job {jid} already exists"})
            now = int(time.time() * 1000)
            job = {"metadata": {**meta, "id": jid, "name": meta.get("name") or jid, "created_at": now},
                   "spec": spec, "status": {"state": "Starting", "ready": 0, "active": 0, "failed": 0,
                                            "succeeded": 0, "creation_time": now, "job_history": []}}
            self.jobs[jid] = job
            self.note_jobs(len(self.jobs))
            try:
                replicas = self._replicas(jid, spec)
            except Reply as r:
                job["status"].update(state="Failed", failed=1)
                job["status"]["message"] = r.body["message"]
                return 200, job
            self.replicas[jid] = replicas
        sweep = next((r.env.get("NRUN_SWEEP_ID") for r in replicas if r.env.get("NRUN_SWEEP_ID")), "")
        self.docker.run(jid, str((spec.get("container") or {}).get("image")), replicas,
                        {"nrun-fake.sweep": sweep} if sweep else {},
                        on_start=lambda: self._set(jid, state="Running", active=len(replicas)),
                        on_end=lambda failed, why: self._ended(jid, failed, why),
                        network=len(replicas) > 1 and bool(spec.get("intra_job_communication")))
        return 200, job

    def _replicas(self, jid: str, spec: Dict[str, Any]) -> List[Replica]:
        binds: Dict[str, Dict[str, str]] = {}
        for mnt in spec.get("mounts") or []:
            root = self.storages.get(mnt.get("from"))
            if root is None:
                raise Reply(400, {"message": f"unknown storage {mnt.get('from')!r}"})
            host = os.path.normpath(os.path.join(root, (mnt.get("path") or "/").lstrip("/")))
            binds[host] = {"bind": mnt["mount_path"], "mode": "rw"}
        env: Dict[str, str] = {}
        for e in spec.get("envs") or []:
            ref = (e.get("value_from") or {}).get("secret_name_ref")
            if ref is not None:
                if ref not in self.secrets:
                    raise Reply(400, {"message": f"secret {ref} not found"})
                env[e["name"]] = self.secrets[ref]
            else:
                env[e["name"]] = e.get("value") or ""
        n = int(spec.get("completions") or 1)
        argv = list((spec.get("container") or {}).get("command") or [])
        subdomain = f"{jid}-job-svc"
        job_env = {"LEPTON_JOB_NAME": jid, "LEPTON_JOB_SERVICE_PREFIX": jid, "LEPTON_SUBDOMAIN": subdomain,
                   "LEPTON_JOB_TOTAL_WORKERS": str(n)}
        return [Replica(argv=argv, env={**env, **job_env, "LEPTON_JOB_WORKER_INDEX": str(i)}, binds=binds,
                        hostname=f"{jid}-{i}", aliases=[f"{jid}-{i}", f"{jid}-{i}.{subdomain}"]) for i in range(n)]

    def _set(self, jid: str, **status: Any) -> None:
        with self.lock:
            job = self.jobs.get(jid)
            if job and job["status"]["state"] not in ("Stopped", "Completed", "Failed"):
                job["status"].update(status)

    def _ended(self, jid: str, failed: bool, why: str) -> None:
        with self.lock:
            job = self.jobs.get(jid)
            if job is None:
                return
            st = job["status"]
            if st["state"] in ("Stopping", "Stopped"):
                st["state"] = "Stopped"
            else:
                reps = self.replicas.get(jid) or []
                st.update(state="Failed" if failed else "Completed", active=0,
                          failed=sum(1 for r in reps if r.exit_code != 0),
                          succeeded=sum(1 for r in reps if r.exit_code == 0))
                if why:
                    st["message"] = why
            st["completion_time"] = int(time.time() * 1000)

    def _job(self, jid: str) -> Dict[str, Any]:
        job = self.jobs.get(jid)
        if job is None:
            raise Reply(404, {"message": f"job {jid} not found"})
        return job

    def get(self, m: Any, q: Any, body: Any) -> Any:
        with self.lock:
            return 200, self._job(m["id"])

    def list(self, m: Any, q: Any, body: Any) -> Any:
        page, size = int(q.get("page", ["1"])[0]), int(q.get("page_size", ["50"])[0])
        with self.lock:
            jobs = sorted(self.jobs.values(), key=lambda j: j["metadata"]["created_at"])
            if q.get("job_query_mode", ["alive_only"])[0] == "alive_only":
                jobs = [j for j in jobs if j["status"]["state"] in LIVE]
            return 200, {"jobs": jobs[(page - 1) * size: page * size]}

    def patch(self, m: Any, q: Any, body: Any) -> Any:
        with self.lock:
            job = self._job(m["id"])
            if ((body or {}).get("spec") or {}).get("stopped"):
                job["spec"]["stopped"] = True
                if job["status"]["state"] in LIVE:
                    job["status"]["state"] = "Stopping"
                    stop_then_kill(self.docker, self.replicas.get(m["id"]) or [])
        return 200, {}

    def delete(self, m: Any, q: Any, body: Any) -> Any:
        with self.lock:
            self._job(m["id"])
            self.jobs.pop(m["id"])
            reps = self.replicas.pop(m["id"], [])
        self.docker.remove(reps, m["id"])
        return 200, {}

    def get_replicas(self, m: Any, q: Any, body: Any) -> Any:
        with self.lock:
            self._job(m["id"])
            reps = self.replicas.get(m["id"]) or []
        return 200, [{"metadata": {"id": f"{m['id']}-{i}"}, "id": f"{m['id']}-{i}", "status": {}}
                     for i in range(len(reps))]

    def log(self, m: Any, q: Any, body: Any) -> Any:
        with self.lock:
            self._job(m["id"])
            reps = self.replicas.get(m["id"]) or []
        i = int(m["rid"].rsplit("-", 1)[-1])
        if i >= len(reps):
            raise Reply(404, {"message": f"replica {m['rid']} not found"})
        return 200, self.docker.logs(reps[i])

    # -- secrets ---------------------------------------------------------------------------
    def list_secrets(self, m: Any, q: Any, body: Any) -> Any:
        with self.lock:
            return 200, [{"name": n} for n in sorted(self.secrets)]

    def create_secrets(self, m: Any, q: Any, body: Any) -> Any:
        with self.lock:
            for item in body or []:
                self.secrets[item["name"]] = item["value"]
        return 200, {}

    def delete_secret(self, m: Any, q: Any, body: Any) -> Any:
        with self.lock:
            if m["name"] not in self.secrets:
                raise Reply(404, {"message": f"secret {m['name']} not found"})
            del self.secrets[m["name"]]
        return 200, {}

    # -- for tests -------------------------------------------------------------------------
    def live_containers(self, sweep: str) -> List[Any]:
        return self.docker.containers(sweep)

    def live_networks(self, sweep: str) -> List[str]:
        return self.docker.sweep_networks(sweep)


__all__ = ["FakeLepton", "Optional"]
