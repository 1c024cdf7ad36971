"""Fault points for the fault-injection suite: pause the real launcher at a chosen phase.

With ``NRUN_FAULT_AT=module:Qualified.name`` and ``NRUN_FAULT_FLAG=/path`` in the environment
(and this directory on PYTHONPATH), the first call of that function in the launcher process
writes its pid to the flag file and sleeps (up to a minute) before running the real function,
so a test can signal the launcher exactly in that phase (composing, packing, submitting,
collecting). Nothing of nrun is replaced: the real code runs once the pause ends.
"""

import importlib.abc
import importlib.util
import os
import sys
import time

_TARGET = os.environ.get("NRUN_FAULT_AT", "")
_FLAG = os.environ.get("NRUN_FAULT_FLAG", "")


def _wrap(module):
    owner_path = _TARGET.partition(":")[2].split(".")
    owner = module
    for part in owner_path[:-1]:
        owner = getattr(owner, part)
    real = getattr(owner, owner_path[-1])
    state = {"done": False}

    def paused(*args, **kwargs):
        if not state["done"] and os.getpid() == _LAUNCHER:
            state["done"] = True
            with open(_FLAG, "w") as f:
                f.write(str(os.getpid()))
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and os.path.exists(_FLAG):
                time.sleep(0.05)
        return real(*args, **kwargs)

    setattr(owner, owner_path[-1], paused)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != _TARGET.partition(":")[0]:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return None
        real_exec = spec.loader.exec_module

        def exec_module(module):
            real_exec(module)
            _wrap(module)

        spec.loader.exec_module = exec_module
        return spec


_LAUNCHER = os.getpid()
if _TARGET and _FLAG:
    sys.meta_path.insert(0, _Finder())
