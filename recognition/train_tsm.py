"""Train and evaluate TSM on .nvr archives of any codec: the D-NeRV paper's action-recognition test.

    python -m recognition.train_tsm --train-data raw.nvr --test-data raw.nvr -o runs/raw --recipe synthetic
    torchrun --nproc-per-node 8 -m recognition.train_tsm --train-data raw.nvr --test-data h264.nvr \\
        -o runs/raw --pretrained tsm_kinetics_r50.pth            # the ucf101 recipe is the default
    python -m recognition.train_tsm --eval-only --checkpoint runs/raw/checkpoint.pt --test-data h264.nvr -o runs/test

Clips are decoded on the training device, augmented there as whole-batch tensor ops, and fed to the
model. Rank 0 writes `checkpoint.pt` (every epoch, atomically), `metrics.json` and `confusion.png`.
All randomness of an epoch (clip order, TSN offsets, crops, flips, dropout) is seeded from
(seed, epoch, rank), so `--resume` continues exactly where an interrupted run would have been.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from nvrloader.archive import ArchiveError
from nvrloader.dataset import NVRDataset
from nvrloader.device import resolve_device
from nvrloader.distributed import barrier, init_distributed, is_distributed
from nvrloader.reporting import save_figure, to_json, write_json
from recognition.transforms import ClipTransform
from recognition.tsm import TSM, load_backbone

RECIPES: dict[str, dict[str, Any]] = {
    # The TSM authors' UCF101 fine-tune from Kinetics weights (their README command): lr 0.001 for a
    # batch of 64, steps at 10 and 20 of 25 epochs, dropout 0.8, partial BN, 5x lr on the new
    # classifier, gradient norm clipped at 20, evaluated every epoch.
    "ucf101": {"backbone": "resnet50", "width_mult": 1.0, "input_size": 224, "optimizer": "sgd",
               "batch_size": 64, "lr": 0.001, "momentum": 0.9, "weight_decay": 5e-4, "epochs": 25,
               "lr_steps": (10, 20), "dropout": 0.8, "partial_bn": True, "fc_init_std": 0.001,
               "fc_lr_mult": 5.0, "clip_grad": 20.0, "eval_every": 1, "flip": True},
    # From scratch on the synthetic set (nvrloader.synth) on CPU: resnet18 at 1/4 width, input = the
    # frames' short side. Nothing pretrained to protect, so every BN layer learns, the classifier is
    # not boosted and starts at PyTorch's init rather than TSN's near-zero one. AdamW: with SGD
    # (lr 0.01-0.05) a random TSM sat at chance for hundreds of steps on these motion-only classes,
    # or diverged in the first epoch. No flips: the classes come in mirror pairs (MoveLeft/MoveRight,
    # clockwise/counterclockwise), as TSM does for Something-Something.
    "synthetic": {"backbone": "resnet18", "width_mult": 0.25, "input_size": None, "optimizer": "adamw",
                  "batch_size": 16, "lr": 1e-3, "momentum": 0.9, "weight_decay": 1e-4, "epochs": 40,
                  "lr_steps": (30, 36), "dropout": 0.2, "partial_bn": False, "fc_init_std": None,
                  "fc_lr_mult": 1.0, "clip_grad": 20.0, "eval_every": 5, "flip": False},
}
# Fields that may change between a run and its --resume; every other one must match the checkpoint.
RUNTIME_FIELDS = {"output_dir", "device", "workers", "progress", "epochs", "eval_every", "resume", "amp"}


@dataclass
class TrainConfig:
    backbone: str
    width_mult: float
    input_size: int | None      # None: the short side of the training frames
    optimizer: str              # sgd (TSM's, with momentum) | adamw
    batch_size: int             # clips per step over all processes
    lr: float
    momentum: float             # sgd only
    weight_decay: float
    epochs: int
    lr_steps: tuple[int, ...]   # epochs at which lr is divided by 10
    dropout: float
    partial_bn: bool
    fc_init_std: float | None   # classifier weight init; None: PyTorch's default
    fc_lr_mult: float
    clip_grad: float            # max gradient norm; 0 disables clipping
    eval_every: int             # test every N epochs; 0: only after the last
    flip: bool                  # random horizontal flips; off when mirroring swaps classes
    train_data: str | None = None
    test_data: str | None = None
    output_dir: str = "runs/tsm"
    recipe: str = "ucf101"
    num_segments: int = 8
    shift_div: int = 8
    pretrained: str | None = None
    train_split: str = "train"
    test_split: str = "test"
    device: str = "auto"
    workers: int = 0
    amp: bool | None = None     # None: on for CUDA only
    seed: int = 0
    progress: bool = True
    resume: str | None = None

    @classmethod
    def from_recipe(cls, recipe: str = "ucf101", **overrides: Any) -> "TrainConfig":
        """The recipe's values, with every override that is not None on top."""
        if recipe not in RECIPES:
            raise ValueError(f"unknown recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
        given = {k: v for k, v in overrides.items() if v is not None}
        return cls(**{**RECIPES[recipe], "recipe": recipe, **given})


def check_classes(train: NVRDataset, test: NVRDataset) -> list[str]:
    """Both archives must label videos the same way, or accuracy would compare unrelated indices."""
    for ds in (train, test):
        if not ds.classes or min(ds.labels) < 0:
            raise ValueError(f"{ds.path}: the archive has no class labels (built from a flat folder?); "
                             "action recognition needs a labelled dataset")
    if train.classes != test.classes:
        first = next((i for i, (a, b) in enumerate(zip(train.classes, test.classes)) if a != b),
                     min(len(train.classes), len(test.classes)))
        a = train.classes[first] if first < len(train.classes) else "<none>"
        b = test.classes[first] if first < len(test.classes) else "<none>"
        raise ValueError(f"class lists differ: {train.path} has {len(train.classes)} classes, {test.path} has "
                         f"{len(test.classes)}; first difference at index {first}: {a!r} vs {b!r}. "
                         "Build both archives from the same source dataset and split.")
    return list(train.classes)


def make_tsm(cfg: TrainConfig, num_classes: int) -> TSM:
    return TSM(num_classes, cfg.num_segments, cfg.backbone, cfg.shift_div, cfg.dropout, cfg.partial_bn,
               cfg.width_mult, cfg.fc_init_std)


def build_model(cfg: TrainConfig, num_classes: int) -> tuple[TSM, dict[str, list[str]] | None]:
    model = make_tsm(cfg, num_classes)
    if cfg.pretrained is None:
        return model, None
    missing, unexpected = load_backbone(model, cfg.pretrained)
    return model, {"missing": missing, "unexpected": unexpected}


OPTIMIZERS = ("sgd", "adamw")


def make_optimizer(cfg: TrainConfig, groups: list[dict]) -> torch.optim.Optimizer:
    """Each parameter group keeps its own lr and weight decay (TSM's policy) whichever optimiser runs it."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")


def epoch_seed(cfg: TrainConfig, epoch: int, rank: int) -> int:
    """One seed per (run, epoch, process): what makes a resumed run identical to an uninterrupted one."""
    return (cfg.seed * 1_000_003 + epoch) * 1_009 + rank


def make_loader(ds: NVRDataset, batch_size: int, sampler: Any, workers: int, drop_last: bool) -> DataLoader:
    spawn = workers > 0 and ds.device.type == "cuda"  # CUDA cannot be used in forked workers
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=workers, drop_last=drop_last,
                      multiprocessing_context="spawn" if spawn else None)


def per_rank_batch(cfg: TrainConfig, world: int) -> int:
    if cfg.batch_size % world:
        raise ValueError(f"--batch-size {cfg.batch_size} is the total over processes and must divide by "
                         f"the {world} processes")
    return cfg.batch_size // world


def train_epoch(model: torch.nn.Module, loader: DataLoader, transform: ClipTransform,
                optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, cfg: TrainConfig,
                device: torch.device, amp: bool, desc: str, show: bool) -> dict[str, float]:
    model.train()
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss * n, correct, n
    params = [p for p in model.parameters() if p.requires_grad]
    bar = tqdm(loader, desc=desc, unit="batch", disable=not show, leave=False)
    for clips, labels in bar:
        labels = labels.to(device)
        x = transform(clips.to(device), train=True)
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            logits = model(x)
            loss = F.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.clip_grad > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad)
        scaler.step(optimizer)
        scaler.update()
        n = labels.numel()
        sums += torch.tensor([loss.item() * n, (logits.argmax(1) == labels).sum().item(), n],
                             dtype=torch.float64, device=device)
        bar.set_postfix(loss=f"{sums[0].item() / sums[2].item():.3f}")
    if is_distributed():
        torch.distributed.all_reduce(sums)
    return {"train_loss": sums[0].item() / max(sums[2].item(), 1),
            "train_top1": 100 * sums[1].item() / max(sums[2].item(), 1)}


@torch.no_grad()
def predict(model: torch.nn.Module, ds: NVRDataset, transform: ClipTransform, batch_size: int, workers: int,
            device: torch.device, amp: bool, rank: int, world: int, show: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels of every test clip, in dataset order; each process scores a disjoint share."""
    model.eval()
    mine = list(range(rank, len(ds), world))
    loader = make_loader(ds, batch_size, mine, workers, drop_last=False)
    logits = []
    for clips, _ in tqdm(loader, desc="test", unit="batch", disable=not show, leave=False):
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            logits.append(model(transform(clips.to(device), train=False)).float().cpu())
    scores = torch.cat(logits) if logits else torch.empty(0, len(ds.classes))
    if is_distributed():
        shares: list[Any] = [None] * world
        torch.distributed.all_gather_object(shares, (mine, scores))
        order = torch.tensor([i for idx, _ in shares for i in idx])
        scores = torch.cat([s for _, s in shares])[order.argsort()]
    return scores, torch.tensor(ds.labels)


def classification_report(logits: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> dict[str, Any]:
    """Top-1/top-5 (percent, over clips), per-class accuracy and the confusion matrix (rows: truth)."""
    k = min(5, len(classes))
    pred = logits.argmax(1)
    confusion = torch.zeros(len(classes), len(classes), dtype=torch.long)
    confusion.index_put_((labels, pred), torch.ones_like(labels), accumulate=True)
    totals = confusion.sum(1)
    per_class = {c: (100 * confusion[i, i].item() / totals[i].item() if totals[i] else None)
                 for i, c in enumerate(classes)}
    seen = [v for v in per_class.values() if v is not None]
    return {"top1": 100 * (pred == labels).double().mean().item(),
            "top5": 100 * (logits.topk(k, dim=1).indices == labels[:, None]).any(1).double().mean().item(),
            "mean_class_accuracy": sum(seen) / max(len(seen), 1), "num_clips": int(labels.numel()),
            "per_class": per_class, "confusion": confusion.tolist()}


def plot_confusion(confusion: list[list[int]], classes: list[str], title: str, path: Path) -> Path:
    """Row-normalised confusion matrix as a PNG (atomic write)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    counts = torch.tensor(confusion, dtype=torch.float64)
    rates = counts / counts.sum(1, keepdim=True).clamp(min=1)
    n = len(classes)
    side = min(4 + 0.35 * n, 30)
    fig, ax = plt.subplots(figsize=(side, side * 0.9))
    im = ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of the true class")
    if n <= 40:
        ax.set_xticks(range(n), classes, rotation=90, fontsize=8)
        ax.set_yticks(range(n), classes, fontsize=8)
    if n <= 15:
        for i in range(n):
            for j in range(n):
                if counts[i, j]:
                    ax.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not {"model", "config", "classes", "epoch"} <= state.keys():
        raise ValueError(f"{path}: not a train_tsm checkpoint (needs model, config, classes, epoch)")
    return state


def check_resumable(cfg: TrainConfig, saved: dict[str, Any], path: str) -> None:
    """A resumed run must be the same experiment: only runtime fields may differ."""
    now = asdict(cfg)
    saved = {**now, **saved, "lr_steps": tuple(saved.get("lr_steps", ()))}
    differ = [f"{k}: checkpoint {saved[k]!r} vs now {now[k]!r}" for k in now
              if k not in RUNTIME_FIELDS and saved[k] != now[k]]
    if differ:
        raise ValueError(f"{path}: cannot resume a different experiment; " + "; ".join(differ))


def write_outputs(out_dir: Path, report: dict[str, Any], classes: list[str], title: str) -> dict[str, Any]:
    png = plot_confusion(report["confusion"], classes, title, out_dir / "confusion.png")
    report = {**report, "confusion_png": str(png)}
    write_json(out_dir / "metrics.json", report)
    return report


def setup(cfg: TrainConfig) -> tuple[torch.device, int, int, bool]:
    rank, world, local_rank = init_distributed()
    device = resolve_device(cfg.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", local_rank)
    amp = device.type == "cuda" if cfg.amp is None else (cfg.amp and device.type == "cuda")
    return device, rank, world, amp


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train on cfg.train_data, test on cfg.test_data; returns (and on rank 0 writes) the metrics."""
    if not cfg.train_data or not cfg.test_data:
        raise ValueError("training needs --train-data and --test-data")
    device, rank, world, amp = setup(cfg)
    show = cfg.progress and rank == 0
    out_dir = Path(cfg.output_dir)
    train_ds = NVRDataset(cfg.train_data, split=cfg.train_split, num_segments=cfg.num_segments,
                          device=device, seed=cfg.seed).train()
    test_ds = NVRDataset(cfg.test_data, split=cfg.test_split, num_segments=cfg.num_segments, device=device).eval()
    classes = check_classes(train_ds, test_ds)
    if cfg.input_size is None:
        cfg = dataclasses.replace(cfg, input_size=min(int(train_ds.meta["height"]), int(train_ds.meta["width"])))
    resume = load_checkpoint(cfg.resume) if cfg.resume else None
    if resume is not None:
        check_resumable(cfg, resume["config"], cfg.resume)
    torch.manual_seed(cfg.seed)
    model, loaded = build_model(cfg, len(classes))
    model.to(device)
    groups = model.param_groups(cfg.lr, cfg.weight_decay, cfg.fc_lr_mult)
    optimizer = make_optimizer(cfg, groups)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(cfg.lr_steps), gamma=0.1)
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    start, history = 0, []
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        scaler.load_state_dict(resume["scaler"])
        start, history = int(resume["epoch"]), list(resume["history"])
    net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if is_distributed() else model
    transform = ClipTransform(cfg.input_size, flip=cfg.flip)
    batch = per_rank_batch(cfg, world)
    sampler = DistributedSampler(train_ds, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed)
    # TSM drops the last partial batch; a set smaller than one batch keeps it so training still happens
    loader = make_loader(train_ds, batch, sampler, cfg.workers, drop_last=len(sampler) > batch)
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        if loaded and (loaded["missing"] or loaded["unexpected"]):
            print(f"{cfg.pretrained}: missing {loaded['missing']}, unexpected {loaded['unexpected']}", file=sys.stderr)
    report: dict[str, Any] | None = None
    for epoch in range(start, cfg.epochs):
        began = time.perf_counter()
        torch.manual_seed(epoch_seed(cfg, epoch, rank))
        sampler.set_epoch(epoch)
        train_ds.set_epoch(epoch)
        row = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"],
               **train_epoch(net, loader, transform, optimizer, scaler, cfg, device, amp,
                             f"epoch {epoch + 1}/{cfg.epochs}", show)}
        scheduler.step()
        last = epoch + 1 == cfg.epochs
        if last or (cfg.eval_every and (epoch + 1) % cfg.eval_every == 0):
            logits, labels = predict(model, test_ds, transform, batch, cfg.workers, device, amp, rank, world, show)
            report = classification_report(logits, labels, classes)
            row["test_top1"] = report["top1"]
        row["seconds"] = round(time.perf_counter() - began, 2)
        history.append(row)
        if rank == 0:
            tqdm.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
        if rank == 0:
            save_checkpoint(out_dir / "checkpoint.pt", {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "epoch": epoch + 1,
                "config": asdict(cfg), "classes": classes, "history": history})
        barrier()
    if report is None:  # resumed a run that had already finished: score it again
        logits, labels = predict(model, test_ds, transform, batch, cfg.workers, device, amp, rank, world, show)
        report = classification_report(logits, labels, classes)
    result = {"mode": "train", "train_data": cfg.train_data, "test_data": cfg.test_data,
              "train_codec": train_ds.codec, "test_codec": test_ds.codec, "epochs": cfg.epochs,
              **report, "history": history, "pretrained_keys": loaded, "config": asdict(cfg),
              "checkpoint": str(out_dir / "checkpoint.pt"), "world_size": world, "device": str(device)}
    if rank == 0:
        result = write_outputs(out_dir, result, classes,
                               f"train {train_ds.codec} / test {test_ds.codec}: top-1 {report['top1']:.1f}%")
    barrier()
    return result


def evaluate_checkpoint(checkpoint: str | os.PathLike, test_data: str | os.PathLike, output_dir: str | os.PathLike,
                        test_split: str = "test", device: str = "auto", batch_size: int | None = None,
                        workers: int = 0, progress: bool = True) -> dict[str, Any]:
    """Score a trained model on another archive (the paper's "test" setting); rank 0 writes the outputs."""
    state = load_checkpoint(checkpoint)
    cfg = TrainConfig(**{**state["config"], "lr_steps": tuple(state["config"]["lr_steps"]), "device": device,
                         "workers": workers, "progress": progress, "output_dir": str(output_dir),
                         "test_data": str(test_data), "test_split": test_split,
                         "batch_size": batch_size or state["config"]["batch_size"], "resume": None})
    dev, rank, world, amp = setup(cfg)
    test_ds = NVRDataset(test_data, split=test_split, num_segments=cfg.num_segments, device=dev).eval()
    if test_ds.classes != state["classes"]:
        raise ValueError(f"{test_data}: its {len(test_ds.classes)} classes differ from the {len(state['classes'])} "
                         f"the checkpoint {checkpoint} was trained on")
    model = make_tsm(cfg, len(state["classes"]))
    model.load_state_dict(state["model"])
    model.to(dev)
    logits, labels = predict(model, test_ds, ClipTransform(cfg.input_size), per_rank_batch(cfg, world),
                             cfg.workers, dev, amp, rank, world, cfg.progress and rank == 0)
    report = classification_report(logits, labels, state["classes"])
    result = {"mode": "eval", "checkpoint": str(checkpoint), "train_data": state["config"]["train_data"],
              "test_data": str(test_data), "test_codec": test_ds.codec, "epochs": int(state["epoch"]),
              **report, "config": asdict(cfg), "world_size": world, "device": str(dev)}
    if rank == 0:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        result = write_outputs(Path(output_dir), result, state["classes"],
                               f"{Path(checkpoint).parent.name} on {test_ds.codec}: top-1 {report['top1']:.1f}%")
    barrier()
    return result


def int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected epochs like '10,20', got {text!r}") from None


def add_training_arguments(ap: argparse.ArgumentParser) -> None:
    """Recipe, model, optimisation and run flags; shared with recognition.compare."""
    ap.add_argument("--recipe", choices=sorted(RECIPES), default="ucf101",
                    help="defaults for every training flag below: ucf101 = the TSM authors' UCF101 fine-tune "
                         "(use with --pretrained), synthetic = from random weights on the synthetic set")
    model = ap.add_argument_group("model (default: from the recipe)")
    model.add_argument("--backbone", help="timm ResNet name: resnet50, resnet18, resnet34, resnet101, ...")
    model.add_argument("--width-mult", type=float, help="scale every ResNet width (CPU-sized runs; no pretrained)")
    model.add_argument("--num-segments", type=int, help="TSN segments per clip (8)")
    model.add_argument("--shift-div", type=int, help="1/shift_div of the channels shift each way (8)")
    model.add_argument("--dropout", type=float)
    model.add_argument("--partial-bn", action=argparse.BooleanOptionalAction, default=None)
    model.add_argument("--pretrained", help="backbone weights: torch state dict or timm .safetensors file")
    model.add_argument("--input-size", type=int, help="square crop fed to the network (ucf101: 224)")
    model.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                       help="random horizontal flips in training (off when mirroring changes the class)")
    opt = ap.add_argument_group("optimisation (default: from the recipe)")
    opt.add_argument("--epochs", type=int)
    opt.add_argument("--batch-size", type=int, help="clips per step over all processes")
    opt.add_argument("--lr", type=float)
    opt.add_argument("--lr-steps", type=int_list, help="epochs at which lr drops 10x, e.g. 10,20")
    opt.add_argument("--optimizer", choices=OPTIMIZERS)
    opt.add_argument("--momentum", type=float, help="SGD momentum")
    opt.add_argument("--weight-decay", type=float)
    opt.add_argument("--fc-lr-mult", type=float, help="lr multiplier of the new classifier")
    opt.add_argument("--clip-grad", type=float, help="max gradient norm (0: off)")
    opt.add_argument("--eval-every", type=int, help="test every N epochs (0: after the last only)")
    opt.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None, help="mixed precision (CUDA only)")
    opt.add_argument("--seed", type=int)
    run = ap.add_argument_group("run")
    run.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]: decoding, augmentation and model")
    run.add_argument("--workers", type=int, help="DataLoader worker processes (0)")
    run.add_argument("--no-progress", action="store_true")


def config_from_args(args: argparse.Namespace, **fixed: Any) -> TrainConfig:
    """The recipe named by --recipe with every flag that was given on top, then ``fixed``."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"recipe"}
    given = {k: v for k, v in vars(args).items() if k in fields}
    return TrainConfig.from_recipe(args.recipe, **{**given, "progress": not args.no_progress, **fixed})


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m recognition.train_tsm", description=__doc__.splitlines()[0])
    ap.add_argument("--train-data", help="archive to train on (.nvr, any codec)")
    ap.add_argument("--test-data", required=True, help="archive to test on (.nvr, any codec)")
    ap.add_argument("-o", "--output-dir", default="runs/tsm", help="checkpoint.pt, metrics.json, confusion.png")
    ap.add_argument("--train-split", choices=("train", "test", "all"), help="videos of --train-data used (train)")
    ap.add_argument("--test-split", choices=("train", "test", "all"), help="videos of --test-data used (test)")
    ap.add_argument("--resume", nargs="?", const="auto",
                    help="continue from a checkpoint (default: OUTPUT_DIR/checkpoint.pt)")
    ap.add_argument("--eval-only", action="store_true", help="only score --checkpoint on --test-data")
    ap.add_argument("--checkpoint", help="checkpoint for --eval-only")
    add_training_arguments(ap)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.eval_only:
            if not args.checkpoint:
                raise ValueError("--eval-only needs --checkpoint")
            result = evaluate_checkpoint(args.checkpoint, args.test_data, args.output_dir, args.test_split or "test",
                                         args.device, args.batch_size, args.workers or 0, not args.no_progress)
        else:
            resume = str(Path(args.output_dir) / "checkpoint.pt") if args.resume == "auto" else args.resume
            result = train(config_from_args(args, resume=resume))
    except (ArchiveError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        print(to_json({k: v for k, v in result.items() if k not in ("confusion", "history", "config")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
