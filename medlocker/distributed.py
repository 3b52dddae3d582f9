"""The few collective operations packing needs, over torch.distributed or none.

``torchrun --nproc_per_node N tools/pack.py ...`` sets ``RANK``/``WORLD_SIZE``;
:func:`from_environment` then joins the process group (NCCL on CUDA, gloo on
CPU) and each rank packs its own shards. Without torchrun it is a world of one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["Comm", "from_environment"]


@dataclass
class Comm:
    """Rank, world size and collectives; a world of one when not distributed."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def all_gather(self, obj: Any) -> list[Any]:
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def device(self, requested: str = "auto") -> torch.device:
        """This rank's device: its own GPU when CUDA is there, else the CPU."""
        if requested == "auto":
            requested = "cuda" if torch.cuda.is_available() else "cpu"
        if requested == "cuda" and self.distributed:
            return torch.device("cuda", self.local_rank)
        return torch.device(requested)

    def close(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def from_environment(device: str = "auto") -> Comm:
    """Join the torchrun process group if ``WORLD_SIZE`` > 1, else a world of one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Comm()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and device in ("auto", "cuda")
    if cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return Comm(rank=rank, world_size=world, local_rank=local)
