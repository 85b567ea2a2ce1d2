"""nvrloader: a video dataset as one neural archive, loaded back as a PyTorch Dataset.

Names are imported on first use: `NVRDataset` and `ArchiveDecoder` load only the decode side, and
`build_archive` the build side, so a training node never imports an encoder and the commands'
``--help`` answers without importing torch.
"""
from importlib import import_module
from typing import Any

_EXPORTS = {"ArchiveDecoder": "nvrloader.decode", "ArchiveMetadata": "nvrloader.decode",
            "ArchiveError": "nvrloader.archive", "open_archive": "nvrloader.archive",
            "NVRDataset": "nvrloader.dataset", "build_archive": "nvrloader.build"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'nvrloader' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
