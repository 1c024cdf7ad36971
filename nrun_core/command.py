"""How a point runs as a command: the app's own command line, rebuilt for one point.

A point that runs outside the launcher's process (torchrun, a snapshot, a container, a remote
host) is `python <app> <its overrides> hydra.run.dir=<job dir> ...`, plus nrun's result callback.
Arguments stay an argv list end to end; backends that need a shell line quote every word.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import List, Optional

RESULT_CALLBACK = "nrun_core.runtime.callback.ResultCallback"


@dataclass(frozen=True)
class AppRef:
    """The Hydra app as the user started it: a script path or a module, and Hydra's own flags."""

    script: Optional[str] = None      # absolute path of the app file
    module: Optional[str] = None      # `python -m module` apps
    hydra_args: List[str] = field(default_factory=list)  # --config-path/--config-name/--config-dir

    @classmethod
    def detect(cls) -> "AppRef":
        main = sys.modules.get("__main__")
        spec = getattr(main, "__spec__", None)
        flags = _hydra_flags(sys.argv[1:])
        if spec is not None and spec.name and spec.name != "__main__":
            return cls(module=spec.name.removesuffix(".__main__"), hydra_args=flags)
        return cls(script=os.path.abspath(sys.argv[0]), hydra_args=flags)

    def relocated(self, old_root: str, new_root: str) -> "AppRef":
        """The same app inside a copy of its tree (a snapshot, a container mount)."""
        if self.script is None:
            return self
        rel = os.path.relpath(self.script, old_root)
        if rel.startswith(".."):
            return self  # the app lives outside the packaged tree: keep its path
        return AppRef(script=os.path.join(new_root, rel), hydra_args=self.hydra_args)

    def argv(self) -> List[str]:
        head = ["-m", self.module] if self.module else [self.script or ""]
        return [*head, *self.hydra_args]


def point_command(python: str, app: AppRef, overrides: List[str], job_dir: str, index: int,
                  job_id: str) -> List[str]:
    """The command of one point in Hydra's single-run mode, writing where multirun would."""
    return [
        python, *app.argv(), *task_overrides(overrides),
        f"hydra.run.dir={_hydra_quote(job_dir)}",
        "hydra.output_subdir=.hydra",
        f"hydra.job.num={index}",
        f"hydra.job.id={_hydra_quote(job_id)}",
        f"++hydra.callbacks.nrun_result._target_={RESULT_CALLBACK}",
    ]


def task_overrides(overrides: List[str]) -> List[str]:
    """The point's overrides without nrun's own groups (`nrun/launcher=torchrun`, ...).

    Hydra files every override not spelled `hydra.`/`hydra/` under the task, but the nrun groups
    only choose how the launcher runs the point: in the point's own run they mean nothing.
    """
    return [o for o in overrides if not o.lstrip("+~").startswith("nrun/")]


def _hydra_quote(value: str) -> str:
    """Quote a value for Hydra's override grammar (paths may hold spaces, '=' or quotes)."""
    if value and all(c.isalnum() or c in "/._-:+" for c in value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _hydra_flags(args: List[str]) -> List[str]:
    """Keep Hydra's config-selection flags from the launching command line, drop the rest."""
    keep = ("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd")
    out: List[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        name = arg.split("=", 1)[0]
        if name in keep:
            if "=" in arg:
                out.append(arg)
            elif i + 1 < len(args):
                out += [arg, args[i + 1]]
                i += 1
        i += 1
    return out
