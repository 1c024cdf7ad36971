"""The Slurm benchmark's Hydra app: `burn` CPU-seconds of pure Python work, then return x*x."""

import time

import hydra
from omegaconf import DictConfig


@hydra.main(version_base=None, config_path=None, config_name=None)
def main(cfg: DictConfig) -> int:
    end = time.process_time() + float(cfg.get("burn", 0.0))
    while time.process_time() < end:
        pass
    return int(cfg.x) ** 2


if __name__ == "__main__":
    main()
