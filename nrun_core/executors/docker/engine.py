"""The Docker engine as nrun uses it: the only module that imports docker-py (on first use).

Thin, synchronous calls on docker-py's low-level APIClient (one HTTP request each, no model
objects re-inspected behind our back) and the translation of the engine's refusals into errors
that name the nrun_docker setting at fault and the fix.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Optional, Tuple

from nrun_core.errors import BackendError, ConfigError
from nrun_core.executors.docker.spec import ContainerSpec

DEFAULT_SOCKET = "unix:///var/run/docker.sock"
WAIT_S = 3600  # one wait request's read timeout; waits are re-issued until the container ends


class EngineDown(BackendError):
    """No engine answers where nrun looked."""


def engine_address(docker_host: Optional[str]) -> Tuple[str, str]:
    """(address, where the address came from) for messages."""
    if docker_host:
        return docker_host, "hydra.launcher.docker_host"
    if os.environ.get("DOCKER_HOST"):
        return os.environ["DOCKER_HOST"], "$DOCKER_HOST"
    return DEFAULT_SOCKET, "the default socket; DOCKER_HOST is not set"


class Engine:
    def __init__(self, docker_host: Optional[str] = None, pool: int = 16) -> None:
        import docker
        from docker.errors import DockerException

        self.address, self.source = engine_address(docker_host)
        kwargs: Dict[str, Any] = docker.utils.kwargs_from_env() if not docker_host else {}
        kwargs["base_url"] = self.address
        try:
            self.api = docker.APIClient(version="auto", timeout=60, max_pool_size=pool, **kwargs)
        except DockerException as exc:
            raise EngineDown(
                f"no Docker engine answers at {self.address} ({self.source}): {_short(exc)}. Fix: start "
                "the engine (`sudo systemctl start docker`, or `sudo dockerd &` where there is no "
                "systemd; nrun's own: `nrun sandbox docker up` then `eval \"$(nrun sandbox docker env)\"`), "
                "or point hydra.launcher.docker_host (or DOCKER_HOST) at a running engine") from None

    def close(self) -> None:
        self.api.close()

    # -- images and capabilities ----------------------------------------------------------
    def ensure_image(self, image: str, policy: str) -> None:
        """Make IMAGE present per the pull policy, or raise ConfigError naming the fix."""
        from docker.errors import APIError, ImageNotFound
        from docker.utils import parse_repository_tag

        try:
            self.api.inspect_image(image)
            present = True
        except ImageNotFound:
            present = False
        if present and policy != "always":
            return
        if policy == "never":
            raise ConfigError(f"hydra.launcher.image={image} is not on the engine at {self.address} and "
                              "hydra.launcher.pull=never. Fix: build or load it there (`docker build -t "
                              f"{image} .`, `docker load`), or allow pulling with hydra.launcher.pull=missing")
        repo, tag = parse_repository_tag(image)
        try:
            for chunk in self.api.pull(repo, tag=tag or "latest", stream=True, decode=True):
                if isinstance(chunk, dict) and chunk.get("error"):
                    raise BackendError(str(chunk["error"]))
        except (APIError, BackendError) as exc:
            where = "is not on the engine and pulling it failed" if not present else \
                "could not be pulled (hydra.launcher.pull=always)"
            raise ConfigError(
                f"hydra.launcher.image={image} {where}: {_short(exc)}. Fix: check the image name and "
                "that the registry is reachable and logged in (`docker login`), or build/load the "
                f"image on the engine at {self.address}" + ("" if not present else
                                                           "; hydra.launcher.pull=missing uses the local copy")) from None

    def runtimes(self) -> List[str]:
        return sorted((self.api.info().get("Runtimes") or {}).keys())

    def network_exists(self, name: str) -> bool:
        from docker.errors import NotFound

        try:
            self.api.inspect_network(name)
            return True
        except NotFound:
            return False

    def probe_gpus(self, cs: ContainerSpec, setting: str) -> None:
        """Start a throw-away container with the GPU request: the engine says if it can."""
        probe = ContainerSpec(name=f"{cs.name}-gpu-probe", image=cs.image, command=["true"],
                              labels=cs.labels, env={}, secret_env=[], working_dir="/", mounts=[],
                              runtime=cs.runtime, device_requests=cs.device_requests)
        cid = None
        try:
            cid = self.create(probe, {}, setting=setting)
            self.start(cid, probe, setting=setting)
        finally:
            if cid:
                self.remove(cid)

    # -- containers ------------------------------------------------------------------------
    def create(self, cs: ContainerSpec, secrets: Mapping[str, str], *, setting: str = "") -> str:
        import docker.types as t
        from docker.errors import APIError

        try:
            hc = self.api.create_host_config(
                init=True,
                mounts=[t.Mount(m.target, m.source, type=m.kind, read_only=m.read_only) for m in cs.mounts],
                network_mode=cs.network, mem_limit=cs.mem_limit,
                memswap_limit=cs.mem_limit, nano_cpus=cs.nano_cpus, shm_size=cs.shm_size,
                ipc_mode=cs.ipc_mode, runtime=cs.runtime,
                ulimits=[t.Ulimit(name=n, soft=s, hard=h) for n, s, h in cs.ulimits] or None,
                device_requests=[t.DeviceRequest(**r) for r in cs.device_requests] or None)
            resp = self.api.create_container(
                cs.image, cs.command, name=cs.name, hostname=cs.hostname, labels=cs.labels,
                user=cs.user or None, working_dir=cs.working_dir, environment={**cs.env, **secrets},
                host_config=hc)
        except APIError as exc:
            raise BackendError(self._refusal(exc, cs, "create", setting)) from None
        return str(resp["Id"])

    def start(self, cid: str, cs: ContainerSpec, *, setting: str = "") -> None:
        from docker.errors import APIError

        try:
            self.api.start(cid)
        except APIError as exc:
            raise BackendError(self._refusal(exc, cs, "start", setting)) from None

    def wait(self, cid: str) -> Optional[int]:
        """Exit code once the container stops; None if it was removed meanwhile."""
        from docker.errors import NotFound

        try:
            return int(self.api.wait(cid, timeout=WAIT_S)["StatusCode"])
        except NotFound:
            return None

    def state(self, cid: str) -> Optional[Dict[str, Any]]:
        from docker.errors import NotFound

        try:
            return dict(self.api.inspect_container(cid)["State"])
        except NotFound:
            return None

    def logs_tail(self, cid: str, lines: int = 20) -> str:
        from docker.errors import APIError

        try:
            return self.api.logs(cid, stdout=True, stderr=True, tail=lines).decode(errors="replace").strip()
        except APIError:
            return ""

    def kill(self, cid: str, signal: str) -> None:
        from docker.errors import APIError

        try:
            self.api.kill(cid, signal=signal)
        except APIError:  # already stopped or gone: nothing to do
            pass

    def remove(self, cid: str) -> None:
        from docker.errors import APIError, NotFound

        try:
            self.api.remove_container(cid, force=True, v=True)
        except NotFound:
            pass
        except APIError as exc:
            if "already in progress" not in str(exc):
                raise BackendError(f"could not remove container {cid[:12]}: {_short(exc)}") from None

    def find(self, labels: Mapping[str, str]) -> List[Dict[str, Any]]:
        """Containers (any state) carrying all these labels."""
        found = self.api.containers(all=True, filters={"label": [f"{k}={v}" for k, v in labels.items()]})
        return [{"id": c["Id"], "name": (c.get("Names") or ["?"])[0].lstrip("/"), "state": c.get("State"),
                 "labels": c.get("Labels") or {}} for c in found]

    # -- networks --------------------------------------------------------------------------
    def create_network(self, name: str, labels: Mapping[str, str]) -> None:
        from docker.errors import APIError

        try:
            self.api.create_network(name, driver="bridge", labels=dict(labels), check_duplicate=True)
        except APIError as exc:
            raise BackendError(f"could not create the network {name} of a multi-node point: {_short(exc)}. "
                               "Fix: `docker network rm` a leftover of that name, or set "
                               "hydra.launcher.network to a network you created") from None

    def remove_network(self, name: str) -> None:
        from docker.errors import APIError

        try:
            self.api.remove_network(name)
        except APIError:  # gone already, or a kept container still uses it
            pass

    def networks(self, labels: Mapping[str, str]) -> List[str]:
        found = self.api.networks(filters={"label": [f"{k}={v}" for k, v in labels.items()]})
        return [n["Name"] for n in found]

    # -- errors ----------------------------------------------------------------------------
    def _refusal(self, exc: Exception, cs: ContainerSpec, step: str, setting: str) -> str:
        text = _short(exc)
        low = text.lower()
        if "could not select device driver" in low or "nvidia-container-cli" in low:
            return (f"{setting or 'a GPU request'} asks for GPUs but the engine at {self.address} has "
                    f"no GPU runtime ({text}). Fix: install the NVIDIA Container Toolkit on the engine's "
                    "host and restart dockerd, or run without GPUs (hydra.launcher.num_gpus=0, "
                    "hydra.launcher.gpus_per_node=0)")
        if "unknown runtime" in low:
            return (f"hydra.launcher.runtime={cs.runtime} is not a runtime of the engine at {self.address} "
                    f"(it has: {', '.join(self.runtimes())}). Fix: choose one of those, or unset it")
        if "conflict" in low and "name" in low:
            return (f"a container named {cs.name} already exists ({text}); it is a leftover of an "
                    f"earlier run (hydra.launcher.remove=never?). Fix: docker rm -f {cs.name}")
        if "no such image" in low:
            return (f"hydra.launcher.image={cs.image} is not on the engine ({text}). Fix: build or "
                    "load it, or set hydra.launcher.pull=missing")
        return f"the engine refused to {step} container {cs.name}: {text}"


def _short(exc: Exception) -> str:
    text = getattr(exc, "explanation", None) or str(exc)
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return " ".join(str(text).split())[:400]
