"""nvrloader: a video dataset as one neural archive, loaded back as a PyTorch Dataset."""
from nvrloader.archive import ArchiveError, open_archive
from nvrloader.dataset import NVRDataset

__all__ = ["ArchiveError", "NVRDataset", "open_archive"]
