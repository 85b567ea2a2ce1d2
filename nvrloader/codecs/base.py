"""The codec interface: an encoder that writes archive payloads and a decoder that reads them back.

Every codec, classical or neural, is an encode/decode pair in the manner of CompressAI, so the
build, `NVRDataset`, eval and bench never need to know which one an archive holds.
"""
from __future__ import annotations

import argparse
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Sequence

import numpy as np
import torch

from nvrloader.archive import Archive, ArchiveWriter
from nvrloader.framestore import FrameStore


class CodecError(RuntimeError):
    """An encode that cannot be done as asked (e.g. a target bpp no setting can reach)."""


class Decoder(ABC):
    """Reads one archive's payloads back into frames on a device."""

    def __init__(self, archive: Archive, device: torch.device, half: bool = False) -> None:
        if half and device.type != "cuda":
            raise ValueError("fp16 decoding needs a CUDA device")
        self.archive = archive
        self.device = device
        self.half = half
        self.meta = archive.meta
        self.config: dict[str, Any] = archive.meta.get("codec_config", {})

    @abstractmethod
    def decode(self, requests: Sequence[tuple[int, np.ndarray]]) -> list[torch.Tensor]:
        """Decode a whole batch at once: (video index, frame indices) -> uint8 [T, 3, H, W] each."""


class Codec(ABC):
    """Encoder side of a codec family; ``names`` may register one class under several names."""

    names: ClassVar[tuple[str, ...]]
    decoder: ClassVar[type[Decoder]]
    distributed: ClassVar[bool] = False  # encode() can share its work across torchrun processes


    def __init__(self, name: str) -> None:
        self.name = name

    @classmethod
    def add_arguments(cls, group: argparse._ArgumentGroup) -> None:
        """Declare the command-line options this codec understands (defaults must be None)."""

    @abstractmethod
    def encode(self, store: FrameStore, video_ids: list[int], writer: ArchiveWriter | None,
               options: dict[str, Any], device: torch.device, meta_bytes: int) -> dict[str, Any]:
        """Write the payloads of ``video_ids``; return the codec config (stored in meta) and report extras.

        ``meta_bytes`` is the size of the archive's meta without the codec config, so a codec that
        searches for a target bpp can count everything the archive will hold. ``writer`` is None on
        torchrun ranks other than 0 (only for ``distributed`` codecs): do the shared work, write nothing.
        """


_CODECS: dict[str, type[Codec]] = {}


def register_codec(cls: type[Codec]) -> type[Codec]:
    for name in cls.names:
        if name in _CODECS:
            raise ValueError(f"codec {name!r} registered twice")
        _CODECS[name] = cls
    return cls


def codec_names() -> list[str]:
    return list(_CODECS)


def codec_classes() -> list[type[Codec]]:
    return list(dict.fromkeys(_CODECS.values()))


def get_codec(name: str) -> Codec:
    if name not in _CODECS:
        raise ValueError(f"unknown codec {name!r}; known: {', '.join(_CODECS)}")
    return _CODECS[name](name)


def open_decoder(archive: Archive, device: torch.device | str = "cpu", half: bool = False) -> Decoder:
    """The decoder of whatever codec ``archive`` holds; ``half`` runs neural decoders in fp16 (CUDA)."""
    if archive.codec not in _CODECS:
        from nvrloader.archive import ArchiveError
        raise ArchiveError(f"{archive.path}: codec {archive.codec!r} is not known to this nvrloader "
                           f"(known: {', '.join(_CODECS)})")
    return _CODECS[archive.codec].decoder(archive, torch.device(device), half)


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
