"""torchrun support shared by every command that can scale out: who am I, and gather to rank 0.

Under ``torchrun`` (WORLD_SIZE > 1) the process group is gloo on CPU and nccl on CUDA; a plain run is
rank 0 of 1 and never touches torch.distributed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Rank:
    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str | None = None) -> tuple[Rank, str | None]:
    """Join the torchrun group if there is one; returns this rank and the device it should use."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Rank(0, 1, 0), device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and (device in (None, "auto") or str(device).startswith("cuda"))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    return Rank(dist.get_rank(), dist.get_world_size(), local_rank), device


def shard_bounds(count: int, rank: Rank) -> tuple[int, int]:
    """Contiguous shard [start, stop) of ``count`` items, so concatenating shards in rank order is the whole."""
    base, extra = divmod(count, rank.world_size)
    start = rank.rank * base + min(rank.rank, extra)
    return start, start + base + (1 if rank.rank < extra else 0)


def gather_to_main(value: Any, rank: Rank) -> list[Any] | None:
    """Every rank's ``value`` in rank order on rank 0 (None elsewhere); a plain run gets ``[value]``."""
    if not rank.distributed:
        return [value]
    gathered: list[Any] | None = [None] * rank.world_size if rank.is_main else None
    dist.gather_object(value, gathered, dst=0)
    return gathered


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` summed over the ranks of an initialised process group, in place; itself in a plain run."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor)
    return tensor


def finish_distributed() -> None:
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
