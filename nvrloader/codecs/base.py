"""The encoder interface: each codec family writes archive payloads from a frame store.

Encoders are the build side; their decoders live in `nvrloader.decode` and never import them,
in the manner of CompressAI's encode/decode pairs.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from importlib import import_module
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


ENCODER_MODULES = ("nvrloader.codecs.raw", "nvrloader.codecs.classical", "nvrloader.codecs.neural")


def _registered() -> dict[str, type[Codec]]:
    for module in ENCODER_MODULES:   # each registers its codecs on first import
        import_module(module)
    return _CODECS


def codec_names() -> list[str]:
    return list(_registered())


def get_codec(name: str) -> Codec:
    codecs = _registered()
    if name not in codecs:
        raise ValueError(f"unknown codec {name!r}; known: {', '.join(codecs)}")
    return codecs[name](name)
