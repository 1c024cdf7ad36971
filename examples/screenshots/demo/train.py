"""A stand-in for a training script (examples/screenshots/live_sweep.png was recorded from it): prints a
config line and a loss per epoch; a learning rate too large diverges and raises."""

import math
import time

import hydra
from omegaconf import DictConfig


@hydra.main(version_base=None, config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    print(f"model={cfg.model} lr={cfg.lr} batch_size={cfg.batch_size} epochs={cfg.epochs}", flush=True)
    loss = 2.5
    for epoch in range(cfg.epochs):
        time.sleep(cfg.epoch_s)
        loss *= math.exp(-cfg.lr * 4) if cfg.lr < 0.5 else 3.0
        if not math.isfinite(loss) or loss > 50:
            raise FloatingPointError(f"loss diverged to {loss:.1f} at epoch {epoch} (lr={cfg.lr})")
        print(f"epoch {epoch}: loss={loss:.4f}", flush=True)
    return loss


if __name__ == "__main__":
    main()
