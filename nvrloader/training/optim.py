"""The one table of optimisers every training loop builds from (Adam, AdamW, SGD with momentum)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import torch

OPTIMIZERS = ("adam", "adamw", "sgd")


@dataclass(frozen=True)
class OptimizerConfig:
    """What builds an optimiser; parameter groups may override lr and weight_decay per group."""
    name: str
    lr: float
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)   # adam, adamw
    momentum: float = 0.9                       # sgd


def make_optimizer(params: Iterable[Any], config: OptimizerConfig,
                   choices: Sequence[str] = OPTIMIZERS) -> torch.optim.Optimizer:
    """Build `config.name`, refusing names outside `choices` (a loop may offer only part of the table)."""
    if config.name not in choices or config.name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {config.name!r}; choose one of {', '.join(choices)}")
    if config.name == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    kind = torch.optim.AdamW if config.name == "adamw" else torch.optim.Adam
    return kind(params, lr=config.lr, betas=tuple(config.betas), weight_decay=config.weight_decay)
