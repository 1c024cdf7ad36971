"""Run the benchmark app with both launchers' entry points timed: `run.py APP ARGS...`.

Records, in $BENCH_MARKS (JSON lines), when the launcher's launch() was entered (the sweeper has
expanded the sweep) and, for nrun, when every point had been composed (its packaging step starts
right after). The same wrapper runs both launchers, so neither gets an advantage.
"""

import json
import os
import runpy
import sys
import time


def _mark(name: str) -> None:
    with open(os.environ["BENCH_MARKS"], "a") as f:
        f.write(json.dumps({"mark": name, "t": time.time()}) + "\n")


def _wrap(cls, method: str, name: str) -> None:
    original = getattr(cls, method)

    def timed(self, *args, **kwargs):
        _mark(name)
        return original(self, *args, **kwargs)

    setattr(cls, method, timed)


def _instantiate_launcher(original):
    """Hydra re-executes plugin modules when it scans them, so patch the launcher instance."""

    def instantiate(*args, **kwargs):
        launcher = original(*args, **kwargs)
        launch = launcher.launch

        def timed(*a, **k):
            _mark("launch")
            return launch(*a, **k)

        launcher.launch = timed
        return launcher

    return instantiate


from hydra.core.plugins import Plugins  # noqa: E402

Plugins.instantiate_launcher = _instantiate_launcher(Plugins.instantiate_launcher)
if any(a.startswith("hydra/launcher=nrun") for a in sys.argv):
    from nrun_core.sweep import Sweep

    _wrap(Sweep, "_package", "composed")  # called once every point is composed
    _wrap(Sweep, "_executor", "specs")  # called once every point's job spec is built

app, *rest = sys.argv[1:]
sys.argv = [app, *rest]
sys.path.insert(0, os.path.dirname(os.path.abspath(app)))
_mark("start")
runpy.run_path(app, run_name="__main__")
