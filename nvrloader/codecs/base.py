"""The encoder interface: each codec family writes archive payloads from a frame store.

Encoders are the build side; their decoders live in `nvrloader.decode` and never import them,
in the manner of CompressAI's encode/decode pairs.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from nvrloader.archive import ArchiveWriter
from nvrloader.codecs.options import CodecOptions
from nvrloader.framestore import FrameStore
from nvrloader.rate import Budget


class CodecError(RuntimeError):
    """An encode that cannot be done as asked (e.g. a target bpp no setting can reach)."""


@dataclass
class EncodeJob:
    """Everything one encode needs. ``writer`` is None on torchrun ranks other than 0 (only for
    ``distributed`` codecs): those do the shared work and write nothing."""

    store: FrameStore
    video_ids: list[int]
    writer: ArchiveWriter | None
    options: CodecOptions
    budget: Budget
    device: torch.device
    checkpoint_dir: Path | None = None
    resume: bool = False
    progress: bool = True


class Codec(ABC):
    """Encoder side of a codec family; ``names`` may register one class under several names."""

    names: ClassVar[tuple[str, ...]]
    distributed: ClassVar[bool] = False  # encode() can share its work across torchrun processes
    rate_controlled: ClassVar[bool] = True  # a target bpp can be met (raw frames have no rate setting)

    def __init__(self, name: str) -> None:
        self.name = name

    @classmethod
    @abstractmethod
    def options_class(cls, name: str) -> type[CodecOptions]:
        """The options dataclass of codec ``name``."""

    def validate(self, options: CodecOptions, resolution: tuple[int, int]) -> None:
        """Refuse options that cannot work at this frame size, before any frame is decoded or coded."""

    @abstractmethod
    def encode(self, job: EncodeJob) -> dict[str, Any]:
        """Write the payloads; return the codec config (stored in meta), with report extras under "report"."""


_CODECS: dict[str, type[Codec]] = {}


def register_codec(cls: type[Codec]) -> type[Codec]:
    for name in cls.names:
        if name in _CODECS:
            raise ValueError(f"codec {name!r} registered twice")
        _CODECS[name] = cls
    return cls


def codec_names() -> list[str]:
    return list(_CODECS)


def codec_options() -> dict[str, type[CodecOptions]]:
    """Each codec name with its options dataclass."""
    return {name: cls.options_class(name) for name, cls in _CODECS.items()}


def get_codec(name: str) -> Codec:
    if name not in _CODECS:
        raise ValueError(f"unknown codec {name!r}; known: {', '.join(_CODECS)}")
    return _CODECS[name](name)
