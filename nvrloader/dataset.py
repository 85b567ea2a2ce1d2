"""NVRDataset: clips from an .nvr archive, decoded on the fly, a whole DataLoader batch at a time."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from nvrloader.archive import Archive, open_archive
from nvrloader.codecs import Decoder, open_decoder
from nvrloader.device import resolve_device
from nvrloader.sampling import SAMPLINGS, sample_indices

SPLITS = ("train", "test", "all")
OUTPUTS = ("uint8", "float")


class NVRDataset(Dataset):
    """torchvision-style video dataset over any codec in an archive.

    Returns ``(clip [T, C, H, W], label)``. ``__getitems__`` lets a DataLoader hand the whole batch
    to the codec's decoder at once (one forward pass for neural codecs, one decode per video for
    H.264). The archive is opened lazily in each process, so worker processes each get their own
    HDF5 handle. ``half=True`` runs neural decoders in fp16 on CUDA.
    """

    def __init__(self, path: str | os.PathLike, split: str = "train", num_segments: int = 8,
                 frames_per_segment: int = 1, sampling: str = "tsn",
                 transform: Callable[[torch.Tensor], Any] | None = None, device: str | torch.device = "auto",
                 output: str = "uint8", random_offset: bool | None = None, half: bool = False) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        if num_segments < 1 or frames_per_segment < 1:
            raise ValueError("num_segments and frames_per_segment must be >= 1")
        self.path = Path(path)
        self.split, self.sampling, self.output = split, sampling, output
        self.num_segments, self.frames_per_segment = num_segments, frames_per_segment
        self.transform = transform
        self.device = resolve_device(device)
        self.half = half
        self.random_offset = (split == "train") if random_offset is None else random_offset
        with open_archive(self.path) as archive:
            self.meta: dict[str, Any] = archive.meta
            self.codec = archive.codec
        videos = self.meta["videos"]
        self.video_ids = [i for i, v in enumerate(videos) if split == "all" or v["split"] == split]
        if not self.video_ids:
            raise ValueError(f"{self.path}: the archive holds no {split!r} videos "
                             f"(its subset is {self.meta.get('subset', 'unknown')!r}); use split='all' "
                             "or build the archive with the videos you need")
        self.classes: list[str] = list(self.meta.get("classes", []))
        self.labels: list[int] = [int(videos[i]["label"]) for i in self.video_ids]
        self._pid: int | None = None
        self._archive: Archive | None = None
        self._decoder: Decoder | None = None

    def train(self, mode: bool = True) -> "NVRDataset":
        """Random TSN offsets (training) or segment centres (evaluation), as TSM samples."""
        self.random_offset = mode
        return self

    def eval(self) -> "NVRDataset":
        return self.train(False)

    def __len__(self) -> int:
        return len(self.video_ids)

    def __getstate__(self) -> dict[str, Any]:
        # HDF5 handles and device tensors stay in the process that made them.
        return {**self.__dict__, "_pid": None, "_archive": None, "_decoder": None}

    @property
    def decoder(self) -> Decoder:
        if self._pid != os.getpid():
            self._archive = open_archive(self.path)
            self._decoder = open_decoder(self._archive, self.device, self.half)
            self._pid = os.getpid()
        return self._decoder

    def frame_indices(self, index: int) -> np.ndarray:
        """The frames clip ``index`` takes from its video (random in training mode)."""
        num_frames = int(self.meta["videos"][self.video_ids[index]]["num_frames"])
        return sample_indices(self.sampling, num_frames, self.num_segments, self.frames_per_segment,
                              self.random_offset)

    def __getitems__(self, indices: list[int]) -> list[tuple[Any, int]]:
        requests = [(self.video_ids[i], self.frame_indices(i)) for i in indices]
        clips = self.decoder.decode(requests)
        out = []
        for i, clip in zip(indices, clips):
            if self.output == "float":
                clip = clip.float().div_(255)
            if self.transform is not None:
                clip = self.transform(clip)
            out.append((clip, self.labels[i]))
        return out

    def __getitem__(self, index: int) -> tuple[Any, int]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} clips")
        return self.__getitems__([index % len(self)])[0]

    def __repr__(self) -> str:
        return (f"NVRDataset({str(self.path)!r}, codec={self.codec!r}, split={self.split!r}, clips={len(self)}, "
                f"sampling={self.sampling!r}, segments={self.num_segments}x{self.frames_per_segment}, "
                f"device={str(self.device)!r})")
