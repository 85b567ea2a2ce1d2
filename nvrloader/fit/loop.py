"""The one training loop every neural codec (D-NeRV, NeRV, E-NeRV, HNeRV, SNeRV) is fitted with.

A codec supplies a model, a dataset of dict items, and a `forward(model, batch) -> FitOutput`; this
module owns the rest: the papers' warm-up + cosine schedule (over the planned steps, or over the
time budget when one is set), the loss presets, mixed precision on CUDA, DDP under torchrun, a
progress bar, and checkpoints that a `resume=True` run continues from exactly (same weights, bit
for bit on CPU, as if never stopped).

Exact resume rests on three things: the data order of an epoch is a function of (seed, epoch) only
(`epoch_batches`); the loop state (optimiser, scaler, RNGs, counters, epoch statistics) is saved
only between two parameter updates, never in the middle of one; and a resumed epoch skips the
batches it already did without loading them.

Under torchrun each process sees `batch_size` items per step, so the effective batch is
`batch_size * world_size` (the learning rate is not rescaled).
"""
from __future__ import annotations

import contextlib
import math
import warnings
from time import monotonic
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm.auto import tqdm

from nvrloader.distributed import barrier
from nvrloader.fit.checkpoints import (CHECKPOINT_NAME, Progress, Trainer, load_fit_checkpoint,
                                       save_fit_checkpoint, seed_everything)
from nvrloader.fit.config import FitConfig, FitResult
from nvrloader.fit.losses import FitOutput, fit_loss, psnr_sum
from nvrloader.fit.interrupt import InterruptGuard
from nvrloader.fit.qat import FakeQuant
from nvrloader.fit.schedule import Schedule
from nvrloader.training import (OptimizerConfig, Runtime, apply_gradients, autocast, autocast_dtype, grad_scaler,
                                make_optimizer, plain, setup_runtime, wrap_ddp)


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


def _make_trainer(model: nn.Module, config: FitConfig, total_steps: int,
                  amp_dtype: torch.dtype | None, device: torch.device) -> Trainer:
    optimizer = make_optimizer(model.parameters(), OptimizerConfig(
        config.optimizer, config.lr, config.weight_decay, config.betas))
    schedule = Schedule(optimizer, total_steps, config.warmup, config.warmup_start, config.time_budget)
    return Trainer(model, optimizer, schedule, grad_scaler(device, amp_dtype), Progress())


def fit(model: nn.Module, dataset: Dataset, forward: Callable[[nn.Module, dict], FitOutput],
        config: FitConfig, device: torch.device, fingerprint: dict, fake_quant: FakeQuant | None = None
        ) -> FitResult:
    """Train `model` on `dataset`; `forward(model, batch)` gets the batch already on `device`.

    Under torchrun the process group is joined here if the caller has not done so, the model is
    wrapped in DDP (forward receives the wrapper: call it, or use its `.module` for anything else)
    and a CUDA device without an index becomes this process's local GPU. Only rank 0 writes
    checkpoints and shows the bar; every rank returns the same weights.

    A fresh fit seeds torch, numpy and random with `config.seed`; `resume=True` continues from
    `checkpoint_dir/fit.pt` (a fresh start, with a warning, when there is none) after checking
    that `fingerprint` and the optimisation settings are the ones it was made with. Without
    resume an existing checkpoint is overwritten by the first save.

    With ``fake_quant`` every forward and backward pass sees the weights as an archive stores them
    (quantisation-aware fitting, `nvrloader.fit.qat`); the optimiser updates the float weights.
    """
    runtime = setup_runtime(device)
    device, rank, world = runtime.device, runtime.rank, runtime.world
    num_items = len(dataset)
    if num_items == 0:
        raise ValueError("fit: the dataset is empty, there is nothing to train on")
    if config.resume and config.checkpoint_dir is None:
        raise ValueError("fit: resume=True needs a checkpoint_dir to resume from")
    steps_per_epoch = len(epoch_batches(num_items, config.batch_size, 0, config.seed, rank, world))
    total_steps = config.epochs * steps_per_epoch
    fingerprint = plain(fingerprint)
    ckpt = config.checkpoint_dir / CHECKPOINT_NAME if config.checkpoint_dir is not None else None

    model.to(device)
    amp_dtype = autocast_dtype(config.amp, device, config.amp_dtype)
    trainer = _make_trainer(model, config, total_steps, amp_dtype, device)
    if config.resume and ckpt.exists():
        load_fit_checkpoint(ckpt, trainer, fingerprint, config, world)
    else:
        if config.resume and runtime.main:
            warnings.warn(f"no checkpoint at {ckpt}: starting the fit from scratch", stacklevel=2)
        seed_everything(config.seed)
    progress = trainer.progress
    net = wrap_ddp(model, runtime, config.find_unused_parameters)

    def save() -> None:
        if ckpt is not None and runtime.main:
            save_fit_checkpoint(ckpt, trainer, fingerprint, config, world)

    session_start = last_save = monotonic()
    seconds_before = progress.seconds

    def clock() -> float:
        return seconds_before + monotonic() - session_start

    # a resumed fit whose budget is already spent does no step at all
    stopped_early = (config.time_budget is not None and progress.global_step > 0
                     and progress.seconds >= config.time_budget and progress.epoch < config.epochs)
    bar = tqdm(total=total_steps, initial=progress.global_step, desc="fit", unit="step",
               dynamic_ncols=True, disable=not (config.progress and runtime.main))
    net.train()
    try:
        with InterruptGuard() as guard:
            while progress.epoch < config.epochs and not stopped_early:
                batches = epoch_batches(num_items, config.batch_size, progress.epoch, config.seed, rank, world)
                loader = DataLoader(dataset, batch_sampler=batches[progress.step_in_epoch:],
                                    num_workers=config.num_workers, pin_memory=device.type == "cuda",
                                    generator=torch.Generator().manual_seed(config.seed + progress.epoch))
                for batch in loader:
                    trainer.schedule.apply(progress.global_step, progress.seconds)
                    lr = trainer.optimizer.param_groups[0]["lr"]
                    with _oom_hint(config.batch_size):
                        step = _forward_backward(net, forward, _to_device(batch, device), trainer, config,
                                                 runtime, amp_dtype, clock, fake_quant)
                        if not math.isfinite(step["loss"]):
                            raise FloatingPointError(
                                f"the training loss became {step['loss']} at step {progress.global_step + 1} "
                                f"(epoch {progress.epoch + 1}); lower the learning rate or turn off AMP")
                        shown_epoch = f"{progress.epoch + 1}/{config.epochs}"
                        with guard.update():
                            apply_gradients(trainer.optimizer, trainer.scaler, model.parameters(), config.grad_clip)
                            progress.advance(step["loss"], step["psnr_sum"], step["frames"], lr, clock(),
                                             steps_per_epoch)
                    bar.update(1)
                    bar.set_postfix(epoch=shown_epoch,
                                    loss=f"{step['loss']:.4f}", psnr=f"{step['psnr_sum'] / step['frames']:.2f}",
                                    lr=f"{lr:.2e}")
                    if step["over_budget"] and progress.epoch < config.epochs:
                        stopped_early = True
                        break
                    if monotonic() - last_save >= config.checkpoint_every:
                        save()
                        last_save = monotonic()
    except KeyboardInterrupt:
        save()  # the state is that of the last completed step (see InterruptGuard)
        raise
    finally:
        bar.close()
    save()
    barrier()
    model.eval()
    return FitResult(model=model, epochs_done=progress.epoch + progress.step_in_epoch / steps_per_epoch,
                     steps=progress.global_step, seconds=progress.seconds, psnr=progress.psnr(),
                     stopped_early=stopped_early, history=list(progress.history), checkpoint=ckpt,
                     planned_steps=total_steps, lr_factor=trainer.schedule.factor,
                     schedule_done=trainer.schedule.done(progress.global_step, progress.seconds))


@contextlib.contextmanager
def _oom_hint(batch_size: int) -> Iterator[None]:
    """Out of GPU memory is a setting to change, not a crash to debug: say which one."""
    try:
        yield
    except torch.cuda.OutOfMemoryError as e:
        raise RuntimeError(f"CUDA out of memory at batch size {batch_size}: try --batch-size "
                           f"{max(1, batch_size // 2)}") from e


def _forward_backward(net: nn.Module, forward: Callable[[nn.Module, dict], FitOutput], batch: dict,
                      trainer: Trainer, config: FitConfig, runtime: Runtime, amp_dtype: torch.dtype | None,
                      clock: Callable[[], float], fake_quant: FakeQuant | None = None) -> dict[str, Any]:
    """Gradients of one batch, and its statistics summed over all processes.

    The all-reduce also carries the time-budget verdict (taken once the gradients are in, so the
    step that crosses the budget is the last), and every process stops after the same step.
    """
    trainer.optimizer.zero_grad(set_to_none=True)
    with fake_quant.applied() if fake_quant is not None else contextlib.nullcontext():
        with autocast(runtime.device, amp_dtype):
            output = forward(net, batch)
        if not isinstance(output, FitOutput):
            raise TypeError(f"the forward function must return a FitOutput, got {type(output).__name__}")
        loss = fit_loss(output, config.loss)
        frame_psnr, frames = psnr_sum(output)
        trainer.scaler.scale(loss).backward()
    over = config.time_budget is not None and clock() >= config.time_budget
    extra = torch.tensor([float(frames), float(over)], dtype=torch.float64, device=loss.device)
    stats = torch.cat([loss.detach().double().reshape(1), frame_psnr.double().reshape(1), extra])
    if runtime.distributed:
        dist.all_reduce(stats)
    loss_sum, psnr_total, frame_total, over_count = stats.tolist()
    return {"loss": loss_sum / runtime.world, "psnr_sum": psnr_total, "frames": frame_total,
            "over_budget": over_count > 0}
