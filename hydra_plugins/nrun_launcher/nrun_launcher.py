"""Hydra registration of the nrun launchers; every piece of work lives in ``nrun_core``.

Hydra imports this module at every start of every Hydra app on the machine, so it must stay
cheap: it registers configs from ``nrun_core.registry`` (plain data) and declares one thin
Launcher class whose methods import the real implementation on first use.

Registration is lazy. ``ConfigStore.store`` turns a dataclass into an OmegaConf node at once
(a few ms each, paid by every Hydra app, nrun user or not); Hydra deep-copies a stored node each
time it loads one, so nodes stored here build the structured config in ``__deepcopy__``, only
when an nrun launcher is actually selected. Executors of other packages (entry points) are
registered the same way, by the launcher group itself, only when Hydra asks it for a name it
lacks (``_PluginAwareGroup``).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, Optional, Sequence

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.config_store import ConfigNode, ConfigStore
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


def _register_executor(entry: registry.ExecutorEntry) -> None:
    _register("nrun/schema", entry.option, lambda: _schema(entry), "hydra.launcher")
    _register("hydra/launcher", entry.option, lambda: _entry(entry), "_global_")


class _PluginAwareGroup(dict):
    """A ConfigStore group (`hydra/launcher`, `nrun/schema`) that, asked for a name it lacks,
    reads the ``nrun.executors`` entry points once and registers the executors found there.

    Hydra asks the ConfigStore only for configs no file source has, so a plain Hydra app (whose
    `basic` launcher is right here) never pays for the entry-point scan. Deep copies (Hydra's
    caching repository copies the whole store at every composition) share the group: it is
    only ever read, and an executor found later is then found by every copy.
    """

    def __contains__(self, key: object) -> bool:
        return dict.__contains__(self, key) or self._load(key)

    def __getitem__(self, key: Any) -> Any:
        if not dict.__contains__(self, key):
            self._load(key)
        return dict.__getitem__(self, key)

    def __deepcopy__(self, memo: Dict[int, Any]) -> "_PluginAwareGroup":
        return self

    def _load(self, key: object) -> bool:
        global _plugins_registered
        if _plugins_registered or not isinstance(key, str):
            return False
        _plugins_registered = True  # all of them at once: Hydra's "available options" list them too
        for entry in registry.plugins().values():
            _register_executor(entry)
        return dict.__contains__(self, key)


_plugins_registered = False


def _plugin_aware(group: str) -> None:
    parent, _, leaf = group.rpartition("/")
    node = ConfigStore.instance().repo
    for part in parent.split("/"):
        node = node.setdefault(part, {})
    node[leaf] = _PluginAwareGroup(node.get(leaf, {}))


for _e in registry.BUILTIN:
    _register_executor(_e)
_plugin_aware("hydra/launcher")
_plugin_aware("nrun/schema")


class NrunSearchPath(SearchPathPlugin):
    """Adds nrun's YAML groups (`nrun/packager`, `nrun/launcher`) shipped in the wheel."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append(provider="nrun", path=f"file://{_conf_dir()}")


def _conf_dir() -> str:
    """`nrun_conf/` beside `hydra_plugins/` in an installed wheel, `conf/` in a source checkout."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    wheel = os.path.join(root, "nrun_conf")
    return wheel if os.path.isdir(wheel) else os.path.join(root, "conf")


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
