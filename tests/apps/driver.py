"""A wrapper script that drives Hydra with a task function from another module (as a test, a
notebook or a launcher script would): that function is what must run, not this file."""

import os

import hydra

import prog_tasks

if __name__ == "__main__":
    conf = os.path.join(os.path.dirname(os.path.abspath(__file__)), "conf")
    hydra.main(version_base=None, config_path=conf, config_name="sweep_app")(prog_tasks.task)()
