"""Hydra driven programmatically: the task function is a closure built at run time, decorated
by hydra.main inside another function. It cannot be imported by name: backends that run this
Python get it by value, the others must refuse it before anything is submitted."""

import hydra


def build(offset):
    def task(cfg):
        print(f"closure point x={cfg.x}", flush=True)
        return cfg.x + offset

    return task


def run():
    hydra.main(version_base=None, config_path="conf", config_name="sweep_app")(build(100))()


if __name__ == "__main__":
    run()
