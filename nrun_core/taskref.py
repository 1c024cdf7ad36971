"""How the task function Hydra handed the launcher reaches a point that runs elsewhere.

By reference when it can be imported again (a module-level function of the app's main file, of
a module, of a test file): the point runtime loads that module and takes the same function. A
function that cannot be found again (a closure, a lambda, a function defined inside another, a
``__main__`` without a file such as a notebook) travels by value (cloudpickle, as submitit
does) to backends running this same Python, and is refused for the others before anything is
submitted. Never a different program.
"""

from __future__ import annotations

import base64
import os
import sys
from dataclasses import dataclass
from typing import Any, Dict, Optional

from nrun_core.errors import ConfigError
from nrun_core.runtime.point import unwrap_hydra_main


@dataclass(frozen=True)
class TaskRef:
    """The payload's ``task`` entry, or why the function has no reference."""

    ref: Optional[Dict[str, Any]]
    why_not: str = ""
    name: str = ""

    def for_backend(self, task_function: Any, *, same_python: bool, executor: str) -> Dict[str, Any]:
        """The entry for a point on ``executor``; ConfigError if the function cannot get there."""
        if self.ref is not None:
            return self.ref
        if same_python:
            import cloudpickle

            try:
                data = cloudpickle.dumps(task_function, protocol=4)
            except Exception as exc:
                raise ConfigError(f"the task function {self.name} {self.why_not}, and it cannot be "
                                  f"pickled by value for {executor} ({type(exc).__name__}: {exc}). Fix: "
                                  "define it at module level in an importable file") from None
            return {"kind": "pickle", "data": base64.b64encode(data).decode()}
        raise ConfigError(f"the task function {self.name} {self.why_not}, so it cannot run on {executor} "
                          "(the point runs in another Python, which must import it by name). Fix: define "
                          "it at module level in the app's file or a module, or use a backend that runs "
                          "this Python (nrun_local, nrun_slurm)")


def describe(task_function: Any, code_root: str) -> TaskRef:
    """Find ``task_function`` again by name; paths inside ``code_root`` are kept relative to it
    (the point runtime resolves them against wherever the code is on its machine)."""
    module_name = getattr(task_function, "__module__", None) or ""
    qualname = getattr(task_function, "__qualname__", None) or ""
    name = f"{module_name}.{qualname}" if module_name else repr(task_function)
    if not qualname or "<locals>" in qualname or "<lambda>" in qualname:
        return TaskRef(None, "is defined inside another function (or is a lambda)", name)
    module = sys.modules.get(module_name)
    if module is None:
        return TaskRef(None, f"lives in module {module_name!r}, which is not imported", name)
    found: Any = module
    try:
        for part in qualname.split("."):
            found = getattr(found, part)
    except AttributeError:
        return TaskRef(None, f"is not reachable as {module_name}.{qualname}", name)
    if unwrap_hydra_main(found) is not task_function:
        return TaskRef(None, f"is not the object {module_name}.{qualname} names", name)
    file = getattr(module, "__file__", None)
    if not file:
        return TaskRef(None, f"lives in {module_name}, which has no file (an interactive session?)", name)
    file = os.path.abspath(file)
    spec = getattr(module, "__spec__", None)
    spec_name = spec.name if module_name == "__main__" and spec is not None and spec.name != "__main__" else None
    ref: Dict[str, Any] = {"kind": "ref", "module": module_name, "qualname": qualname,
                           "file": _rel(file, code_root), "root": _rel(_import_root(file, module_name, spec_name),
                                                                       code_root)}
    if spec_name:
        ref["spec_name"] = spec_name
    return TaskRef(ref, "", name)


def _import_root(file: str, module_name: str, spec_name: Optional[str]) -> str:
    """The sys.path entry the module was imported from: a script's own directory, or the
    directory above its top-level package."""
    dotted = spec_name or (module_name if module_name != "__main__" else "")
    depth = dotted.count(".") + 1 if dotted else 1
    if os.path.basename(file) == "__init__.py":
        depth += 1
    root = file
    for _ in range(depth):
        root = os.path.dirname(root)
    return root


def _rel(path: str, root: str) -> str:
    rel = os.path.relpath(path, root)
    return path if rel == ".." or rel.startswith(".." + os.sep) else rel
