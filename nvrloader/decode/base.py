"""The decoder interface and its registry: one decoder class per codec name, found from an archive.

Decoders read payloads and meta only; nothing here knows how the archive was built.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, ClassVar, Sequence

import numpy as np
import torch

from nvrloader.archive import Archive, ArchiveError
from nvrloader.meta_schema import video_key


class Decoder(ABC):
    """Reads one archive's payloads back into frames on a device."""

    def __init__(self, archive: Archive, device: torch.device, half: bool = False) -> None:
        if half and device.type != "cuda":
            raise ValueError("fp16 decoding needs a CUDA device (half=True)")
        self.archive = archive
        self.device = device
        self.half = half
        self.meta = archive.meta
        self.config: dict[str, Any] = archive.meta.get("codec_config", {})

    @abstractmethod
    def decode(self, requests: Sequence[tuple[int, np.ndarray]]) -> list[torch.Tensor]:
        """Decode a whole batch at once: (video index, frame indices) -> uint8 [T, 3, H, W] each."""


_DECODERS: dict[str, type[Decoder]] = {}


def register_decoder(*names: str) -> Callable[[type[Decoder]], type[Decoder]]:
    """Class decorator: ``cls`` decodes archives written by the codecs ``names``."""

    def wrap(cls: type[Decoder]) -> type[Decoder]:
        for name in names:
            if name in _DECODERS:
                raise ValueError(f"decoder for codec {name!r} registered twice")
            _DECODERS[name] = cls
        return cls

    return wrap


def decoder_names() -> list[str]:
    return list(_DECODERS)


def open_decoder(archive: Archive, device: torch.device | str = "cpu", half: bool = False) -> Decoder:
    """The decoder of whatever codec ``archive`` holds; ``half`` runs neural decoders in fp16 (CUDA)."""
    if archive.codec not in _DECODERS:
        raise ArchiveError(f"{archive.path}: codec {archive.codec!r} is not known to this nvrloader "
                           f"(known: {', '.join(_DECODERS)})")
    return _DECODERS[archive.codec](archive, torch.device(device), half)


class WholeVideoDecoder(Decoder):
    """For codecs whose unit of decoding is a whole video (raw frames, H.264/H.265 bitstreams).

    A batch usually asks several clips of few videos, and TSN sampling touches most frames of a
    short video, so each needed video is decoded once per batch and kept in a small LRU cache.
    """

    cache_size: ClassVar[int] = 16

    def __init__(self, archive: Archive, device: torch.device, half: bool = False) -> None:
        super().__init__(archive, device, half)  # frames are uint8 already: half changes nothing here
        self._cache: dict[int, torch.Tensor] = {}

    @abstractmethod
    def decode_video(self, video: int) -> np.ndarray:
        """Every frame of one video: uint8 [T, H, W, 3]."""

    def _video(self, video: int) -> torch.Tensor:
        if video in self._cache:
            self._cache[video] = self._cache.pop(video)  # most recently used goes last
        else:
            frames = torch.from_numpy(np.ascontiguousarray(self.decode_video(video)))
            self._cache[video] = frames.permute(0, 3, 1, 2).to(self.device)
            while len(self._cache) > self.cache_size:
                self._cache.pop(next(iter(self._cache)))
        return self._cache[video]

    def decode(self, requests: Sequence[tuple[int, np.ndarray]]) -> list[torch.Tensor]:
        out = []
        for video, idx in requests:
            frames = self._video(int(video))
            out.append(frames[torch.as_tensor(np.asarray(idx), dtype=torch.long, device=frames.device)])
        return out
