"""The hosts of nrun_ssh: from ``hydra.launcher.hosts`` or a hosts file, checked before anything
runs, and the slots they offer.

A host is written as a string (``[user@]address[:port]``) or a mapping with the keys of
``Host``. A hosts file (YAML) holds ``hosts: [...]`` of the same; ``nrun sandbox ssh env``
exports one (NRUN_SSH_HOSTS_FILE), so the sandbox's hosts are the default target.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence

from nrun_core.errors import ConfigError

HOSTS_FILE_ENV = "NRUN_SSH_HOSTS_FILE"
KNOWN_HOSTS_ENV = "NRUN_SSH_KNOWN_HOSTS"
_KEYS = {"name", "address", "port", "user", "key_file", "slots", "gpus", "python", "remote_dir", "env",
         "docker_paths"}
_SPEC = re.compile(r"^(?:(?P<user>[^@\s]+)@)?(?P<address>\[[^\]]+\]|[^:@\s]+)(?::(?P<port>\d+))?$")


@dataclass(frozen=True)
class Host:
    name: str
    address: str
    port: int = 22
    user: Optional[str] = None
    key_file: Optional[str] = None
    slots: int = 1                      # points (or nodes of points) it runs at once
    gpus: int = 0
    python: Optional[str] = None        # overrides hydra.launcher.python on this host
    remote_dir: Optional[str] = None    # overrides hydra.launcher.remote_dir on this host
    env: Dict[str, str] = field(default_factory=dict)
    # Where the host's Docker engine sees the host's paths, when it runs elsewhere (a shared or
    # Docker-in-Docker engine): {"/tmp": "/srv/host1/tmp"} rewrites bind-mount sources.
    docker_paths: Dict[str, str] = field(default_factory=dict)

    def engine_path(self, path: str) -> str:
        for prefix, there in sorted(self.docker_paths.items(), key=lambda kv: -len(kv[0])):
            p = prefix.rstrip("/")
            if path == p or path.startswith(p + "/"):
                return there.rstrip("/") + path[len(p):]
        return path

    @property
    def where(self) -> str:
        return f"{self.name} ({self.user + '@' if self.user else ''}{self.address}:{self.port})"


def load(opts: Any) -> List[Host]:
    """The sweep's hosts, from hydra.launcher.hosts, else hydra.launcher.hosts_file, else
    $NRUN_SSH_HOSTS_FILE; a ConfigError names the entry and the fix."""
    entries: Sequence[Any] = list(opts.hosts or [])
    setting = "hydra.launcher.hosts"
    if not entries:
        path = opts.hosts_file or os.environ.get(HOSTS_FILE_ENV)
        if not path:
            raise ConfigError("nrun_ssh has no hosts: set hydra.launcher.hosts=[gpu1,user@gpu2:2222] or "
                              f"hydra.launcher.hosts_file=PATH (or export {HOSTS_FILE_ENV}; "
                              "`nrun sandbox ssh up` starts two local test hosts)")
        entries, setting = _read_file(os.path.expanduser(str(path))), f"hosts file {path}"
    gpus_per_node = int(getattr(opts, "gpus_per_node", 0) or 0)
    hosts = [_parse(e, i, setting, gpus_per_node) for i, e in enumerate(entries)]
    names = [h.name for h in hosts]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"{setting}: host name(s) {dup} appear twice; give each host its own `name`")
    return hosts


def _read_file(path: str) -> List[Any]:
    import yaml

    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except OSError as exc:
        raise ConfigError(f"hydra.launcher.hosts_file={path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"hydra.launcher.hosts_file={path} is not valid YAML: {exc}") from None
    hosts = data.get("hosts") if isinstance(data, dict) else data
    if not isinstance(hosts, list) or not hosts:
        raise ConfigError(f"hydra.launcher.hosts_file={path} must hold `hosts:` with a list of hosts "
                          "(strings like user@gpu1:22, or mappings with address, port, user, ...)")
    return hosts


def _parse(entry: Any, i: int, setting: str, gpus_per_node: int) -> Host:
    where = f"{setting}[{i}]"
    if isinstance(entry, str):
        m = _SPEC.match(entry.strip())
        if not m:
            raise ConfigError(f"{where}={entry!r}: write a host as [user@]address[:port]")
        data: Dict[str, Any] = {"address": m["address"].strip("[]"), "user": m["user"],
                                "port": int(m["port"] or 22)}
    elif isinstance(entry, Mapping):
        data = {str(k): v for k, v in entry.items() if v is not None}
        unknown = sorted(set(data) - _KEYS)
        if unknown:
            raise ConfigError(f"{where} has unknown key(s) {unknown}; valid keys: {sorted(_KEYS)}")
        if not data.get("address"):
            raise ConfigError(f"{where} has no address; set {where}.address (a host name or IP)")
    else:
        raise ConfigError(f"{where}: a host is a string ([user@]address[:port]) or a mapping, "
                          f"not {type(entry).__name__}")
    for key in ("port", "slots", "gpus"):
        if key in data:
            try:
                data[key] = int(data[key])
            except (TypeError, ValueError):
                raise ConfigError(f"{where}.{key}={data[key]!r}: must be an integer") from None
    if not 0 < data.get("port", 22) < 65536:
        raise ConfigError(f"{where}.port={data['port']}: must be 1..65535")
    gpus = data.get("gpus", 0)
    if "slots" not in data:  # one point per GPU group where the host has GPUs, else one at a time
        data["slots"] = max(1, gpus // gpus_per_node) if gpus and gpus_per_node else 1
    if data["slots"] < 1:
        raise ConfigError(f"{where}.slots={data['slots']}: must be at least 1")
    if gpus_per_node and gpus and gpus_per_node > gpus:
        raise ConfigError(f"hydra.launcher.gpus_per_node={gpus_per_node} but {where} has gpus={gpus}; "
                          "lower gpus_per_node or list hosts with enough GPUs")
    data["env"] = {str(k): str(v) for k, v in (data.get("env") or {}).items()}
    data["docker_paths"] = {str(k): str(v) for k, v in (data.get("docker_paths") or {}).items()}
    data.setdefault("name", str(data["address"]))
    data["name"] = str(data["name"])
    if data.get("key_file"):
        data["key_file"] = os.path.expanduser(str(data["key_file"]))
    return Host(**data)


def known_hosts(opts: Any) -> str:
    """hydra.launcher.known_hosts, else $NRUN_SSH_KNOWN_HOSTS, else ~/.ssh/known_hosts."""
    return os.path.expanduser(opts.known_hosts or os.environ.get(KNOWN_HOSTS_ENV) or "~/.ssh/known_hosts")


class Slots:
    """Free slots per host; a point takes one slot on each of ``nodes`` distinct hosts."""

    def __init__(self, hosts: Sequence[Host]) -> None:
        self.free = {h.name: h.slots for h in hosts}
        self.down: Dict[str, str] = {}

    def take(self, nodes: int) -> Optional[List[str]]:
        """Hosts for one point, most free first (spreads points), or None if they are busy now."""
        up = [n for n, k in self.free.items() if k > 0 and n not in self.down]
        if len(up) < nodes:
            return None
        order = sorted(up, key=lambda n: -self.free[n])[:nodes]
        if nodes > 1:  # keep the hosts' listed order: node 0 (the rendezvous) is the first listed
            order = [n for n in self.free if n in order]
        for n in order:
            self.free[n] -= 1
        return order

    def fits(self, nodes: int) -> bool:
        return len([n for n, k in self.free.items() if k > 0 and n not in self.down]) >= nodes

    def give(self, names: Sequence[str]) -> None:
        for n in names:
            self.free[n] += 1

    def possible(self, nodes: int) -> bool:
        """Could a point of ``nodes`` hosts still ever start (hosts not marked down)?"""
        return len([n for n in self.free if n not in self.down]) >= nodes
