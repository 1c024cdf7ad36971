"""The one table of executors: Hydra option → schema, executor class, default packager.

The Hydra plugin, the sweep and the `nrun` command all read it. Built-in executors are listed
here; a separate package adds its own through the entry-point group ``nrun.executors``:

    [project.entry-points."nrun.executors"]
    acme = "acme_nrun:EXECUTOR"          # an ExecutorEntry; `hydra/launcher=acme` selects it

Imported by the plugin at every Hydra start: plain data and the standard library only; entry
points are read only when a name is not built in (their scan costs milliseconds).
"""

from __future__ import annotations

import importlib
from typing import Any, Dict, Optional

GROUP = "nrun.executors"


class ExecutorEntry:
    """One executor. A plain class, not a dataclass: this module is imported at every Hydra
    start, and building a dataclass costs a millisecond."""

    __slots__ = ("option", "schema", "executor", "default_packager", "name")

    def __init__(self, option: str, schema: str, executor: str, default_packager: str = "passthrough",
                 name: str = "") -> None:
        self.option = option                      # `hydra/launcher=<option>`
        self.schema = schema                      # "module:Dataclass" (subclass of nrun_core.conf.NrunConf)
        self.executor = executor                  # "module:Class" (subclass of executors.base.Executor)
        self.default_packager = default_packager  # chosen unless `nrun/packager=...` is given
        self.name = name                          # name in the store and `nrun list`; default: option

    @property
    def key(self) -> str:
        return self.name or self.option

    def __repr__(self) -> str:
        return f"ExecutorEntry({self.option!r}, {self.schema!r}, {self.executor!r})"


BUILTIN = (
    ExecutorEntry("nrun_local", "nrun_core.conf:LocalConf", "nrun_core.executors.local.executor:LocalExecutor",
                  name="local"),
    ExecutorEntry("nrun_slurm", "nrun_core.conf:SlurmConf", "nrun_core.executors.slurm.executor:SlurmExecutor",
                  name="slurm"),
    # Containers cannot see this tree: ship the code.
    ExecutorEntry("nrun_docker", "nrun_core.conf:DockerConf", "nrun_core.executors.docker.executor:DockerExecutor",
                  default_packager="workdir", name="docker"),
    # Hosts see nothing of this machine: ship the code.
    ExecutorEntry("nrun_ssh", "nrun_core.conf:SshConf", "nrun_core.executors.ssh.executor:SshExecutor",
                  default_packager="workdir", name="ssh"),
    # Cloud jobs see only their shared storage: ship the code there.
    ExecutorEntry("nrun_lepton", "nrun_core.executors.lepton.options:LeptonConf",
                  "nrun_core.executors.lepton.executor:LeptonExecutor", default_packager="workdir", name="lepton"),
    ExecutorEntry("nrun_dgxcloud", "nrun_core.executors.dgxcloud.options:DgxCloudConf",
                  "nrun_core.executors.dgxcloud.executor:DgxCloudExecutor", default_packager="workdir",
                  name="dgxcloud"),
    # Pods see only their volume (PVC or hostPath): ship the code there.
    ExecutorEntry("nrun_kubeflow", "nrun_core.executors.kubeflow.options:KubeflowConf",
                  "nrun_core.executors.kubeflow.executor:KubeflowExecutor", default_packager="workdir", name="kubeflow"),
    ExecutorEntry("nrun_kuberay", "nrun_core.executors.kuberay.options:KubeRayConf",
                  "nrun_core.executors.kuberay.executor:KubeRayExecutor", default_packager="workdir", name="kuberay"),
    ExecutorEntry("nrun_skypilot", "nrun_core.executors.skypilot.options:SkypilotConf",
                  "nrun_core.executors.skypilot.executor:SkypilotExecutor", default_packager="workdir",
                  name="skypilot"),
)

_plugins: Optional[Dict[str, ExecutorEntry]] = None


def plugins() -> Dict[str, ExecutorEntry]:
    """Executors other packages registered (by option), read once per process."""
    global _plugins
    if _plugins is None:
        from importlib.metadata import entry_points

        found: Dict[str, ExecutorEntry] = {}
        for ep in entry_points(group=GROUP):
            entry = ep.load()
            if not isinstance(entry, ExecutorEntry):
                raise TypeError(f"entry point {ep.name} = {ep.value} in group {GROUP} must be an "
                                f"nrun_core.registry.ExecutorEntry, not {type(entry).__name__}")
            found[entry.option] = entry
        _plugins = found
    return _plugins


def by_name(name: str) -> ExecutorEntry:
    """The entry of a stored sweep's executor (``local``, ``slurm``, a plugin's name)."""
    for entry in BUILTIN:
        if entry.key == name:
            return entry
    for entry in plugins().values():
        if entry.key == name:
            return entry
    from nrun_core.errors import ConfigError

    raise ConfigError(f"executor {name!r} is not installed here (built in: "
                      f"{', '.join(e.key for e in BUILTIN)}; plugins: {', '.join(plugins()) or 'none'}); "
                      f"install the package that provides it")


def load(path: str) -> Any:
    """``module:attr`` → the object."""
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)
