"""pytorchvideo interop: `NVRDataset` clips as pytorchvideo's sample dicts, so its transforms
(`ApplyTransformToKey`, `Normalize`, `ShortSideScale`, ...) run unchanged.

pytorchvideo 0.1.5 (its last release) imports ``torchvision.transforms.functional_tensor``, which
torchvision 0.17 renamed ``_functional_tensor``; `import_pytorchvideo` registers the old name
first. Only ``pytorchvideo.transforms`` is needed here: ``pytorchvideo.data`` also wants iopath and
its own video readers, which an archive replaces. Install with ``pip install nvrloader[pytorchvideo]``.
"""
from __future__ import annotations

import sys
from types import ModuleType
from typing import Any, Callable

import torch
from torch.utils.data import Dataset

from nvrloader.dataset import NVRDataset


def import_pytorchvideo() -> ModuleType:
    """``pytorchvideo.transforms``, importable on current torchvision."""
    if "torchvision.transforms.functional_tensor" not in sys.modules:
        from torchvision.transforms import _functional_tensor
        sys.modules["torchvision.transforms.functional_tensor"] = _functional_tensor
    try:
        import pytorchvideo.transforms
    except ImportError as err:
        raise ImportError(f"pytorchvideo is not installed ({err}); pip install 'nvrloader[pytorchvideo]'") from None
    return pytorchvideo.transforms


class PyTorchVideoDataset(Dataset):
    """Samples ``{"video": float [C, T, H, W] in [0, 1], "label", "video_name", "video_index",
    "frame_indices"}`` from an `NVRDataset`, a whole DataLoader batch decoded at once."""

    def __init__(self, dataset: NVRDataset, transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None):
        if dataset.transform is not None or dataset.output != "uint8" or not dataset.return_info:
            raise ValueError("PyTorchVideoDataset wants NVRDataset(..., return_info=True) with no transform and "
                             "output='uint8'; give transforms to PyTorchVideoDataset(transform=...)")
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:
        out = []
        for clip, label, info in self.dataset.__getitems__(indices):
            sample = {"video": clip.permute(1, 0, 2, 3).float().div_(255), "label": label, **info}
            out.append(self.transform(sample) if self.transform is not None else sample)
        return out

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} clips")
        return self.__getitems__([index % len(self)])[0]


def collate_samples(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack videos and labels; keep names and frame indices as lists (their lengths may differ)."""
    return {"video": torch.stack([s["video"] for s in batch]), "label": torch.tensor([s["label"] for s in batch]),
            **{k: [s[k] for s in batch] for k in batch[0] if k not in ("video", "label")}}
