"""Test app: a gloo all-reduce across every torchrun worker; rank 0 returns what it saw."""

import os

import hydra
from omegaconf import DictConfig


@hydra.main(version_base=None, config_path=None, config_name=None)
def main(cfg: DictConfig):
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    t = torch.tensor([float(rank + 1)])
    dist.all_reduce(t)
    print(f"rank {rank}/{world} host={os.uname().nodename} sum={t.item()}", flush=True)
    dist.destroy_process_group()
    return {"world_size": world, "sum": t.item(), "expected": world * (world + 1) / 2}


if __name__ == "__main__":
    main()
