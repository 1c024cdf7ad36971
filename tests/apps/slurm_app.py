"""Test app for nrun_slurm: behaviours that only mean something on Slurm (ids, requeue, restarts)."""

import dataclasses
import hashlib
import os
import pathlib
import sys
import time

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig


@dataclasses.dataclass
class Point:
    """A value whose class lives in the app's __main__: it must come back as itself."""

    x: int
    y: int


@hydra.main(version_base=None, config_path="conf", config_name="sweep_app")
def main(cfg: DictConfig):
    restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
    print(f"point x={cfg.x} action={cfg.action} restarts={restarts}", flush=True)
    print("to-stderr", file=sys.stderr, flush=True)
    if cfg.action == "raise":
        raise ValueError(f"boom at x={cfg.x}")
    _wait_for_gate(cfg.get("gate"))
    if cfg.action == "late_raise":
        time.sleep(cfg.seconds)
        raise ValueError(f"late boom at x={cfg.x}")
    if cfg.action == "sleep":
        time.sleep(cfg.seconds)
    if cfg.action == "jobid":
        return {"job_id": HydraConfig.get().job.id, "num": HydraConfig.get().job.num, "x": cfg.x}
    if cfg.action == "requeue_once":  # long on the first run, quick once Slurm restarted it
        if restarts == 0:
            time.sleep(cfg.seconds)
        return {"restarts": restarts, "job_id": HydraConfig.get().job.id}
    if cfg.action == "flaky":  # fails on its first attempt only
        marker = pathlib.Path(HydraConfig.get().runtime.output_dir) / "tried"
        if not marker.exists():
            marker.write_text("once")
            raise RuntimeError("first attempt fails")
        return "second attempt"
    if cfg.action == "point":
        return Point(cfg.x, cfg.x * cfg.x)
    if cfg.action == "env":
        return {k: _digest(os.environ.get(k)) if "TOKEN" in k else os.environ.get(k) for k in cfg.env_names}
    return {"x": cfg.x, "square": cfg.x * cfg.x}


def _wait_for_gate(path):
    """With +gate=FILE: hold the point until the test creates FILE (no race with a clock)."""
    deadline = time.monotonic() + 600
    while path and not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.1)


def _digest(value):
    return None if value is None else "sha256:" + hashlib.sha256(value.encode()).hexdigest()[:16]


if __name__ == "__main__":
    main()
