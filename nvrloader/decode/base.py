"""The decoder interface and its registry: one decoder class per codec name, found from an archive.

Decoders read payloads and meta only; nothing here knows how the archive was built.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from typing import Any, Callable, ClassVar, Sequence

import numpy as np
import torch

from nvrloader.archive import Archive, ArchiveError
from nvrloader.decode.runtime import host_to_device
from nvrloader.decode.stats import DecodeStats
from nvrloader.meta_schema import video_key


@dataclass(frozen=True)
class DecodeOptions:
    """How a decoder runs; each decoder uses the options that concern it (neural ones use them all).

    ``half``: fp16 weights and activations (CUDA only). ``cache_mb``: per-process budget for decoded
    side information kept across requests (D-NeRV keyframe pyramids; 0 keeps nothing).
    ``channels_last``: NHWC convolutions; None picks them on CUDA only (on CPU D-NeRV decoded 0.86x
    as fast with them). ``chunk_pixels``: activation pixels per forward pass; None means the whole
    batch at once on CUDA and ``CPU_CHUNK_PIXELS`` on CPU, where activations that stay in cache
    decoded D-NeRV 1.06x faster than one pass (D-NeRV runs its coarse scales for the whole batch and
    splits from the first scale past the budget). ``tune_malloc``: on CPU, have glibc keep freed memory for
    reuse in every decoding process (`runtime.tune_malloc`; D-NeRV 1.5x, no more system time).
    ``worker_threads``: torch intra-op threads in each DataLoader worker that decodes (the main
    process keeps its own setting); raise it when there are more cores than workers.
    ``keyframes_as_frames``: D-NeRV delivers a requested keyframe as decoded, without the network
    (`layouts.ClipLayout`); None follows the archive, whose build chose it by measured PSNR.
    ``compile``: a `torch.compile` backend for the network's decode methods (e.g. "inductor" on a
    GPU); None (the default) runs eagerly. Never required: on this project's CPU measurements
    compiling was slower (README, *Loading*).
    """

    CPU_CHUNK_PIXELS: ClassVar[int] = 16 * 64 * 80

    half: bool = False
    cache_mb: float = 256.0
    channels_last: bool | None = None
    chunk_pixels: int | None = None
    tune_malloc: bool = True
    worker_threads: int = 1
    keyframes_as_frames: bool | None = None
    compile: str | None = None

    def use_channels_last(self, device: torch.device) -> bool:
        return device.type == "cuda" if self.channels_last is None else self.channels_last

    def use_keyframes_as_frames(self, archive_choice: bool) -> bool:
        return archive_choice if self.keyframes_as_frames is None else self.keyframes_as_frames

    def chunk_frames(self, device: torch.device, height: int, width: int) -> int | None:
        """Frames per forward pass at this resolution (None: the whole batch)."""
        pixels = self.chunk_pixels if self.chunk_pixels is not None else (
            None if device.type == "cuda" else self.CPU_CHUNK_PIXELS)
        return None if pixels is None else max(1, pixels // (height * width))


class Decoder(ABC):
    """Reads one archive's payloads back into frames on a device, counting its work in ``stats``."""

    def __init__(self, archive: Archive, device: torch.device, options: DecodeOptions | None = None,
                 stats: DecodeStats | None = None) -> None:
        self.options = options or DecodeOptions()
        if self.options.half and device.type != "cuda":
            raise ValueError("fp16 decoding needs a CUDA device (half=True)")
        self.archive = archive
        self.device = device
        self.half = self.options.half
        self.stats = stats or DecodeStats()
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


def open_decoder(archive: Archive, device: torch.device | str = "cpu", half: bool = False,
                 options: DecodeOptions | None = None, stats: DecodeStats | None = None) -> Decoder:
    """The decoder of whatever codec ``archive`` holds; ``half`` (or ``options.half``) runs neural
    decoders in fp16 (CUDA)."""
    if archive.codec not in _DECODERS:
        raise ArchiveError(f"{archive.path}: codec {archive.codec!r} is not known to this nvrloader "
                           f"(known: {', '.join(_DECODERS)})")
    options = options or DecodeOptions()
    if half and not options.half:
        options = replace(options, half=True)
    return _DECODERS[archive.codec](archive, torch.device(device), options, stats)


class WholeVideoDecoder(Decoder):
    """For codecs whose unit of decoding is a whole video (raw frames, H.264/H.265 bitstreams).

    A batch usually asks several clips of few videos, and TSN sampling touches most frames of a
    short video, so each needed video is decoded once per batch and kept in a small LRU cache.
    """

    cache_size: ClassVar[int] = 16

    def __init__(self, archive: Archive, device: torch.device, options: DecodeOptions | None = None,
                 stats: DecodeStats | None = None) -> None:
        super().__init__(archive, device, options, stats)  # frames are uint8 already: half changes nothing
        self._cache: dict[int, torch.Tensor] = {}

    @abstractmethod
    def decode_video(self, video: int) -> np.ndarray:
        """Every frame of one video: uint8 [T, H, W, 3]."""

    def _video(self, video: int) -> torch.Tensor:
        if video in self._cache:
            self._cache[video] = self._cache.pop(video)  # most recently used goes last
        else:
            frames = host_to_device(np.ascontiguousarray(self.decode_video(video)), self.device)
            self.stats.add(frames_decoded=len(frames))
            self._cache[video] = frames.permute(0, 3, 1, 2)
            while len(self._cache) > self.cache_size:
                self._cache.pop(next(iter(self._cache)))
        return self._cache[video]

    def decode(self, requests: Sequence[tuple[int, np.ndarray]]) -> list[torch.Tensor]:
        out = []
        for video, idx in requests:
            frames = self._video(int(video))
            out.append(frames[torch.as_tensor(np.asarray(idx), dtype=torch.long, device=frames.device)])
        return out
