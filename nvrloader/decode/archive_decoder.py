"""`ArchiveDecoder`: frames of any archive by (video, frame indices), in the manner of torchcodec's
`VideoDecoder`. It needs nothing from the build side: an archive and a device are enough.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from nvrloader.archive import Archive, open_archive
from nvrloader.decode.base import DecodeOptions, Decoder, open_decoder
from nvrloader.decode.runtime import configure_worker_threads, tune_malloc
from nvrloader.decode.stats import DecodeStats
from nvrloader.device import resolve_device


@dataclass(frozen=True)
class VideoMetadata:
    index: int
    name: str
    class_name: str
    label: int
    split: str
    num_frames: int


@dataclass(frozen=True)
class ArchiveMetadata:
    """What an archive says about its frames: enough to compare two archives or sample clips."""

    codec: str
    height: int
    width: int
    fps: float
    classes: tuple[str, ...]
    videos: tuple[VideoMetadata, ...]
    resize_mode: str
    subset: str
    split: int

    @classmethod
    def from_meta(cls, codec: str, meta: dict[str, Any]) -> "ArchiveMetadata":
        videos = tuple(VideoMetadata(i, str(v["name"]), str(v.get("class_name", "")), int(v["label"]),
                                     str(v.get("split", "")), int(v["num_frames"]))
                       for i, v in enumerate(meta["videos"]))
        return cls(codec, int(meta["height"]), int(meta["width"]), float(meta["fps"]),
                   tuple(meta.get("classes", ())), videos, str(meta.get("resize_mode", "stretch")),
                   str(meta.get("subset", "all")), int(meta.get("split", 1)))

    @property
    def num_frames(self) -> int:
        return sum(v.num_frames for v in self.videos)

    def differences(self, other: "ArchiveMetadata") -> list[str]:
        """Why two archives' frames are not comparable (empty when they are): a codec comparison
        needs the same videos, frame counts, fps, frame size and resize mode."""
        found = []
        for what, a, b in (("fps", self.fps, other.fps), ("resolution", (self.height, self.width),
                           (other.height, other.width)), ("resize mode", self.resize_mode, other.resize_mode),
                           ("classes", self.classes, other.classes)):
            if a != b:
                found.append(f"{what} {a} vs {b}")
        names, other_names = [v.name for v in self.videos], [v.name for v in other.videos]
        if names != other_names:
            found.append(f"video lists differ ({len(names)} vs {len(other_names)} videos, "
                         f"{len(set(names) ^ set(other_names))} names in only one)")
        elif [v.num_frames for v in self.videos] != [v.num_frames for v in other.videos]:
            found.append("frame counts differ")
        return found


class ArchiveDecoder:
    """Decodes frames of an ``.nvr`` archive, whatever codec it holds.

    ``get_frames(video, indices)`` returns uint8 ``[N, 3, H, W]`` on ``device``;
    ``get_frames_batch`` decodes many requests at once (one forward pass for neural codecs). The
    object can be pickled into DataLoader workers: each process opens its own file handle and
    builds its own decoder on first use, with ``options.worker_threads`` torch threads in a worker.
    ``half=True`` runs neural decoders in fp16 (CUDA only); ``options`` holds the other settings.
    ``stats`` counts requests, frames delivered and frames decoded, summed over worker processes.
    """

    def __init__(self, path: str | os.PathLike, device: str | torch.device = "auto", half: bool = False,
                 options: DecodeOptions | None = None) -> None:
        self.device = resolve_device(device)
        self.options = options or DecodeOptions()
        self.half = half or self.options.half
        if self.half and self.device.type != "cuda":
            raise ValueError(f"fp16 decoding needs a CUDA device (half=True), got device={str(self.device)!r}")
        self.stats = DecodeStats()
        self.archive: Archive = open_archive(path)
        self.path = self.archive.path
        self.metadata = ArchiveMetadata.from_meta(self.archive.codec, self.archive.meta)
        self._decoder: Decoder | None = None
        self._pid: int | None = None

    @property
    def num_videos(self) -> int:
        return len(self.metadata.videos)

    @property
    def codec(self) -> str:
        return self.metadata.codec

    def _codec_decoder(self) -> Decoder:
        if self._decoder is None or self._pid != os.getpid():
            configure_worker_threads(self.options.worker_threads)
            if self.options.tune_malloc and self.device.type == "cpu":
                tune_malloc()
            self._decoder = open_decoder(self.archive, self.device, self.half, self.options, self.stats)
            self._pid = os.getpid()
        return self._decoder

    def _checked(self, video: int, indices: Sequence[int] | np.ndarray | None) -> tuple[int, np.ndarray]:
        if not 0 <= int(video) < self.num_videos:
            raise IndexError(f"video {video} out of range: {self.path} holds {self.num_videos} videos")
        n = self.metadata.videos[int(video)].num_frames
        idx = np.arange(n) if indices is None else np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f"frame indices {idx.min()}..{idx.max()} out of range for video {video} "
                             f"({self.metadata.videos[int(video)].name}, {n} frames)")
        return int(video), idx

    def _decode(self, requests: list[tuple[int, np.ndarray]]) -> list[torch.Tensor]:
        decoder = self._codec_decoder()
        self.stats.note_threads()
        return decoder.decode(requests)

    def get_frames_batch(self, requests: Sequence[tuple[int, Sequence[int] | np.ndarray | None]]
                         ) -> list[torch.Tensor]:
        """uint8 [N_i, 3, H, W] for each (video, frame indices) request; indices None means every frame."""
        checked = [self._checked(v, idx) for v, idx in requests]
        asked = [r for r in checked if len(r[1])]   # requests for no frame need no decoder
        names = ", ".join(self.metadata.videos[v].name for v, _ in checked[:4])
        with self.archive.decoding(f"of videos {names}"):   # whatever a damaged payload makes a library raise
            decoded = iter(self._decode(asked) if asked else [])
            self.stats.add(requests=len(checked), frames_delivered=sum(len(idx) for _, idx in checked))
            m = self.metadata
            return [next(decoded) if len(idx) else torch.empty((0, 3, m.height, m.width), dtype=torch.uint8,
                                                                device=self.device) for _, idx in checked]

    def get_frames(self, video: int, indices: Sequence[int] | np.ndarray | None = None) -> torch.Tensor:
        """uint8 [N, 3, H, W]: frames ``indices`` (default: all) of video ``video``."""
        return self.get_frames_batch([(video, indices)])[0]

    def __getstate__(self) -> dict[str, Any]:
        # decoders hold device tensors and the HDF5 handle belongs to this process
        return {**self.__dict__, "_decoder": None, "_pid": None}

    def close(self) -> None:
        self._decoder = None
        self.archive.close()

    def __enter__(self) -> "ArchiveDecoder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        m = self.metadata
        return (f"ArchiveDecoder({str(self.path)!r}, codec={m.codec!r}, videos={self.num_videos}, "
                f"{m.height}x{m.width}@{m.fps:g}fps, device={str(self.device)!r})")
