"""What a fit is asked to do (FitConfig) and what it hands back (FitResult)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from nvrloader.fit.losses import LOSSES
from nvrloader.training import AMP_DTYPES, runtime_field

FIT_OPTIMIZERS = ("adamw", "adam")  # the NeRV family's papers use these two


@dataclass
class FitConfig:
    """Fit settings. Fields made with `runtime_field` may change when a fit resumes; the rest may not."""
    epochs: int = 100
    batch_size: int = 8                 # per process; effective batch = batch_size * world_size
    lr: float = 5e-4
    optimizer: str = "adamw"            # "adamw" | "adam"
    betas: tuple[float, float] = (0.9, 0.999)   # E-NeRV uses (0.5, 0.999)
    weight_decay: float = 0.0
    warmup: float = 0.2                 # fraction of the schedule: linear warm-up, then cosine to 0
    warmup_start: float = 0.0           # lr fraction the warm-up ramp starts from (official D-NeRV/NeRV: 0.1)
    loss: str = "l1_ssim"               # a key of LOSSES
    amp: bool = runtime_field(True)     # only ever active on CUDA; ignored on CPU
    amp_dtype: str = runtime_field("auto")  # "auto" (bf16 where supported, else fp16) | "bf16" | "fp16"
    # seconds of training in total (across resumes); the warm-up + cosine schedule then runs over
    # the budget (or the planned steps, whichever ends first), so a stopped fit has finished it
    time_budget: float | None = runtime_field(None)
    checkpoint_dir: Path | None = runtime_field(None)
    checkpoint_every: float = runtime_field(600.0)  # seconds between checkpoints (plus at stop and at the end)
    resume: bool = runtime_field(False)
    seed: int = 0
    num_workers: int = runtime_field(0)
    progress: bool = runtime_field(True)
    grad_clip: float | None = None
    find_unused_parameters: bool = runtime_field(False)  # DDP: set when some parameters get no gradient

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.optimizer in FIT_OPTIMIZERS,
             f"optimizer must be one of {sorted(FIT_OPTIMIZERS)}, got {self.optimizer!r}"),
            (0.0 <= self.warmup <= 1.0, f"warmup is a fraction of the steps in [0, 1], got {self.warmup}"),
            (0.0 <= self.warmup_start <= 1.0, f"warmup_start is an lr fraction in [0, 1], got {self.warmup_start}"),
            (self.loss in LOSSES, f"loss must be one of {sorted(LOSSES)}, got {self.loss!r}"),
            (self.amp_dtype in ("auto", *AMP_DTYPES), f"amp_dtype must be auto, bf16 or fp16, got {self.amp_dtype!r}"),
            (self.time_budget is None or self.time_budget >= 0, f"time_budget must be >= 0, got {self.time_budget}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"FitConfig: {message}")
        self.betas = tuple(self.betas)
        if self.checkpoint_dir is not None:
            self.checkpoint_dir = Path(self.checkpoint_dir)


@dataclass
class FitResult:
    model: nn.Module        # trained, unwrapped (never the DDP wrapper), in eval mode
    epochs_done: float
    steps: int              # optimiser steps run, earlier (resumed-from) sessions included
    seconds: float          # training time in total, earlier sessions included
    psnr: float             # mean PSNR over the frames of the last (possibly partial) epoch
    stopped_early: bool     # the time budget ended training before the last epoch
    history: list[dict]     # one entry per completed epoch: epoch, step, loss, psnr, lr, seconds
    checkpoint: Path | None = None
    planned_steps: int = 0  # epochs * steps per epoch: what the fit would run without a time budget
    lr_factor: float = math.nan   # schedule factor of the last step (near 0 once the schedule has run)
    schedule_done: float = 0.0    # fraction of the warm-up + cosine schedule covered; 1.0 = complete

    def summary(self) -> dict[str, Any]:
        """The numbers a build report shows about its fit."""
        return {"steps": self.steps, "planned_steps": self.planned_steps, "epochs": self.epochs_done,
                "stopped_early": self.stopped_early, "train_seconds": round(self.seconds, 1),
                "fit_psnr": self.psnr, "final_lr_factor": self.lr_factor, "schedule_done": self.schedule_done}
