"""Test app: each point does what `action` says, so tests can sweep over behaviours."""

import os
import signal
import sys
import time

import hydra
import hydra.utils
from omegaconf import DictConfig


@hydra.main(version_base=None, config_path="conf", config_name="sweep_app")
def main(cfg: DictConfig):
    print(f"point x={cfg.x} action={cfg.action} msg={cfg.msg!r}", flush=True)
    print("to-stderr", file=sys.stderr, flush=True)
    if cfg.action == "raise":
        raise ValueError(f"boom at x={cfg.x}")
    if cfg.action == "exit":
        os._exit(3)
    if cfg.action == "segv":
        os.kill(os.getpid(), signal.SIGSEGV)
    if cfg.action == "tick":  # a line every 0.2 s: something to follow live
        for i in range(int(cfg.seconds * 5)):
            print(f"tick {i}", flush=True)
            time.sleep(0.2)
    if cfg.action == "sleep":
        time.sleep(cfg.seconds)
    if cfg.action == "burn":
        end = time.process_time() + cfg.seconds
        while time.process_time() < end:
            pass
    if cfg.action == "modules":  # what Hydra's start imported of nrun
        print("nrun modules:", sorted(m for m in sys.modules if m.startswith("nrun_core")))
    if cfg.action == "env":  # secrets come back as a digest: the test checks they arrived, not their text
        return {k: _digest(os.environ.get(k)) if "TOKEN" in k else os.environ.get(k) for k in cfg.env_names}
    if cfg.action == "cwd":
        return os.getcwd()
    if cfg.action == "orig_cwd":  # what hydra.utils.get_original_cwd() says in the point
        return hydra.utils.get_original_cwd()
    if cfg.action == "value":  # a number, as Optuna wants
        return float(cfg.x * cfg.x)
    if cfg.action == "daemon":  # leaves a process behind: a double fork that outlives the point
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                with open(cfg.msg, "w") as f:
                    f.write(str(os.getpid()))
                time.sleep(300)
            os._exit(0)
        os.wait()
        time.sleep(cfg.seconds if cfg.seconds > 1 else 0.5)
    return {"x": cfg.x, "msg": cfg.msg, "square": cfg.x * cfg.x}


def _digest(value):
    import hashlib

    return None if value is None else "sha256:" + hashlib.sha256(value.encode()).hexdigest()[:16]


if __name__ == "__main__":
    main()
