"""The fit loop's checkpoint: its whole state between two updates, and the check before resuming.

A checkpoint holds the weights, optimiser, schedule, gradient scaler, progress counters, every RNG
and the identity of the fit (the codec's fingerprint, the experiment fields of FitConfig and the
number of processes). Resuming refuses a checkpoint whose identity differs from the live one.
"""
from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nvrloader.fit.config import FitConfig
from nvrloader.fit.schedule import Schedule
from nvrloader.training import differences, experiment, load_checkpoint, save_checkpoint

CHECKPOINT_NAME = "fit.pt"
CHECKPOINT_FORMAT = "nvrloader.fit"
CHECKPOINT_VERSION = 2   # 2: the schedule is recomputed from (step, seconds); FitConfig.warmup_start


@dataclass
class Progress:
    """Where the fit is; saved in checkpoints (plain numbers and lists only)."""
    epoch: int = 0              # current epoch, 0-based
    step_in_epoch: int = 0      # optimiser steps done in it
    global_step: int = 0
    seconds: float = 0.0        # training time so far, earlier sessions included
    loss_sum: float = 0.0       # statistics of the current epoch
    psnr_sum: float = 0.0
    frames: float = 0.0
    last_psnr: float = math.nan  # mean PSNR of the last completed epoch
    history: list[dict] = field(default_factory=list)

    def advance(self, loss: float, psnr_sum: float, frames: float, lr: float, seconds: float,
                steps_per_epoch: int) -> None:
        self.global_step += 1
        self.step_in_epoch += 1
        self.seconds = seconds
        self.loss_sum += loss
        self.psnr_sum += psnr_sum
        self.frames += frames
        if self.step_in_epoch == steps_per_epoch:
            self.last_psnr = self.psnr_sum / self.frames
            self.history.append({"epoch": self.epoch + 1, "step": self.global_step,
                                 "loss": self.loss_sum / steps_per_epoch, "psnr": self.last_psnr,
                                 "lr": lr, "seconds": seconds})
            self.epoch += 1
            self.step_in_epoch = 0
            self.loss_sum = self.psnr_sum = self.frames = 0.0

    def psnr(self) -> float:
        return self.psnr_sum / self.frames if self.frames else self.last_psnr


@dataclass
class Trainer:
    """The objects a checkpoint captures."""
    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    scaler: torch.amp.GradScaler
    progress: Progress


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def identity(fingerprint: dict, fit_fields: dict[str, Any], world_size: int) -> dict[str, Any]:
    """Everything a checkpoint must agree with to be resumed, as dotted keys."""
    fit_keys = {f"fit.{k}": v for k, v in fit_fields.items()} | {"fit.world_size": world_size}
    return _flatten(fingerprint) | fit_keys


def _rng_state() -> dict[str, Any]:
    """Every RNG the loop or a model might use, as tensors and lists (weights_only-loadable)."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    npy = state["numpy"]
    np.random.set_state(("MT19937", npy["keys"].numpy().astype(np.uint32), npy["pos"],
                         npy["has_gauss"], npy["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss_next"]))


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def save_fit_checkpoint(path: Path, trainer: Trainer, fingerprint: dict, config: FitConfig,
                        world_size: int) -> None:
    """Write the loop state atomically."""
    save_checkpoint(path, {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
        "model": trainer.model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.schedule.state_dict(),
        "scaler": trainer.scaler.state_dict(),
        **asdict(trainer.progress),
        "rng": _rng_state(),
        "fingerprint": fingerprint,
        "config": {k: str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v
                   for k, v in asdict(config).items()},
        "world_size": world_size,
    })


def load_fit_checkpoint(path: Path, trainer: Trainer, fingerprint: dict, config: FitConfig,
                        world_size: int) -> None:
    """Restore the loop state from `path`, refusing a checkpoint made for anything else."""
    state = load_checkpoint(path)
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a fit checkpoint of nvrloader")
    if state.get("version", 0) != CHECKPOINT_VERSION:
        raise ValueError(f"checkpoint at {path} has version {state.get('version', 0)}; this nvrloader resumes "
                         f"version {CHECKPOINT_VERSION} only; delete it or run without resume")
    saved = identity(state["fingerprint"], experiment(config, state["config"]), state["world_size"])
    live = identity(fingerprint, experiment(config), world_size)
    diffs = differences(saved, live)
    if diffs:
        listed = "; ".join(f"{key} {json.dumps(a)} != {json.dumps(b)}" for key, a, b in diffs)
        raise ValueError(f"checkpoint at {path} was made for a different build: {listed} "
                         "(checkpoint != this run); delete it or run without resume to start over")
    try:
        trainer.model.load_state_dict(state["model"])
        trainer.optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as e:
        raise ValueError(f"checkpoint at {path} does not fit this model: {e}") from e
    trainer.schedule.load_state_dict(state["scheduler"])
    if state["scaler"] and trainer.scaler.is_enabled():
        trainer.scaler.load_state_dict(state["scaler"])
    trainer.progress = Progress(**{f.name: state[f.name] for f in fields(Progress)})
    _set_rng_state(state["rng"])
