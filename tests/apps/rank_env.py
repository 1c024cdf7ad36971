"""Test app: prints the multi-node variables nrun sets for the direct launcher, per node."""

import os

import hydra
from omegaconf import DictConfig


@hydra.main(version_base=None, config_path=None, config_name=None)
def main(cfg: DictConfig):
    e = os.environ
    print(f"NODE_RANK={e.get('NODE_RANK')} WORLD_SIZE={e.get('WORLD_SIZE')} MASTER_ADDR={e.get('MASTER_ADDR')} "
          f"LOCAL_WORLD_SIZE={e.get('LOCAL_WORLD_SIZE')} host={os.uname().nodename}", flush=True)
    return e.get("NODE_RANK")


if __name__ == "__main__":
    main()
