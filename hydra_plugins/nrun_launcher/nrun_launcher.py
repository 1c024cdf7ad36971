"""Hydra registration of the nrun launchers; every piece of work lives in ``nrun_core``.

Hydra imports this module at every start of every Hydra app on the machine, so it must stay
cheap: it registers configs and declares thin Launcher classes whose methods import the real
implementation on first use.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.launcher import Launcher
from hydra.plugins.search_path_plugin import SearchPathPlugin

from nrun_core.conf import LAUNCHERS, launcher_defaults

_cs = ConfigStore.instance()
for _name, _schema in LAUNCHERS:
    _cs.store(group="nrun/schema", name=_name, node=_schema, package="hydra.launcher", provider="nrun")
    _cs.store(group="hydra/launcher", name=_name, node=launcher_defaults(_name), package="_global_",
              provider="nrun")


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
        return self._sweep.launch(job_overrides, initial_job_idx)


class NrunLocalLauncher(_NrunLauncher):
    executor = "local"
