"""Train and evaluate TSM on archives: the epoch loop, scoring, checkpoints and the best-epoch pick.

Clips are decoded on the training device, augmented there as whole-batch tensor ops, and fed to the
model. Rank 0 writes `checkpoint.pt` (every epoch: the state --resume continues from), `best.pt`
(the weights of the best evaluated epoch), `metrics.json` and `confusion.png`. All randomness of an
epoch (clip order, TSN offsets, crops, flips, dropout) is seeded from (seed, epoch, rank), so a
resumed run continues exactly where an interrupted one would have been.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DistributedSampler
from tqdm import tqdm

from nvrloader.dataset import NVRDataset
from nvrloader.distributed import barrier
from nvrloader.training import (Runtime, apply_gradients, autocast, autocast_dtype, differences, experiment,
                                grad_scaler, make_optimizer as build_optimizer, save_checkpoint, setup_runtime,
                                wrap_ddp)
from nvrloader.training import load_checkpoint as read_checkpoint
from recognition.config import OPTIMIZERS, TrainConfig, recipe_warnings
from recognition.data import ClipSet, make_loader, open_data, per_rank_batch
from recognition.report import best_row, classification_report, scores, selection, write_outputs
from recognition.transforms import ClipTransform
from recognition.tsm import TSM, load_backbone

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"


def make_tsm(cfg: TrainConfig, num_classes: int) -> TSM:
    """TSM with NHWC weights, so every conv and pool runs channels-last: a training step of the
    synthetic recipe (resnet18 x0.25, 8 x 48 px frames, batch 8, one CPU thread) took 91 ms instead
    of 108 (the stem's max-pool alone 0.8 ms instead of 6.8); it is the faster layout on CUDA too."""
    model = TSM(num_classes, cfg.num_segments, cfg.backbone, cfg.shift_div, cfg.dropout, cfg.partial_bn,
                cfg.width_mult, cfg.fc_init_std)
    return model.to(memory_format=torch.channels_last)


def build_model(cfg: TrainConfig, num_classes: int) -> tuple[TSM, dict[str, list[str]] | None]:
    model = make_tsm(cfg, num_classes)
    if cfg.pretrained is None:
        return model, None
    missing, unexpected = load_backbone(model, cfg.pretrained)
    return model, {"missing": missing, "unexpected": unexpected}


def make_optimizer(cfg: TrainConfig, groups: list[dict]) -> torch.optim.Optimizer:
    """Each parameter group keeps its own lr and weight decay (TSM's policy) whichever optimiser runs it."""
    return build_optimizer(groups, cfg.optimizer_config(), choices=OPTIMIZERS)


def make_transform(cfg: TrainConfig) -> ClipTransform:
    """The run's augmentation (training) and test view (evaluation), with its normalisation."""
    return ClipTransform(cfg.input_size, flip=cfg.flip, colour_jitter=cfg.colour_jitter,
                         channel_shuffle=cfg.channel_shuffle, clip_norm=cfg.clip_norm)


def epoch_seed(cfg: TrainConfig, epoch: int, rank: int) -> int:
    """One seed per (run, epoch, process): what makes a resumed run identical to an uninterrupted one."""
    return (cfg.seed * 1_000_003 + epoch) * 1_009 + rank


def train_epoch(model: torch.nn.Module, loader: Any, transform: ClipTransform, optimizer: torch.optim.Optimizer,
                scaler: torch.amp.GradScaler, cfg: TrainConfig, runtime: Runtime, amp: torch.dtype | None,
                desc: str, show: bool) -> dict[str, float]:
    model.train()
    device = runtime.device
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss * n, correct, n
    params = [p for p in model.parameters() if p.requires_grad]
    bar = tqdm(loader, desc=desc, unit="batch", disable=not show, leave=False)
    for clips, labels in bar:
        labels = labels.to(device)
        x = transform(clips.to(device), train=True)
        with autocast(device, amp):
            logits = model(x)
            loss = F.cross_entropy(logits.float(), labels, label_smoothing=cfg.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        apply_gradients(optimizer, scaler, params, cfg.clip_grad)
        n = labels.numel()
        sums += torch.tensor([loss.item() * n, (logits.argmax(1) == labels).sum().item(), n],
                             dtype=torch.float64, device=device)
        bar.set_postfix(loss=f"{sums[0].item() / sums[2].item():.3f}")
    if runtime.distributed:
        torch.distributed.all_reduce(sums)
    return {"train_loss": sums[0].item() / max(sums[2].item(), 1),
            "train_top1": 100 * sums[1].item() / max(sums[2].item(), 1)}


@torch.no_grad()
def predict(model: torch.nn.Module, ds: ClipSet, transform: ClipTransform, batch_size: int, workers: int,
            runtime: Runtime, amp: torch.dtype | None, show: bool, desc: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels of every clip of `ds`, in its order; each process scores a disjoint share."""
    model.eval()
    mine = list(range(runtime.rank, len(ds), runtime.world))
    loader = make_loader(ds, batch_size, mine, workers, drop_last=False, device=runtime.device)
    logits = []
    for clips, _ in tqdm(loader, desc=desc, unit="batch", disable=not show, leave=False):
        with autocast(runtime.device, amp):
            logits.append(model(transform(clips.to(runtime.device), train=False)).float().cpu())
    out = torch.cat(logits) if logits else torch.empty(0, len(ds.classes))
    if runtime.distributed:
        shares: list[Any] = [None] * runtime.world
        torch.distributed.all_gather_object(shares, (mine, out))
        order = torch.tensor([i for idx, _ in shares for i in idx])
        out = torch.cat([s for _, s in shares])[order.argsort()]
    return out, torch.tensor(ds.labels)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    state = read_checkpoint(path)
    if not {"model", "config", "classes", "epoch"} <= state.keys():
        raise ValueError(f"{path}: not a train_tsm checkpoint (needs model, config, classes, epoch)")
    return state


def check_resumable(cfg: TrainConfig, saved: dict[str, Any], path: str) -> None:
    """A resumed run must be the same experiment: only runtime fields may differ."""
    diffs = differences(experiment(cfg, saved), experiment(cfg))
    if diffs:
        raise ValueError(f"{path}: cannot resume a different experiment; "
                         + "; ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, a, b in diffs))


def _weights(state: dict[str, Any], cfg: TrainConfig, classes: list[str], epoch: int,
             history: list[dict[str, Any]]) -> dict[str, Any]:
    return {"model": state, "config": dataclasses.asdict(cfg), "classes": classes, "epoch": epoch,
            "history": history}


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train on cfg.train_data, test on cfg.test_data; returns (and on rank 0 writes) the metrics.

    Every `eval_every` epochs (and after the last) the model is scored on the validation split when
    there is one, else on the test split; the best of those epochs is kept in best.pt. The report
    gives the last epoch's and the best epoch's test top-1 and says where the best was picked.
    """
    runtime = setup_runtime(cfg.device)
    device, rank, world = runtime.device, runtime.rank, runtime.world
    amp = autocast_dtype(cfg.amp, device)
    show = cfg.progress and runtime.main
    out_dir = Path(cfg.output_dir)
    data = open_data(cfg, device)
    classes = data.classes
    if cfg.input_size is None:
        meta = data.train.base.meta
        cfg = dataclasses.replace(cfg, input_size=min(int(meta["height"]), int(meta["width"])))
    warnings = recipe_warnings(cfg) + data.notes
    if runtime.main:
        for text in warnings:
            print(f"\n{'!' * 80}\nWARNING: {text}\n{'!' * 80}\n", file=sys.stderr, flush=True)
    resume = load_checkpoint(cfg.resume) if cfg.resume else None
    if resume is not None:
        check_resumable(cfg, resume["config"], cfg.resume)
    torch.manual_seed(cfg.seed)
    model, loaded = build_model(cfg, len(classes))
    model.to(device)
    optimizer = make_optimizer(cfg, model.param_groups(cfg.lr, cfg.weight_decay, cfg.fc_lr_mult))
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(cfg.lr_steps), gamma=0.1)
    scaler = grad_scaler(device, amp)
    start, history = 0, []
    if resume is not None:
        for name, part in (("model", model), ("optimizer", optimizer), ("scheduler", scheduler), ("scaler", scaler)):
            part.load_state_dict(resume[name])
        start, history = int(resume["epoch"]), list(resume["history"])
    net = wrap_ddp(model, runtime)
    transform = make_transform(cfg)
    batch = per_rank_batch(cfg, world)
    sampler = DistributedSampler(data.train, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed)
    # TSM drops the last partial batch; a set smaller than one batch keeps it so training still happens
    loader = make_loader(data.train, batch, sampler, cfg.workers, drop_last=len(sampler) > batch, device=device)
    if runtime.main:
        out_dir.mkdir(parents=True, exist_ok=True)
        if loaded and (loaded["missing"] or loaded["unexpected"]):
            print(f"{cfg.pretrained}: missing {loaded['missing']}, unexpected {loaded['unexpected']}", file=sys.stderr)
    pick = "val" if data.val is not None else "test"
    picked_on = data.val if data.val is not None else data.test
    last_test: dict[str, Any] | None = None
    for epoch in range(start, cfg.epochs):
        began = time.perf_counter()
        torch.manual_seed(epoch_seed(cfg, epoch, rank))
        sampler.set_epoch(epoch)
        data.train.base.set_epoch(epoch)
        row = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"],
               **train_epoch(net, loader, transform, optimizer, scaler, cfg, runtime, amp,
                             f"epoch {epoch + 1}/{cfg.epochs}", show)}
        scheduler.step()
        last = epoch + 1 == cfg.epochs
        if last or (cfg.eval_every and (epoch + 1) % cfg.eval_every == 0):
            logits, labels = predict(model, picked_on, transform, batch, cfg.workers, runtime, amp, show, pick)
            row.update(scores(logits, labels, pick))
            if pick == "test" and last:
                last_test = classification_report(logits, labels, classes)
        row["seconds"] = round(time.perf_counter() - began, 2)
        history.append(row)
        if runtime.main:
            tqdm.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
            if best_row(history, pick) is row:
                save_checkpoint(out_dir / BEST, _weights(model.state_dict(), cfg, classes, epoch + 1, history))
            save_checkpoint(out_dir / CHECKPOINT, {
                **_weights(model.state_dict(), cfg, classes, epoch + 1, history),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict()})
        barrier()

    def test() -> dict[str, Any]:
        logits, labels = predict(model, data.test, transform, batch, cfg.workers, runtime, amp, show)
        return classification_report(logits, labels, classes)

    if last_test is None:  # the last epoch was scored on validation, or the run had already finished
        last_test = test()
    best = best_row(history, pick)
    if pick == "test":  # the model delivered is the last one; the best epoch is only reported
        delivered, selected = last_test, out_dir / CHECKPOINT
        best_test = {"top1": best["test_top1"], "top5": best["test_top5"]}
    else:               # the model delivered is the one validation picked
        if best["epoch"] != cfg.epochs:
            model.load_state_dict(load_checkpoint(out_dir / BEST)["model"])
        delivered = best_test = last_test if best["epoch"] == cfg.epochs else test()
        selected = out_dir / BEST
    result = {"mode": "train", "train_data": cfg.train_data, "test_data": cfg.test_data,
              "train_codec": data.train.codec, "test_codec": data.test.codec, "epochs": cfg.epochs,
              **delivered, **selection(last_test, best_test, pick, best["epoch"]),
              "val": {"fraction": cfg.val_fraction, "groups": data.val_groups, "num_clips": len(data.val)}
              if data.val is not None else None,
              "warnings": warnings, "history": history, "pretrained_keys": loaded,
              "config": dataclasses.asdict(cfg), "checkpoint": str(out_dir / CHECKPOINT),
              "selected_checkpoint": str(selected), "world_size": world, "device": str(device)}
    if runtime.main:
        result = write_outputs(out_dir, result, classes, f"train {data.train.codec} / test {data.test.codec}: "
                               f"top-1 {delivered['top1']:.1f}%")
    barrier()
    return result


def evaluate_checkpoint(checkpoint: str | os.PathLike, test_data: str | os.PathLike, output_dir: str | os.PathLike,
                        test_split: str = "test", device: str = "auto", batch_size: int | None = None,
                        workers: int = 0, progress: bool = True) -> dict[str, Any]:
    """Score a trained model on another archive (the paper's "test" setting); rank 0 writes the outputs."""
    state = load_checkpoint(checkpoint)
    cfg = TrainConfig.from_saved(state["config"], device=device, workers=workers, progress=progress,
                                 output_dir=str(output_dir), test_data=str(test_data), test_split=test_split,
                                 batch_size=batch_size or state["config"]["batch_size"], resume=None)
    runtime = setup_runtime(cfg.device)
    test_ds = ClipSet(NVRDataset(test_data, split=test_split, num_segments=cfg.num_segments,
                                 device=runtime.device).eval())
    if test_ds.classes != state["classes"]:
        raise ValueError(f"{test_data}: its {len(test_ds.classes)} classes differ from the {len(state['classes'])} "
                         f"the checkpoint {checkpoint} was trained on")
    model = make_tsm(cfg, len(state["classes"]))
    model.load_state_dict(state["model"])
    model.to(runtime.device)
    logits, labels = predict(model, test_ds, make_transform(cfg), per_rank_batch(cfg, runtime.world),
                             cfg.workers, runtime, autocast_dtype(cfg.amp, runtime.device),
                             cfg.progress and runtime.main)
    report = classification_report(logits, labels, state["classes"])
    result = {"mode": "eval", "checkpoint": str(checkpoint), "train_data": state["config"]["train_data"],
              "test_data": str(test_data), "test_codec": test_ds.codec, "epochs": int(state["epoch"]),
              **report, "config": dataclasses.asdict(cfg), "world_size": runtime.world, "device": str(runtime.device)}
    if runtime.main:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        result = write_outputs(Path(output_dir), result, state["classes"],
                               f"{Path(checkpoint).parent.name} on {test_ds.codec}: top-1 {report['top1']:.1f}%")
    barrier()
    return result
