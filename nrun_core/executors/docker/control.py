"""nrun_docker seen from another shell (`nrun status`, `nrun cancel`) when no supervisor is alive.

The store only knows the sweep id and point numbers; the engine knows the rest: every container
and network nrun creates carries ``nrun.sweep=<id>`` and ``nrun.point=<idx>`` labels.
``DockerControl`` is the executor's stateless Control built on them.
"""

from __future__ import annotations

import os
import time
from typing import Any, Dict, List, Optional

from nrun_core.errors import BackendError, NrunError
from nrun_core.executors.base import ENDED, RUNNING, BackendState, Control

LIVE = ("running", "restarting", "paused")
_ENGINES: Dict[Optional[str], Any] = {}


def _engine(sweep: Dict[str, Any]) -> Any:
    """One client per engine address for the life of the command (it probes point after point);
    None when no engine answers."""
    from nrun_core.executors.docker.engine import Engine

    host = _host(sweep)
    if host not in _ENGINES:
        try:
            _ENGINES[host] = Engine(host)
        except NrunError:
            return None
    return _ENGINES[host]


def _host(sweep: Dict[str, Any]) -> Optional[str]:
    """The engine the sweep's containers went to: its docker_host, else the one the launcher
    recorded (None when that is this shell's DOCKER_HOST too: the client then also takes its TLS
    settings from the environment)."""
    host = (sweep.get("conf") or {}).get("docker_host") or (sweep.get("info") or {}).get("docker_host")
    return None if host == os.environ.get("DOCKER_HOST") else host


def _labels(sweep: Dict[str, Any], idx: int) -> Dict[str, str]:
    return {"nrun.sweep": sweep["id"], "nrun.point": str(idx)}


def cancel(sweep: Dict[str, Any], points: List[Dict[str, Any]], grace_s: float) -> List[int]:
    """SIGTERM the points' containers, SIGKILL after grace_s, remove them and their networks."""
    engine = _engine(sweep)
    if engine is None:
        return []
    try:
        found = {p["idx"]: engine.find(_labels(sweep, p["idx"])) for p in points}
        for containers in found.values():
            for c in containers:
                if c["state"] in LIVE:
                    engine.kill(c["id"], "SIGTERM")
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(
                (engine.state(c["id"]) or {}).get("Running") for cs in found.values() for c in cs):
            time.sleep(0.2)
        for idx, containers in found.items():
            for c in containers:
                engine.remove(c["id"])  # force: SIGKILLs what ignored the TERM
            for net in engine.networks(_labels(sweep, idx)):
                engine.remove_network(net)
        return [idx for idx, containers in found.items() if containers]
    except NrunError:
        raise
    except Exception as exc:
        raise BackendError(f"could not stop the containers of sweep {sweep['id']} at the engine "
                           f"{engine.address}: {exc}. They carry the label nrun.sweep={sweep['id']}: "
                           f"`docker ps -a --filter label=nrun.sweep={sweep['id']}`") from None


def probe(sweep: Dict[str, Any], point: Dict[str, Any]) -> bool:
    """Is the point still running at the engine? The ended containers of an unwatched sweep are
    removed here (unless hydra.launcher.remove=never): nobody else would. BackendError when the
    engine cannot be asked: its silence says nothing of the point."""
    engine = _engine(sweep)
    if engine is None:
        from nrun_core.executors.docker.engine import engine_address

        address, source = engine_address(_host(sweep))
        raise BackendError(f"the Docker engine at {address} ({source}) did not answer; the points' states stay as recorded: "
                           "start it (the sandbox's: `nrun sandbox docker up`, then eval its env) and ask again")
    try:
        found = engine.find(_labels(sweep, point["idx"]))
        if any(c["state"] in LIVE for c in found):
            return True
        if (sweep.get("conf") or {}).get("remove", "always") != "never":
            for c in found:
                engine.remove(c["id"])
            for net in engine.networks(_labels(sweep, point["idx"])):
                engine.remove_network(net)
        return False
    except Exception as exc:
        raise BackendError(f"the Docker engine {engine.address} did not answer about point {point['idx']} "
                           f"({exc}); the points' states stay as recorded") from None


class DockerControl(Control):
    def describe(self, points: Any) -> Dict[int, Optional[BackendState]]:
        out: Dict[int, Optional[BackendState]] = {}
        for p in points:
            out[p["idx"]] = BackendState(RUNNING if probe(self.sweep, p) else ENDED)
        return out

    def cancel(self, points: Any) -> List[int]:
        from nrun_core.executors.queue import GRACE_S

        return cancel(self.sweep, list(points), grace_s=GRACE_S)
