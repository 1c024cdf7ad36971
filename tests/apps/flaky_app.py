"""Test app: the first attempt of each point fails, a retry succeeds, on any backend (the attempt
is the last field of the NRUN_TOKEN nrun gives every point: sweep:point:attempt)."""

import os

import hydra
from omegaconf import DictConfig


@hydra.main(version_base=None, config_path=None, config_name=None)
def main(cfg: DictConfig) -> str:
    attempt = int(os.environ["NRUN_TOKEN"].rsplit(":", 1)[1])
    if attempt == 1:
        raise RuntimeError("first try fails")
    return f"attempt {attempt}"


if __name__ == "__main__":
    main()
