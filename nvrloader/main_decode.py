"""Decoding in the main process while DataLoader workers only choose the clips: the GPU path.

CUDA cannot run in forked DataLoader workers, and one model copy on the GPU should serve every
batch. So the workers return what to decode, (clip, video, frame indices), and the main process
decodes each batch in one forward pass on the dataset's device::

    ds = NVRDataset("ucf101_dnerv.nvr", split="train", device="cuda", half=True)
    loader = request_loader(ds, batch_size=16, shuffle=True, num_workers=4, persistent_workers=True)
    for clips, labels in loader:      # clips [B, T, C, H, W] already on the GPU
        ...

``request_loader`` is ``DataLoader(ClipRequests(ds), collate_fn=collate_requests, ...)`` wrapped in
`MainProcessDecoding`; build those yourself to use another sampler or loader.

Sampling is the dataset's own (seeded by seed, epoch and index), so the clips are those that
``DataLoader(ds, ...)`` would give; ``ds.set_epoch``/``ds.train()`` reach the workers as usual.
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator

import numpy as np
from torch.utils.data import DataLoader, Dataset, default_collate

from nvrloader.dataset import NVRDataset

Request = tuple[int, int, np.ndarray]  # (dataset index, archive video, frame indices)


class ClipRequests(Dataset):
    """The clips of ``dataset`` as requests only: nothing is decoded where this runs."""

    def __init__(self, dataset: NVRDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Request:
        return (index, *self.dataset.request(index))


def collate_requests(items: list[Request]) -> list[Request]:
    """A batch of requests stays a list (frame counts may differ; nothing to stack yet)."""
    return list(items)


def decode_batch(dataset: NVRDataset, batch: list[Request]) -> Any:
    """One batch of requests decoded in this process and collated as DataLoader(dataset) would."""
    items = dataset.decode_items([i for i, _, _ in batch], [(v, idx) for _, v, idx in batch])
    return default_collate(items)


class MainProcessDecoding:
    """Iterating yields each batch of ``loader`` (requests from `ClipRequests` and `collate_requests`)
    decoded in this process; re-iterable and sized like the loader it wraps."""

    def __init__(self, loader: Iterable[list[Request]], dataset: NVRDataset) -> None:
        self.loader, self.dataset = loader, dataset

    def __iter__(self) -> Iterator[Any]:
        for batch in self.loader:
            yield decode_batch(self.dataset, batch)

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]


def request_loader(dataset: NVRDataset, **loader_kwargs: Any) -> MainProcessDecoding:
    """A DataLoader over ``dataset`` (same keywords) whose workers only sample and whose batches
    are decoded in the main process, on the dataset's device."""
    return MainProcessDecoding(DataLoader(ClipRequests(dataset), collate_fn=collate_requests, **loader_kwargs),
                               dataset)
