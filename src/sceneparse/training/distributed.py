"""Multi-process data parallelism: the torchrun process group, and the sampler that makes N processes
see exactly the batches one process would."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch.utils.data import Sampler


def init_distributed(device: torch.device) -> tuple[int, int, torch.device]:
    """``(rank, world_size, device)``; under ``torchrun`` (``WORLD_SIZE`` > 1) joins the process group
    (NCCL on CUDA, gloo on CPU) and binds each process to ``cuda:LOCAL_RANK``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, device
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    return dist.get_rank(), dist.get_world_size(), device


class EpochSampler(Sampler):
    """Yields ``(epoch, index)`` items: a fresh permutation per epoch drawn from ``seed + epoch``.

    Each epoch has ``iters_per_epoch`` global batches of ``batch_size`` (the incomplete last batch
    is dropped), from iteration ``start_iter`` to ``total_iters``. With ``world_size`` > 1, rank r
    yields the r-th slice of every global batch, so N processes see exactly the samples (and, with
    per-sample seeded augmentation, the same crops) as one process with the same global batch.
    """

    def __init__(self, num_samples: int, batch_size: int, seed: int, start_iter: int, total_iters: int,
                 rank: int = 0, world_size: int = 1):
        if num_samples < batch_size:
            raise ValueError(f"{num_samples} training samples are fewer than batch_size={batch_size}")
        if batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} is not divisible by the {world_size} processes")
        self.n, self.bs, self.seed = num_samples, batch_size, seed
        self.start, self.total = start_iter, total_iters
        self.rank, self.world = rank, world_size
        self.iters_per_epoch = num_samples // batch_size

    def __len__(self) -> int:
        return (self.total - self.start) * self.bs // self.world

    def __iter__(self):
        it = self.start
        while it < self.total:
            epoch = it // self.iters_per_epoch
            perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 7919 + epoch)).tolist()
            first = (it % self.iters_per_epoch) * self.bs
            last = min(self.iters_per_epoch, it % self.iters_per_epoch + (self.total - it)) * self.bs
            share = self.bs // self.world  # rank r takes slice r of every global batch
            for b in range(first, last, self.bs):
                for i in perm[b + self.rank * share: b + (self.rank + 1) * share]:
                    yield (epoch, i)
            it += (last - first) // self.bs
