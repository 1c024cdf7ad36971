"""Tune a tiny polynomial ridge regression with Hydra's Optuna sweeper: each trial fits the
model on 30 noisy samples of sin(3x) and returns its validation error, which nrun hands back to
the sweeper whatever host the trial ran on. The data are fixed (seeded), so the best possible
value is known: `known_optimum()` finds it by brute force."""

import socket
from functools import lru_cache
from typing import Tuple

import hydra
import numpy as np
from omegaconf import DictConfig


@lru_cache(maxsize=None)
def dataset() -> Tuple[np.ndarray, ...]:
    """(x_train, y_train, x_val, y_val): the same 60 points on every host."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-1.0, 1.0, 60)
    y = np.sin(3.0 * x) + 0.1 * rng.normal(size=60)
    return x[:30], y[:30], x[30:], y[30:]


def val_mse(degree: int, alpha: float) -> float:
    """Validation MSE of ridge regression on polynomial features of this degree."""
    xt, yt, xv, yv = dataset()
    a, av = np.vander(xt, degree + 1), np.vander(xv, degree + 1)
    w = np.linalg.solve(a.T @ a + alpha * np.eye(degree + 1), a.T @ yt)
    return float(np.mean((av @ w - yv) ** 2))


def known_optimum() -> float:
    """The best validation MSE over the whole search space (every degree, a dense alpha grid)."""
    return min(val_mse(d, float(a)) for d in range(1, 13) for a in np.logspace(-8, 1, 500))


@hydra.main(version_base=None, config_path="conf", config_name="fit")
def fit(cfg: DictConfig) -> float:
    mse = val_mse(int(cfg.degree), float(cfg.alpha))
    print(f"degree={cfg.degree} alpha={float(cfg.alpha):.3g} val_mse={mse:.6f} on {socket.gethostname()}")
    return mse


if __name__ == "__main__":
    fit()
