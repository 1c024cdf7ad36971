"""Hydra registration of the nrun launchers; every piece of work lives in ``nrun_core``.

Hydra imports this module at every start of every Hydra app on the machine, so it must stay
cheap: it registers configs and declares thin Launcher classes whose methods import the real
implementation on first use.

Registration is lazy. ``ConfigStore.store`` turns a dataclass into an OmegaConf node at once
(a few ms each, paid by every Hydra app, nrun user or not); Hydra deep-copies a stored node each
time it loads one, so nodes stored here build the structured config in ``__deepcopy__``, only
when an nrun launcher is actually selected.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, Optional, Sequence

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.config_store import ConfigNode, ConfigStore
from hydra.plugins.launcher import Launcher
from hydra.plugins.search_path_plugin import SearchPathPlugin

# hydra/launcher option → schema dataclass in nrun_core.conf; each executor adds its line.
LAUNCHERS: Dict[str, str] = {
    "nrun_local": "LocalConf",
    "nrun_slurm": "SlurmConf",
    "nrun_docker": "DockerConf",
}

# Packager chosen by `hydra/launcher=<name>` unless `nrun/packager=...` is given: executors whose
# points cannot see this tree ship the code (passthrough for the rest).
DEFAULT_PACKAGER: Dict[str, str] = {"nrun_docker": "workdir"}


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


def _schema(class_name: str) -> Any:
    from omegaconf import OmegaConf

    from nrun_core import conf

    return OmegaConf.structured(getattr(conf, class_name))


def _entry(schema: str) -> Any:
    """`hydra/launcher=<name>`: the schema plus the packager and launcher group defaults.

    Stored at the global package so the group entries inside get short override keys
    (`nrun/launcher=torchrun`, not `nrun/launcher@hydra.launcher.launcher=torchrun`).
    """
    from omegaconf import OmegaConf

    packager = DEFAULT_PACKAGER.get(schema, "passthrough")
    return OmegaConf.create({"defaults": [{"/nrun/schema": schema}, {"/nrun/packager": packager},
                                          {"/nrun/launcher": "direct"}, "_self_"]})


def _register(group: str, name: str, build: Callable[[], Any], package: str) -> None:
    node = ConfigStore.instance().repo
    for part in group.split("/"):
        node = node.setdefault(part, {})
    node[f"{name}.yaml"] = ConfigNode(name=f"{name}.yaml", node=_LazyNode(build), group=group,
                                      package=package, provider="nrun")


for _name, _class in LAUNCHERS.items():
    _register("nrun/schema", _name, lambda c=_class: _schema(c), "hydra.launcher")
    _register("hydra/launcher", _name, lambda n=_name: _entry(n), "_global_")


class NrunSearchPath(SearchPathPlugin):
    """Adds nrun's YAML groups (`nrun/packager`, `nrun/launcher`) shipped in the wheel."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append(provider="nrun", path=f"file://{_conf_dir()}")


def _conf_dir() -> str:
    """`nrun_conf/` beside `hydra_plugins/` in an installed wheel, `conf/` in a source checkout."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    wheel = os.path.join(root, "nrun_conf")
    return wheel if os.path.isdir(wheel) else os.path.join(root, "conf")


class _NrunLauncher(Launcher):
    """Thin shell: keeps Hydra's calls and hands them to nrun_core.sweep on first use."""

    executor: str = ""

    def __init__(self, **options: Any) -> None:
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


class NrunLocalLauncher(_NrunLauncher):
    executor = "local"


class NrunSlurmLauncher(_NrunLauncher):
    executor = "slurm"


class NrunDockerLauncher(_NrunLauncher):
    executor = "docker"
