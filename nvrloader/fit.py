"""The one training loop every neural codec (D-NeRV, NeRV, E-NeRV, HNeRV, SNeRV) is fitted with.

A codec supplies a model, a dataset of dict items, and a `forward(model, batch) -> FitOutput`; this
module owns everything else: optimiser and the papers' warm-up + cosine schedule, the loss presets,
mixed precision on CUDA, DDP under torchrun, a progress bar, a time budget, and checkpoints that a
`resume=True` run continues from exactly (same weights, bit for bit on CPU, as if never stopped).

Exact resume rests on three things: the data order of an epoch is a function of (seed, epoch) only
(`epoch_batches`); the loop state (optimiser, scheduler, scaler, RNGs, epoch statistics) is saved
only between two parameter updates, never in the middle of one; and a resumed epoch skips the
batches it already did without loading them.

Under torchrun each process sees `batch_size` items per step, so the effective batch is
`batch_size * world_size` (the learning rate is not rescaled).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import random
import signal
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from pytorch_msssim import ssim
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm.auto import tqdm

from nvrloader.distributed import barrier, init_distributed

CHECKPOINT_NAME = "fit.pt"
CHECKPOINT_FORMAT = "nvrloader.fit"
CHECKPOINT_VERSION = 1

# (distortion, its weight, weight of 1 - SSIM) for each loss preset
LOSSES: dict[str, tuple[str, float, float]] = {
    "l1_ssim": ("l1", 0.7, 0.3),    # NeRV, E-NeRV, HNeRV, SNeRV; D-NeRV on UVG
    "mse_ssim": ("mse", 1.0, 0.03),  # D-NeRV on UCF101
    "mse": ("mse", 1.0, 0.0),
    "l1": ("l1", 1.0, 0.0),
}
OPTIMIZERS = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

# config fields that shape the optimisation path: a resumed fit must not change them
RESUME_KEYS = ("epochs", "batch_size", "lr", "optimizer", "betas", "weight_decay", "warmup", "loss",
               "seed", "grad_clip")


@dataclass
class FitConfig:
    epochs: int = 100
    batch_size: int = 8                 # per process; effective batch = batch_size * world_size
    lr: float = 5e-4
    optimizer: str = "adamw"            # "adamw" | "adam"
    betas: tuple[float, float] = (0.9, 0.999)   # E-NeRV uses (0.5, 0.999)
    weight_decay: float = 0.0
    warmup: float = 0.2                 # fraction of all steps: linear warm-up, then cosine to 0
    loss: str = "l1_ssim"               # a key of LOSSES
    amp: bool = True                    # only ever active on CUDA; ignored on CPU
    amp_dtype: str = "auto"             # "auto" (bf16 where supported, else fp16) | "bf16" | "fp16"
    time_budget: float | None = None    # seconds of training in total (across resumes)
    checkpoint_dir: Path | None = None
    checkpoint_every: float = 600.0     # seconds between checkpoints (plus one at stop and at the end)
    resume: bool = False
    seed: int = 0
    num_workers: int = 0
    progress: bool = True
    grad_clip: float | None = None
    find_unused_parameters: bool = False  # DDP: set when some parameters get no gradient

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {sorted(OPTIMIZERS)}, got {self.optimizer!r}"),
            (0.0 <= self.warmup <= 1.0, f"warmup is a fraction of the steps in [0, 1], got {self.warmup}"),
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
class FitOutput:
    """What a codec's forward function returns for one batch."""
    pred: torch.Tensor                  # [B, T, 3, H, W] in [0, 1]
    target: torch.Tensor                # same shape
    mask: torch.Tensor | None = None    # [B, T] bool: the frames that count (padding excluded)
    aux: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)  # more (pred, target) pairs


@dataclass
class FitResult:
    model: nn.Module        # trained, unwrapped (never the DDP wrapper), in eval mode
    epochs_done: float
    steps: int
    seconds: float          # training time in total, earlier (resumed-from) sessions included
    psnr: float             # mean PSNR over the frames of the last (possibly partial) epoch
    stopped_early: bool     # the time budget ended training before the last epoch
    history: list[dict]     # one entry per completed epoch: epoch, step, loss, psnr, lr, seconds
    checkpoint: Path | None = None


# ----------------------------------------------------------------------------- schedule and loss

def lr_factor(step: int, total_steps: int, warmup: float) -> float:
    """Learning-rate multiplier of optimiser step `step` (0-based), as in the NeRV family's code.

    Linear warm-up over the first round(warmup * total_steps) steps (reaching 1 at the last of
    them), then a half cosine that would reach 0 at step `total_steps`.
    """
    warm = round(warmup * total_steps)
    if step < warm:
        return (step + 1) / warm
    rest = total_steps - warm
    if rest <= 0:
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * (step - warm) / rest))


def ssim_window(height: int, width: int) -> int:
    """SSIM's Gaussian window: 11 px, shrunk to the largest odd size that fits smaller frames."""
    win = min(11, height, width)
    return win if win % 2 else win - 1


def pair_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "l1_ssim") -> torch.Tensor:
    """One loss preset over every frame of `pred`/`target` ([..., C, H, W], values in [0, 1])."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    distortion, weight, ssim_weight = LOSSES[kind]
    pred = pred.float().reshape(-1, *pred.shape[-3:])
    target = target.float().reshape(-1, *target.shape[-3:])
    loss = weight * (F.l1_loss(pred, target) if distortion == "l1" else F.mse_loss(pred, target))
    if ssim_weight:
        similarity = ssim(pred, target, data_range=1.0, win_size=ssim_window(*pred.shape[-2:]))
        loss = loss + ssim_weight * (1.0 - similarity)
    return loss


def _masked(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The frames of x that count; the mask applies to every tensor whose leading dims are [B, T]."""
    if mask is not None and x.dim() >= 2 and x.shape[:2] == mask.shape:
        return x[mask]
    return x


def fit_loss(output: FitOutput, kind: str = "l1_ssim") -> torch.Tensor:
    """The training loss of a batch: the preset on (pred, target) plus the same on each aux pair."""
    mask = output.mask
    if mask is not None:
        mask = mask.bool()
        if output.pred.shape[:2] != mask.shape:
            raise ValueError(f"the mask {tuple(mask.shape)} must be [B, T] of the prediction {tuple(output.pred.shape)}")
    pairs = [(output.pred, output.target), *output.aux]
    return sum(pair_loss(_masked(p, mask), _masked(t, mask), kind) for p, t in pairs)


def _psnr_sum(output: FitOutput) -> tuple[torch.Tensor, int]:
    """Sum of per-frame PSNR (dB) over the frames that count, and how many there are."""
    mask = output.mask.bool() if output.mask is not None else None
    with torch.no_grad():
        pred = _masked(output.pred, mask).detach().float().clamp(0, 1)
        target = _masked(output.target, mask).float()
        mse = (pred - target).pow(2).reshape(-1, int(np.prod(pred.shape[-3:]))).mean(dim=1)
        return (-10.0 * torch.log10(mse.clamp_min(1e-10))).sum(), mse.numel()


# ----------------------------------------------------------------------------- data order

def epoch_batches(num_items: int, batch_size: int, epoch: int, seed: int,
                  rank: int = 0, world_size: int = 1) -> list[list[int]]:
    """The dataset indices of every batch one process trains on in `epoch`.

    A function of (seed, epoch) only, which is what makes a resumed epoch identical to the
    interrupted one. Under DDP each process takes every world_size-th index of one shared
    permutation (DistributedSampler, padded so every process has as many batches), so batch j of
    all processes together is batch j of a single process with batch_size * world_size.
    """
    sampler = DistributedSampler(range(num_items), num_replicas=world_size, rank=rank,
                                 shuffle=True, seed=seed, drop_last=False)
    sampler.set_epoch(epoch)
    order = list(sampler)
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def _to_device(batch: Any, device: torch.device) -> dict[str, Any]:
    if not isinstance(batch, dict):
        raise TypeError(f"fit expects dataset items that are dicts of tensors, got {type(batch).__name__}")
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DDP wrapper (forward functions needing e.g. `model.encode` use this)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


# ----------------------------------------------------------------------------- loop state

@dataclass
class _Progress:
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


class _InterruptGuard:
    """Turns SIGINT and SIGTERM into KeyboardInterrupt, but never in the middle of an update.

    Inside `update()` a signal is held back until the parameters, optimiser and counters are all
    consistent again, so the checkpoint written on the way out is a state the loop really passed.
    Handlers can only be installed from the main thread; elsewhere signals keep their defaults.
    """

    def __init__(self) -> None:
        self._updating = False
        self._pending: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _InterruptGuard:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()

    def _handle(self, signum: int, frame: object) -> None:
        if self._updating:
            self._pending = signum
            return
        raise KeyboardInterrupt(f"training stopped by {signal.Signals(signum).name}")

    @contextlib.contextmanager
    def update(self) -> Iterator[None]:
        self._updating = True
        try:
            yield
        finally:
            self._updating = False
        if self._pending is not None:
            signum, self._pending = self._pending, None
            raise KeyboardInterrupt(f"training stopped by {signal.Signals(signum).name}")


# ----------------------------------------------------------------------------- checkpoints

def _config_dict(config: FitConfig) -> dict[str, Any]:
    """The config as plain data (loadable with weights_only=True)."""
    plain = asdict(config)
    return {k: str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v
            for k, v in plain.items()}


def _canonical(fingerprint: dict) -> dict:
    """JSON round trip: tuples become lists, paths strings, so saved and live fingerprints compare."""
    return json.loads(json.dumps(fingerprint, sort_keys=True, default=str))


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _identity(fingerprint: dict, config: dict[str, Any], world_size: int) -> dict[str, Any]:
    """Everything a checkpoint must agree with to be resumed, as dotted keys."""
    fit_keys = {f"fit.{k}": config[k] for k in RESUME_KEYS} | {"fit.world_size": world_size}
    return _flatten(fingerprint) | _canonical(fit_keys)


def _differences(saved: dict[str, Any], live: dict[str, Any]) -> list[str]:
    missing = "<missing>"
    return [f"{key} {json.dumps(saved.get(key, missing))} != {json.dumps(live.get(key, missing))}"
            for key in sorted(saved.keys() | live.keys()) if saved.get(key, missing) != live.get(key, missing)]


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


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


@dataclass
class _Trainer:
    """The objects a checkpoint captures."""
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: LambdaLR
    scaler: torch.amp.GradScaler
    progress: _Progress


def _save_checkpoint(path: Path, trainer: _Trainer, fingerprint: dict, config: FitConfig,
                    world_size: int) -> None:
    """Write the loop state atomically (temporary file, then rename)."""
    state = {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
        "model": trainer.model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict(),
        "scaler": trainer.scaler.state_dict(),
        **asdict(trainer.progress),
        "rng": _rng_state(),
        "fingerprint": fingerprint,
        "config": _config_dict(config),
        "world_size": world_size,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _load_checkpoint(path: Path, trainer: _Trainer, fingerprint: dict, config: FitConfig,
                     world_size: int) -> None:
    """Restore the loop state from `path`, refusing a checkpoint made for anything else."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for damaged or foreign files
        raise ValueError(f"checkpoint at {path} cannot be read ({e}); delete it or run without resume") from e
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a fit checkpoint of nvrloader")
    if state.get("version", 0) > CHECKPOINT_VERSION:
        raise ValueError(f"checkpoint at {path} has version {state['version']}; this nvrloader reads "
                         f"up to {CHECKPOINT_VERSION}")
    saved = _identity(state["fingerprint"], state["config"], state["world_size"])
    live = _identity(fingerprint, _config_dict(config), world_size)
    diffs = _differences(saved, live)
    if diffs:
        raise ValueError(f"checkpoint at {path} was made for a different build: {'; '.join(diffs)} "
                         "(checkpoint != this run); delete it or run without resume to start over")
    try:
        trainer.model.load_state_dict(state["model"])
        trainer.optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as e:
        raise ValueError(f"checkpoint at {path} does not fit this model: {e}") from e
    trainer.scheduler.load_state_dict(state["scheduler"])
    if state["scaler"] and trainer.scaler.is_enabled():
        trainer.scaler.load_state_dict(state["scaler"])
    trainer.progress = _Progress(**{f.name: state[f.name] for f in fields(_Progress)})
    _set_rng_state(state["rng"])


# ----------------------------------------------------------------------------- the loop

def _autocast_dtype(config: FitConfig, device: torch.device) -> torch.dtype | None:
    if not config.amp or device.type != "cuda":
        return None
    if config.amp_dtype == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return AMP_DTYPES[config.amp_dtype]


def _make_trainer(model: nn.Module, config: FitConfig, total_steps: int,
                  amp_dtype: torch.dtype | None) -> _Trainer:
    optimizer = OPTIMIZERS[config.optimizer](model.parameters(), lr=config.lr, betas=config.betas,
                                             weight_decay=config.weight_decay)

    def schedule(step: int) -> float:
        return lr_factor(step, total_steps, config.warmup)

    scheduler = LambdaLR(optimizer, schedule)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype is torch.float16)
    return _Trainer(model, optimizer, scheduler, scaler, _Progress())


def fit(model: nn.Module, dataset: Dataset, forward: Callable[[nn.Module, dict], FitOutput],
        config: FitConfig, device: torch.device, fingerprint: dict) -> FitResult:
    """Train `model` on `dataset`; `forward(model, batch)` gets the batch already on `device`.

    Under torchrun the process group is joined here if the caller has not done so, the model is
    wrapped in DDP (forward receives the wrapper: call it, or `unwrap` it for anything else) and
    a CUDA device without an index becomes this process's local GPU. Only rank 0 writes
    checkpoints and shows the bar; every rank returns the same weights.

    A fresh fit seeds torch, numpy and random with `config.seed`; `resume=True` continues from
    `checkpoint_dir/fit.pt` (a fresh start, with a warning, when there is none) after checking
    that `fingerprint` and the optimisation settings are the ones it was made with. Without
    resume an existing checkpoint is overwritten by the first save.
    """
    rank, world, local_rank = init_distributed()
    if device.type == "cuda" and device.index is None and world > 1:
        device = torch.device("cuda", local_rank)
    num_items = len(dataset)
    if num_items == 0:
        raise ValueError("fit: the dataset is empty, there is nothing to train on")
    if config.resume and config.checkpoint_dir is None:
        raise ValueError("fit: resume=True needs a checkpoint_dir to resume from")
    steps_per_epoch = len(epoch_batches(num_items, config.batch_size, 0, config.seed, rank, world))
    total_steps = config.epochs * steps_per_epoch
    fingerprint = _canonical(fingerprint)
    ckpt = config.checkpoint_dir / CHECKPOINT_NAME if config.checkpoint_dir is not None else None
    main = rank == 0

    model.to(device)
    amp_dtype = _autocast_dtype(config, device)
    trainer = _make_trainer(model, config, total_steps, amp_dtype)
    if config.resume and ckpt.exists():
        _load_checkpoint(ckpt, trainer, fingerprint, config, world)
    else:
        if config.resume and main:
            warnings.warn(f"no checkpoint at {ckpt}: starting the fit from scratch", stacklevel=2)
        _seed_everything(config.seed)
    progress = trainer.progress
    net = model
    if world > 1:
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                      find_unused_parameters=config.find_unused_parameters)

    def save() -> None:
        if ckpt is not None and main:
            _save_checkpoint(ckpt, trainer, fingerprint, config, world)

    session_start = last_save = time.monotonic()
    seconds_before = progress.seconds

    def clock() -> float:
        return seconds_before + time.monotonic() - session_start

    # a resumed fit whose budget is already spent does no step at all
    stopped_early = (config.time_budget is not None and progress.global_step > 0
                     and progress.seconds >= config.time_budget and progress.epoch < config.epochs)
    bar = tqdm(total=total_steps, initial=progress.global_step, desc="fit", unit="step",
               dynamic_ncols=True, disable=not (config.progress and main))
    net.train()
    try:
        with _InterruptGuard() as guard:
            while progress.epoch < config.epochs and not stopped_early:
                batches = epoch_batches(num_items, config.batch_size, progress.epoch, config.seed, rank, world)
                loader = DataLoader(dataset, batch_sampler=batches[progress.step_in_epoch:],
                                    num_workers=config.num_workers, pin_memory=device.type == "cuda",
                                    generator=torch.Generator().manual_seed(config.seed + progress.epoch))
                for batch in loader:
                    with _oom_hint(config.batch_size):
                        step = _forward_backward(net, forward, _to_device(batch, device), trainer, config,
                                                 amp_dtype, world, clock)
                        if not math.isfinite(step["loss"]):
                            raise FloatingPointError(
                                f"the training loss became {step['loss']} at step {progress.global_step + 1} "
                                f"(epoch {progress.epoch + 1}); lower the learning rate or turn off AMP")
                        lr = trainer.optimizer.param_groups[0]["lr"]
                        shown_epoch = f"{progress.epoch + 1}/{config.epochs}"
                        with guard.update():
                            _update(trainer, config, model)
                            progress.advance(step["loss"], step["psnr_sum"], step["frames"], lr, clock(),
                                             steps_per_epoch)
                    bar.update(1)
                    bar.set_postfix(epoch=shown_epoch,
                                    loss=f"{step['loss']:.4f}", psnr=f"{step['psnr_sum'] / step['frames']:.2f}",
                                    lr=f"{lr:.2e}")
                    if step["over_budget"] and progress.epoch < config.epochs:
                        stopped_early = True
                        break
                    if time.monotonic() - last_save >= config.checkpoint_every:
                        save()
                        last_save = time.monotonic()
    except KeyboardInterrupt:
        save()  # the state is that of the last completed step (see _InterruptGuard)
        raise
    finally:
        bar.close()
    save()
    barrier()
    model.eval()
    return FitResult(model=model, epochs_done=progress.epoch + progress.step_in_epoch / steps_per_epoch,
                     steps=progress.global_step, seconds=progress.seconds, psnr=progress.psnr(),
                     stopped_early=stopped_early, history=list(progress.history), checkpoint=ckpt)


@contextlib.contextmanager
def _oom_hint(batch_size: int) -> Iterator[None]:
    """Out of GPU memory is a setting to change, not a crash to debug: say which one."""
    try:
        yield
    except torch.cuda.OutOfMemoryError as e:
        raise RuntimeError(f"CUDA out of memory at batch size {batch_size}: try --batch-size "
                           f"{max(1, batch_size // 2)}") from e


def _forward_backward(net: nn.Module, forward: Callable[[nn.Module, dict], FitOutput], batch: dict,
                      trainer: _Trainer, config: FitConfig, amp_dtype: torch.dtype | None, world: int,
                      clock: Callable[[], float]) -> dict[str, Any]:
    """Gradients of one batch, and its statistics summed over all processes.

    The all-reduce also carries the time-budget verdict (taken once the gradients are in, so the
    step that crosses the budget is the last), and every process stops after the same step.
    """
    trainer.optimizer.zero_grad(set_to_none=True)
    autocast = torch.autocast("cuda", dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()
    with autocast:
        output = forward(net, batch)
    if not isinstance(output, FitOutput):
        raise TypeError(f"the forward function must return a FitOutput, got {type(output).__name__}")
    loss = fit_loss(output, config.loss)
    psnr_sum, frames = _psnr_sum(output)
    trainer.scaler.scale(loss).backward()
    over = config.time_budget is not None and clock() >= config.time_budget
    extra = torch.tensor([float(frames), float(over)], dtype=torch.float64, device=loss.device)
    stats = torch.cat([loss.detach().double().reshape(1), psnr_sum.double().reshape(1), extra])
    if world > 1:
        dist.all_reduce(stats)
    loss_sum, psnr_total, frame_total, over_count = stats.tolist()
    return {"loss": loss_sum / world, "psnr_sum": psnr_total, "frames": frame_total,
            "over_budget": over_count > 0}


def _update(trainer: _Trainer, config: FitConfig, model: nn.Module) -> None:
    if config.grad_clip is not None:
        trainer.scaler.unscale_(trainer.optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    trainer.scaler.step(trainer.optimizer)
    trainer.scaler.update()
    trainer.scheduler.step()
