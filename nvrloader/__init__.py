"""nvrloader: a video dataset as one neural archive, loaded back as a PyTorch Dataset.

Importing the package loads only the decode side (`NVRDataset`, `ArchiveDecoder`); the build side
(`build_archive`) is imported on first use, so a training node never imports an encoder.
"""
from typing import Any

from nvrloader.archive import ArchiveError, open_archive
from nvrloader.dataset import NVRDataset
from nvrloader.decode import ArchiveDecoder, ArchiveMetadata

__all__ = ["ArchiveDecoder", "ArchiveError", "ArchiveMetadata", "NVRDataset", "build_archive", "open_archive"]


def __getattr__(name: str) -> Any:
    if name == "build_archive":
        from nvrloader.build import build_archive
        return build_archive
    raise AttributeError(f"module 'nvrloader' has no attribute {name!r}")
