"""A Hydra app that uses the GPU it is given: a matmul on CUDA (action=matmul, the default) or an
NCCL all-reduce across torchrun's workers (action=nccl). Returns what the point saw, so a sweep's
results show which GPU each point had. `torch` is imported at the top, as training code does: the
launcher that forks points must not have touched CUDA."""

import os

import hydra
import torch
from omegaconf import DictConfig


@hydra.main(version_base=None, config_path=None, config_name=None)
def main(cfg: DictConfig) -> dict:
    action = cfg.get("action", "matmul")
    seen = {"CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "device_count": torch.cuda.device_count(), "device": torch.cuda.get_device_name(0)}
    if action == "nccl":
        import torch.distributed as dist

        dist.init_process_group("nccl")
        rank, world = dist.get_rank(), dist.get_world_size()
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        t = torch.tensor([float(rank + 1)], device="cuda")
        dist.all_reduce(t)
        torch.cuda.synchronize()
        dist.destroy_process_group()
        return {**seen, "world_size": world, "sum": t.item(), "expected": world * (world + 1) / 2}
    n = int(cfg.get("n", 4096))
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    c = (a @ a.T).float()
    torch.cuda.synchronize()
    print(f"x={cfg.get('x')} on {seen['device']} (CUDA_VISIBLE_DEVICES={seen['CUDA_VISIBLE_DEVICES']})", flush=True)
    return {**seen, "trace_positive": bool(torch.trace(c).item() > 0)}


if __name__ == "__main__":
    main()
