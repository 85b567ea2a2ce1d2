"""torchrun support shared by the build and the fitting loop.

`torchrun --nproc-per-node N -m nvrloader.build ...` sets WORLD_SIZE/RANK/LOCAL_RANK; every process
then calls `init_distributed()` once. Without torchrun (WORLD_SIZE unset or 1) everything here is a
no-op, so single-process code needs no special case.
"""
from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist


def _env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_distributed() -> bool:
    """True when a process group with more than one process is up."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def init_distributed() -> tuple[int, int, int]:
    """Join the torchrun process group if there is one; return (rank, world_size, local_rank).

    The backend is NCCL when CUDA is available (and each process is pinned to its local GPU), gloo
    otherwise, so a CPU-only machine can still run several processes. Safe to call more than once.
    """
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_available() or _env_world_size() <= 1:
        return 0, 1, 0
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available()
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return dist.get_rank(), dist.get_world_size(), local_rank


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def is_main_process() -> bool:
    """Rank 0 (or the only process): the one that writes files and shows progress bars."""
    return rank() == 0


def barrier() -> None:
    """Wait for every process; a no-op when running alone."""
    if is_distributed():
        dist.barrier()


def broadcast(value: Any) -> Any:
    """Rank 0's ``value`` on every process (any picklable object); itself when running alone."""
    if not is_distributed():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shutdown_distributed() -> None:
    """Leave the process group (at the very end of a torchrun program)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
