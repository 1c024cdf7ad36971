"""A tiny Hydra app: the sweep example of the README (`-m lr=0.1,0.01 seed=1,2`)."""

import math
import random
import time

import hydra
from omegaconf import DictConfig


@hydra.main(version_base=None, config_path="conf", config_name="train")
def train(cfg: DictConfig) -> float:
    rng = random.Random(cfg.seed)
    loss = 1.0
    for step in range(cfg.steps):
        loss *= 1.0 - cfg.lr * rng.uniform(0.5, 1.0)
        time.sleep(cfg.step_time)
    print(f"lr={cfg.lr} seed={cfg.seed} final loss={loss:.4f}")
    return round(math.log10(max(loss, 1e-12)), 4)


if __name__ == "__main__":
    train()
