"""A few plain SGD steps on a model: what gradient tests take before they look at gradients."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn


def sgd_steps(model: nn.Module, batch: dict[str, torch.Tensor], target: torch.Tensor, steps: int = 3,
              check: Callable[[torch.Tensor], None] | None = None) -> None:
    """``steps`` SGD steps (lr 0.1) on the MSE to ``target``, leaving the last step's gradients in place.

    More than one because D-NeRV's zero-initialised heads pass gradients on to the layers before them
    only after a step or two. ``check`` sees every output."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(steps):
        optimizer.zero_grad()
        out = model(batch)
        if check is not None:
            check(out)
        (out - target).square().mean().backward()
        optimizer.step()
