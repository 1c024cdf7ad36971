"""Run a Hydra app with nrun's plugin visible or hidden: `with_plugins.py on|off APP ARGS...`.

Both variants go through this same wrapper, so the difference is what nrun adds to Hydra's
plugin discovery and config search path, nothing else.
"""

import os
import runpy
import sys

mode, app, *rest = sys.argv[1:]
if mode == "off":
    import hydra_plugins

    hydra_plugins.__path__ = [p for p in hydra_plugins.__path__ if not os.path.exists(os.path.join(p, "nrun_launcher"))]
sys.argv = [app, *rest]
runpy.run_path(app, run_name="__main__")
