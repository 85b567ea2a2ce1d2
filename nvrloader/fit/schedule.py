"""The NeRV family's learning-rate schedule: linear warm-up, then a half cosine down to 0.

Without a time budget the schedule runs over the planned steps (epochs x steps per epoch). With
one, a step's position is the further of its index and the share of the budget already spent (in
steps), so whichever ends first, the planned steps or the budget, ends the cosine too: a fit the
budget stops has warmed up and annealed like a finished one, only with fewer steps.
"""
from __future__ import annotations

import math
from typing import Any

import torch


def lr_factor(step: float, total_steps: int, warmup: float, warmup_start: float = 0.0) -> float:
    """Learning-rate multiplier at schedule position `step` (an optimiser step, 0-based; fractional
    when a time budget sets the position).

    Warm-up covers the first round(warmup * total_steps) steps: a line from `warmup_start` to 1 that
    each step reads at its end, so step 0 already runs at start + (1 - start) / warm_steps (never at
    lr 0) and the last warm-up step at 1. Then a half cosine that reaches 0 at `total_steps`.
    """
    warm = round(warmup * total_steps)
    if step < warm:
        return warmup_start + (1.0 - warmup_start) * min(1.0, (step + 1) / warm)
    rest = total_steps - warm
    if rest <= 0:
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * min(step - warm, rest) / rest))


def schedule_position(step: int, total_steps: int, seconds: float, time_budget: float | None) -> float:
    """The position (in steps) of optimiser step `step`, started after `seconds` of training."""
    if time_budget is None:
        return float(step)
    spent = seconds / time_budget if time_budget > 0 else float(seconds > 0)
    return max(float(step), min(1.0, spent) * total_steps)


class Schedule:
    """Sets the optimiser's learning rate before every step from (step, training seconds so far).

    Stateless by design: a resumed fit recomputes the lr from its saved step and seconds, so a
    changed time budget re-plans the rest of the schedule instead of replaying a stale lr.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, total_steps: int, warmup: float,
                 warmup_start: float, time_budget: float | None) -> None:
        self.optimizer = optimizer
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        self.total_steps, self.warmup, self.warmup_start = total_steps, warmup, warmup_start
        self.time_budget = time_budget
        self.position = 0.0     # of the last step set
        self.factor = math.nan

    def apply(self, step: int, seconds: float) -> float:
        """Set the lr of step `step`; returns its factor."""
        self.position = schedule_position(step, self.total_steps, seconds, self.time_budget)
        self.factor = lr_factor(self.position, self.total_steps, self.warmup, self.warmup_start)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * self.factor
        return self.factor

    def done(self, step: int, seconds: float) -> float:
        """Fraction of the schedule behind a fit that has run `step` steps in `seconds`."""
        return schedule_position(step, self.total_steps, seconds, self.time_budget) / max(self.total_steps, 1)

    def state_dict(self) -> dict[str, Any]:
        return {"position": self.position, "factor": self.factor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.position, self.factor = float(state["position"]), float(state["factor"])
