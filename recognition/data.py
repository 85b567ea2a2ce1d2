"""The clips a TSM run reads: training, validation (whole UCF groups held out of training) and test."""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from nvrloader.dataset import NVRDataset
from recognition.config import TrainConfig


class ClipSet(Dataset):
    """Some clips of an archive (all, or the training or validation part), read a batch at a time."""

    def __init__(self, base: NVRDataset, indices: Sequence[int] | None = None) -> None:
        self.base = base
        self.indices = list(range(len(base))) if indices is None else list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitems__(self, indices: list[int]) -> list[tuple[Any, int]]:
        return self.base.__getitems__([self.indices[i] for i in indices])

    def __getitem__(self, index: int) -> tuple[Any, int]:
        return self.__getitems__([index])[0]

    @property
    def labels(self) -> list[int]:
        return [self.base.labels[i] for i in self.indices]

    @property
    def classes(self) -> list[str]:
        return self.base.classes

    @property
    def device(self) -> torch.device:
        return self.base.device

    @property
    def codec(self) -> str:
        return self.base.codec

    @property
    def path(self) -> Path:
        return self.base.path


@dataclass
class RunData:
    train: ClipSet
    val: ClipSet | None
    test: ClipSet
    classes: list[str]
    val_groups: list[str]       # the groups held out for validation (empty without a validation split)
    notes: list[str]            # why a requested validation split could not be made


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


def video_groups(ds: NVRDataset) -> list[str]:
    """The group of every clip: its UCF group (gXX, one scene or actor across all classes), or the
    video itself when its name carries none."""
    videos = ds.meta["videos"]
    return [f"g{videos[v]['group']:02d}" if videos[v].get("group") is not None else f"video:{videos[v]['name']}"
            for v in ds.video_ids]


def split_groups(groups: Sequence[str], fraction: float, seed: int) -> tuple[list[int], list[int], list[str]]:
    """(train indices, validation indices, validation groups): about `fraction` of the groups, drawn
    with `seed`, at least one and never all, go to validation whole."""
    names = sorted(set(groups))
    if len(names) < 2:
        raise ValueError(f"a validation split needs at least two groups in the training videos, they have "
                         f"{len(names)} ({', '.join(names)})")
    count = min(len(names) - 1, max(1, round(fraction * len(names))))
    held = set(random.Random(seed).sample(names, count))
    train = [i for i, g in enumerate(groups) if g not in held]
    val = [i for i, g in enumerate(groups) if g in held]
    return train, val, sorted(held)


def open_data(cfg: TrainConfig, device: torch.device) -> RunData:
    """The run's clip sets; the validation split comes from the training videos, group-disjoint."""
    if not cfg.train_data or not cfg.test_data:
        raise ValueError("training needs --train-data and --test-data")
    # training clips are a function of (seed, epoch, index): the same after --resume, in any worker
    every = NVRDataset(cfg.train_data, split=cfg.train_split, num_segments=cfg.num_segments, device=device,
                       seed=cfg.seed)
    test = NVRDataset(cfg.test_data, split=cfg.test_split, num_segments=cfg.num_segments, device=device).eval()
    classes = check_classes(every, test)
    if cfg.val_fraction <= 0:
        return RunData(ClipSet(every.train()), None, ClipSet(test), classes, [], [])
    try:
        train_idx, val_idx, held = split_groups(video_groups(every), cfg.val_fraction, cfg.seed)
    except ValueError as err:
        note = f"no validation split ({err}); the best epoch is picked on the test split instead"
        return RunData(ClipSet(every.train()), None, ClipSet(test), classes, [], [note])
    val_view = NVRDataset(cfg.train_data, split=cfg.train_split, num_segments=cfg.num_segments, device=device)
    return RunData(ClipSet(every.train(), train_idx), ClipSet(val_view.eval(), val_idx), ClipSet(test),
                   classes, held, [])


def make_loader(ds: Dataset, batch_size: int, sampler: Any, workers: int, drop_last: bool,
                device: torch.device) -> DataLoader:
    spawn = workers > 0 and device.type == "cuda"  # CUDA cannot be used in forked workers
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=workers, drop_last=drop_last,
                      multiprocessing_context="spawn" if spawn else None)


def per_rank_batch(cfg: TrainConfig, world: int) -> int:
    if cfg.batch_size % world:
        raise ValueError(f"--batch-size {cfg.batch_size} is the total over processes and must divide by "
                         f"the {world} processes")
    return cfg.batch_size // world
