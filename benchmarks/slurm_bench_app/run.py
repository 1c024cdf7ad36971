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
    import resource

    cpu = sum(getattr(resource.getrusage(w), k) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
              for k in ("ru_utime", "ru_stime"))
    with open(os.environ["BENCH_MARKS"], "a") as f:
        f.write(json.dumps({"mark": name, "t": time.time(), "cpu": cpu}) + "\n")


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
    from nrun_core.executors.slurm.executor import SlurmExecutor

    def _around(method: str, begin: str, end: str) -> None:
        """Slurm's share of the launcher: validate (limits, plans, --test-only) and start (the
        sbatch calls); the store records and payloads written between belong to the sweep."""
        original = getattr(SlurmExecutor, method)

        def timed(self, *args, **kwargs):
            _mark(begin)
            try:
                return original(self, *args, **kwargs)
            finally:
                _mark(end)

        setattr(SlurmExecutor, method, timed)

    _around("validate", "slurm_specs", "slurm_validated")
    _around("start", "slurm_start", "slurm_submitted")

app, *rest = sys.argv[1:]
sys.argv = [app, *rest]
sys.path.insert(0, os.path.dirname(os.path.abspath(app)))
_mark("start")
runpy.run_path(app, run_name="__main__")
