"""Where a training run executes: the device, the torchrun process group, DDP and mixed precision.

One set of rules for every loop: "auto" is the GPU when there is one; under torchrun a CUDA device
without an index becomes the process's local GPU; autocast is only ever active on CUDA (bf16 where
the GPU supports it, else fp16) and a gradient scaler runs only for fp16.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import ContextManager, Iterable

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from nvrloader.device import resolve_device
from nvrloader.distributed import init_distributed

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Runtime:
    """This process's place in a run: its device, rank and the number of processes."""
    device: torch.device
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes files and shows progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def setup_runtime(device: str | torch.device = "auto") -> Runtime:
    """Join torchrun's process group when there is one and pick this process's device."""
    rank, world, local_rank = init_distributed()
    dev = resolve_device(device)
    if dev.type == "cuda" and dev.index is None and world > 1:
        dev = torch.device("cuda", local_rank)
    return Runtime(dev, rank, world)


def wrap_ddp(model: nn.Module, runtime: Runtime, find_unused_parameters: bool = False) -> nn.Module:
    """The model in a DDP wrapper under torchrun, else the model itself (its `.module` is the model)."""
    if not runtime.distributed:
        return model
    ids = [runtime.device.index] if runtime.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused_parameters)


def autocast_dtype(enabled: bool | None, device: torch.device, dtype: str = "auto") -> torch.dtype | None:
    """The autocast dtype, or None for full precision. `enabled=None` means on for CUDA."""
    if device.type != "cuda" or enabled is False:
        return None
    if dtype == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if dtype not in AMP_DTYPES:
        raise ValueError(f"amp dtype must be auto, {' or '.join(AMP_DTYPES)}, got {dtype!r}")
    return AMP_DTYPES[dtype]


def autocast(device: torch.device, dtype: torch.dtype | None) -> ContextManager:
    """Mixed precision for the forward pass when `dtype` is set; nothing otherwise."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def grad_scaler(device: torch.device, dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """Loss scaling is needed (and enabled) for fp16 only; bf16 and fp32 keep fp32's range."""
    return torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)


def apply_gradients(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                    parameters: Iterable[torch.Tensor], max_norm: float | None) -> None:
    """One optimiser update from the gradients already accumulated, clipped to `max_norm` if given."""
    if max_norm:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(list(parameters), max_norm)
    scaler.step(optimizer)
    scaler.update()
