"""nrun_ssh seen from another shell (`nrun status`, `nrun cancel`) with only the store's record.

A point's backend id is ``host[,host...]/a<attempt>``; its spec gives the job dir, so the status
dir of each node (``<job dir>/.nrun/<sweep>/a<attempt>.n<node>``) is known on each host, and
nrun_host.py there tells whether it runs and signals it. The hosts come from the sweep's stored
options, as the launcher read them (hosts, hosts file, or the $NRUN_SSH_HOSTS_FILE it recorded), so
a shell without the launcher's variables asks the same hosts.
"""

from __future__ import annotations

import os
import time
from types import SimpleNamespace
from typing import Any, Dict, List, Optional, Sequence

from nrun_core.errors import BackendError, NrunError
from nrun_core.executors.base import ENDED, RUNNING, BackendState, Control
from nrun_core.spec import JobSpec

GRACE_S = 5.0


def status_dir(spec: JobSpec, attempt: int, node: int) -> str:
    """One attempt of one node: never shared by two hosts, even on one filesystem."""
    return os.path.join(str(spec.nrun_dir), f"a{attempt}.n{node}")


def parse_backend_id(backend_id: str) -> Optional[tuple]:
    hosts, _, attempt = (backend_id or "").rpartition("/a")
    if not hosts or not attempt.isdigit():
        return None
    return hosts.split(","), int(attempt)


class SshControl(Control):
    def __init__(self, sweep: Dict[str, Any]) -> None:
        super().__init__(sweep)
        self._sites: Dict[str, Any] = {}

    def _opts(self) -> Any:
        conf, info = dict(self.sweep.get("conf") or {}), dict(self.sweep.get("info") or {})
        return SimpleNamespace(**{"hosts": conf.get("hosts") or [],
                                  "hosts_file": conf.get("hosts_file") or info.get("hosts_file"),
                                  "known_hosts": conf.get("known_hosts") or info.get("known_hosts"), "python": conf.get("python", "python3"),
                                  "remote_dir": conf.get("remote_dir", ".nrun/ssh"),
                                  "connect_timeout_s": conf.get("connect_timeout_s", 15.0),
                                  "gpus_per_node": conf.get("gpus_per_node", 0)})

    def _site(self, name: str) -> Any:
        from nrun_core.executors.ssh import hosts as hostlib
        from nrun_core.executors.ssh.site import HostSite

        if name not in self._sites:
            opts = self._opts()
            host = next((h for h in hostlib.load(opts) if h.name == name), None)
            if host is None:
                raise NrunError(f"host {name} is no longer in the sweep's hosts")
            self._sites[name] = HostSite(host, known_hosts=hostlib.known_hosts(opts), python=opts.python,
                                         remote_dir=opts.remote_dir,
                                         connect_timeout_s=float(opts.connect_timeout_s))
        return self._sites[name]

    def _nodes(self, point: Dict[str, Any]) -> List[tuple]:
        parsed = parse_backend_id(point.get("backend_id") or "")
        if parsed is None or not point.get("spec"):
            return []
        hosts, attempt = parsed
        spec = JobSpec.from_json(point["spec"]) if isinstance(point["spec"], str) else JobSpec(**point["spec"])
        return [(h, status_dir(spec, attempt, k), spec.token(attempt)) for k, h in enumerate(hosts)]

    def describe(self, points: Sequence[Dict[str, Any]]) -> Dict[int, Optional[BackendState]]:
        out: Dict[int, Optional[BackendState]] = {}
        for p in points:
            nodes = self._nodes(p)
            if not nodes:
                out[p["idx"]] = None
                continue
            try:
                states = [self._site(h).helper("status", {"dirs": [d]})["states"][0] for h, d, _ in nodes]
            except NrunError as exc:  # its host could not be asked: that silence says nothing of the point
                raise BackendError(f"could not ask {', '.join(h for h, _, _ in nodes)} about point {p['idx']}: "
                                   f"{exc}; the points' states stay as recorded") from None
            if any(s["state"] == "running" for s in states):
                out[p["idx"]] = BackendState(RUNNING)
            elif all(s["state"] == "ended" for s in states):
                code = next((s.get("code") for s in states if s.get("code")), 0)
                out[p["idx"]] = BackendState(ENDED, exit_code=code)
            else:
                out[p["idx"]] = BackendState(ENDED, detail="its host lost track of it")
        return out

    def cancel(self, points: Sequence[Dict[str, Any]]) -> List[int]:
        """TERM every process of the points on every host, KILL what is left after a grace."""
        todo = {p["idx"]: self._nodes(p) for p in points}
        stopped = []
        for idx, nodes in todo.items():
            hit = 0
            for host, d, token in nodes:
                try:
                    hit += self._site(host).helper("signal", {"dir": d, "token": token, "sig": "TERM",
                                                              **self._container(p_of(points, idx), nodes, host)})["signalled"]
                except NrunError:
                    continue
            if hit:
                stopped.append(idx)
        if stopped:
            deadline = time.monotonic() + GRACE_S
            while time.monotonic() < deadline and self._any_running({i: todo[i] for i in stopped}):
                time.sleep(0.3)
            for idx in stopped:
                for host, d, token in todo[idx]:
                    try:
                        self._site(host).helper("signal", {"dir": d, "token": token, "sig": "KILL",
                                                           **self._container(p_of(points, idx), todo[idx], host)})
                    except NrunError:
                        pass
        return stopped

    def _container(self, point: Dict[str, Any], nodes: List[tuple], host: str) -> Dict[str, Any]:
        conf = (self.sweep.get("conf") or {}).get("container") or {}
        if not conf.get("image"):
            return {}
        k = [h for h, _, _ in nodes].index(host)
        _, attempt = parse_backend_id(point["backend_id"])  # type: ignore[misc]
        return {"container": {"docker": conf.get("docker") or "docker",
                              "name": f"nrun-{self.sweep['id']}-{point['idx']}-{k}-a{attempt}"}}

    def _any_running(self, todo: Dict[int, List[tuple]]) -> bool:
        for nodes in todo.values():
            for host, d, _ in nodes:
                try:
                    if self._site(host).helper("status", {"dirs": [d]})["states"][0]["state"] == "running":
                        return True
                except NrunError:
                    continue
        return False

    def close(self) -> None:
        for site in self._sites.values():
            site.close()


def p_of(points: Sequence[Dict[str, Any]], idx: int) -> Dict[str, Any]:
    return next(p for p in points if p["idx"] == idx)
