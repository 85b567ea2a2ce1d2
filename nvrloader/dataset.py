"""NVRDataset: clips from an .nvr archive, decoded on the fly, a whole DataLoader batch at a time."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from nvrloader.decode import ArchiveDecoder, DecodeOptions
from nvrloader.sampling import SAMPLINGS, sample_indices

SPLITS = ("train", "test", "all")
OUTPUTS = ("uint8", "float")


class NVRDataset(Dataset):
    """torchvision-style video dataset over any codec in an archive, on top of `ArchiveDecoder`.

    Returns ``(clip [T, C, H, W], label)``, or ``(clip, label, info)`` with ``return_info=True``
    (video name, video index, frame indices). ``__getitems__`` hands a whole DataLoader batch to
    the decoder at once (one forward pass for neural codecs, one decode per video for H.264).

    A clip is a function of (seed, epoch, index, mode) only: the same in any worker, with any
    number of workers. ``set_epoch`` (as `DistributedSampler`'s) draws new training offsets each
    epoch; ``train()``/``eval()`` and ``set_epoch`` write to shared memory, so they also reach
    persistent DataLoader workers. ``seed=None`` draws one from torch's global generator.
    """

    def __init__(self, path: str | os.PathLike, split: str = "train", num_segments: int = 8,
                 frames_per_segment: int = 1, sampling: str = "tsn",
                 transform: Callable[[torch.Tensor], Any] | None = None, device: str | torch.device = "auto",
                 output: str = "uint8", random_offset: bool | None = None, half: bool = False,
                 seed: int | None = None, return_info: bool = False,
                 decode_options: DecodeOptions | None = None) -> None:
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
        self.return_info = return_info
        self.decoder = ArchiveDecoder(self.path, device, half, decode_options)
        self.device = self.decoder.device
        self.meta: dict[str, Any] = self.decoder.archive.meta
        self.codec = self.decoder.codec
        self.seed = int(torch.randint(2 ** 62, ()).item()) if seed is None else int(seed)
        # [random offsets (0/1), epoch] in shared memory: mode and epoch changes reach running workers
        self._state = torch.tensor([int(split == "train" if random_offset is None else random_offset), 0],
                                   dtype=torch.int64).share_memory_()
        videos = self.decoder.metadata.videos
        self.video_ids = [v.index for v in videos if split == "all" or v.split == split]
        if not self.video_ids:
            raise ValueError(f"{self.path}: the archive holds no {split!r} videos "
                             f"(its subset is {self.decoder.metadata.subset!r}); use split='all' "
                             "or build the archive with the videos you need")
        self.classes: list[str] = list(self.decoder.metadata.classes)
        self.labels: list[int] = [videos[i].label for i in self.video_ids]

    @property
    def random_offset(self) -> bool:
        return bool(self._state[0])

    @property
    def epoch(self) -> int:
        return int(self._state[1])

    def train(self, mode: bool = True) -> "NVRDataset":
        """Random TSN offsets (training) or segment centres (evaluation), as TSM samples."""
        self._state[0] = int(mode)
        return self

    def eval(self) -> "NVRDataset":
        return self.train(False)

    def set_epoch(self, epoch: int) -> None:
        """New random offsets for each epoch, reproducibly (call before iterating, as with DistributedSampler)."""
        self._state[1] = int(epoch)

    def __len__(self) -> int:
        return len(self.video_ids)

    def frame_indices(self, index: int) -> np.ndarray:
        """The frames clip ``index`` takes from its video (random in training mode, seeded by
        (seed, epoch, index))."""
        random_offset = self.random_offset
        rng = np.random.default_rng((self.seed, self.epoch, index)) if random_offset else None
        num_frames = self.decoder.metadata.videos[self.video_ids[index]].num_frames
        return sample_indices(self.sampling, num_frames, self.num_segments, self.frames_per_segment,
                              random_offset, rng)

    def request(self, index: int) -> tuple[int, np.ndarray]:
        """What clip ``index`` needs decoded: (archive video, frame indices)."""
        return self.video_ids[index], self.frame_indices(index)

    def decode_items(self, indices: list[int], requests: list[tuple[int, np.ndarray]]) -> list[tuple[Any, ...]]:
        """The items of clips ``indices`` from their requests, decoded together (one forward pass)."""
        clips = self.decoder.get_frames_batch(requests)
        out = []
        for i, (video, idx), clip in zip(indices, requests, clips):
            if self.output == "float":
                clip = clip.float().div_(255)
            if self.transform is not None:
                clip = self.transform(clip)
            if self.return_info:
                info = {"video_name": self.decoder.metadata.videos[video].name, "video_index": video,
                        "frame_indices": torch.as_tensor(idx)}
                out.append((clip, self.labels[i], info))
            else:
                out.append((clip, self.labels[i]))
        return out

    def __getitems__(self, indices: list[int]) -> list[tuple[Any, ...]]:
        return self.decode_items(indices, [self.request(i) for i in indices])

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} clips")
        return self.__getitems__([index % len(self)])[0]

    def __repr__(self) -> str:
        return (f"NVRDataset({str(self.path)!r}, codec={self.codec!r}, split={self.split!r}, clips={len(self)}, "
                f"sampling={self.sampling!r}, segments={self.num_segments}x{self.frames_per_segment}, "
                f"device={str(self.device)!r})")


def pad_collate(batch: list[tuple[Any, ...]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DataLoader collate for clips of different lengths (``sampling="all"``): ``(clips [B, T_max, ...]
    zero-padded after each clip's end, lengths [B], labels [B])``."""
    clips = [item[0] for item in batch]
    lengths = torch.tensor([len(c) for c in clips])
    padded = clips[0].new_zeros((len(clips), int(lengths.max()), *clips[0].shape[1:]))
    for row, clip in zip(padded, clips):
        row[:len(clip)] = clip
    return padded, lengths, torch.tensor([item[1] for item in batch])
