"""Hydra registration of the nrun launchers; every piece of work lives in ``nrun_core``.

Hydra imports this module at every start of every Hydra app on the machine, so it must stay
cheap: it registers configs from ``nrun_core.registry`` (plain data) and declares one thin
Launcher class whose methods import the real implementation on first use.

Registration is lazy. ``ConfigStore.store`` turns a dataclass into an OmegaConf node at once
(a few ms each, paid by every Hydra app, nrun user or not); Hydra deep-copies a stored node each
time it loads one, so nodes stored here build the structured config in ``__deepcopy__``, only
when an nrun launcher is actually selected. Executors of other packages (entry points) are
served by ``NrunPluginSource``, which reads the entry points only when Hydra asks for a launcher
that no other source has.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Optional, Sequence

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.config_store import ConfigNode, ConfigStore
from hydra.core.object_type import ObjectType
from hydra.plugins.config_source import ConfigLoadError, ConfigResult, ConfigSource
from hydra.plugins.launcher import Launcher
from hydra.plugins.search_path_plugin import SearchPathPlugin

from nrun_core import registry


class _LazyNode:
    """Stands in for a stored config node until Hydra copies it for use.

    Two kinds of deep copy reach it: ``ConfigStore.load`` copies the node itself (a fresh memo:
    build the real config), and ``CachingConfigRepository`` copies the whole store at every
    composition of every Hydra app (a memo already holding the enclosing containers: stay lazy,
    the stand-in is immutable).
    """

    def __init__(self, build: Callable[[], Any]) -> None:
        self._build = build

    def __deepcopy__(self, memo: Dict[int, Any]) -> Any:
        return self._build() if not memo else self


def _schema(entry: registry.ExecutorEntry) -> Any:
    """The executor's options as a structured config, tagged with the executor it selects."""
    from omegaconf import OmegaConf

    cls = registry.load(entry.schema)
    return OmegaConf.structured(cls(_executor_=entry.key))


def _entry(entry: registry.ExecutorEntry) -> Any:
    """`hydra/launcher=<option>`: the schema plus the packager and launcher group defaults.

    Stored at the global package so the group entries inside get short override keys
    (`nrun/launcher=torchrun`, not `nrun/launcher@hydra.launcher.launcher=torchrun`).
    """
    from omegaconf import OmegaConf

    return OmegaConf.create({"defaults": [{"/nrun/schema": entry.option},
                                          {"/nrun/packager": entry.default_packager},
                                          {"/nrun/launcher": "direct"}, "_self_"]})


def _register(group: str, name: str, build: Callable[[], Any], package: str) -> None:
    node = ConfigStore.instance().repo
    for part in group.split("/"):
        node = node.setdefault(part, {})
    node[f"{name}.yaml"] = ConfigNode(name=f"{name}.yaml", node=_LazyNode(build), group=group,
                                      package=package, provider="nrun")


for _e in registry.BUILTIN:
    _register("nrun/schema", _e.option, lambda e=_e: _schema(e), "hydra.launcher")
    _register("hydra/launcher", _e.option, lambda e=_e: _entry(e), "_global_")


class NrunSearchPath(SearchPathPlugin):
    """Adds nrun's YAML groups (`nrun/packager`, `nrun/launcher`) shipped in the wheel, and the
    source of executors registered by other packages."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append(provider="nrun", path=f"file://{_conf_dir()}")
        search_path.append(provider="nrun-plugins", path=f"{NrunPluginSource.scheme()}://executors")


def _conf_dir() -> str:
    """`nrun_conf/` beside `hydra_plugins/` in an installed wheel, `conf/` in a source checkout."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    wheel = os.path.join(root, "nrun_conf")
    return wheel if os.path.isdir(wheel) else os.path.join(root, "conf")


class NrunPluginSource(ConfigSource):
    """`hydra/launcher=<name>` for executors of other packages (entry points ``nrun.executors``).

    Searched after the file sources, so it is asked only about configs they lack; it reads the
    entry points only for a launcher name that no file and no structured config has (Hydra's
    `basic` lives in the ConfigStore, searched after this source), or when Hydra lists the
    launcher group (help, errors).
    """

    _GROUPS = {"hydra/launcher": "_global_", "nrun/schema": "hydra.launcher"}

    @staticmethod
    def scheme() -> str:
        return "nrun-plugins"

    def _split(self, config_path: str) -> Optional[tuple]:
        path = self._normalize_file_name(config_path.strip("/"))
        group, _, name = path.rpartition("/")
        name = name[: -len(".yaml")] if name.endswith(".yaml") else name
        if group not in self._GROUPS:
            return None
        if ConfigStore.instance().get_type(f"{group}/{name}.yaml") == ObjectType.CONFIG:
            return None  # a structured config (Hydra's own `basic`, ...): the schema source has it
        entry = registry.plugins().get(name)
        return (group, entry) if entry is not None else None

    def load_config(self, config_path: str) -> ConfigResult:
        found = self._split(config_path)
        if found is None:
            raise ConfigLoadError(f"nrun has no executor plugin for {config_path}")
        group, entry = found
        node = _entry(entry) if group == "hydra/launcher" else _schema(entry)
        return ConfigResult(config=node, path=f"{self.scheme()}://{self.path}", provider=self.provider,
                            header={"package": self._GROUPS[group]})

    def available(self) -> bool:
        return True

    def is_group(self, config_path: str) -> bool:
        return config_path.strip("/") in self._GROUPS

    def is_config(self, config_path: str) -> bool:
        return self._split(config_path) is not None

    def list(self, config_path: str, results_filter: Optional[ObjectType]) -> List[str]:
        if config_path.strip("/") not in self._GROUPS or results_filter == ObjectType.GROUP:
            return []
        return sorted(registry.plugins())


class NrunLauncher(Launcher):
    """Thin shell: keeps Hydra's calls and hands them to nrun_core.sweep on first use. One class
    for every executor: the schema's ``_executor_`` names the one it runs."""

    def __init__(self, _executor_: str = "", **options: Any) -> None:
        self.executor = _executor_
        self.options = options
        self._sweep: Optional[Any] = None

    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        from nrun_core.sweep import Sweep

        self._sweep = Sweep(self.executor, self.options, hydra_context=hydra_context,
                            task_function=task_function, config=config)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Any:
        assert self._sweep is not None, "setup() was not called"
        from nrun_core.errors import NrunError

        try:
            return self._sweep.launch(job_overrides, initial_job_idx)
        except NrunError as exc:  # our own errors already say what to fix: no traceback
            import sys

            print(f"nrun: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
