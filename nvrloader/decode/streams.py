"""H.264 / H.265: one bare Annex-B stream per video, decoded by FFmpeg's own decoder through PyAV."""
from __future__ import annotations

import numpy as np
import torch

from nvrloader.archive import Archive, ArchiveError
from nvrloader.decode.base import DecodeOptions, WholeVideoDecoder, register_decoder, video_key
from nvrloader.decode.stats import DecodeStats
from nvrloader.video import decode_bytes

DECODERS = {"h264": "h264", "h265": "hevc"}   # FFmpeg's decoder of each codec: nothing else is opened
BARE_STREAMS_SINCE = 2  # archive version; version 1 stored Matroska files, which no decoder here demuxes


@register_decoder(*DECODERS)
class StreamDecoder(WholeVideoDecoder):
    def __init__(self, archive: Archive, device: torch.device, options: DecodeOptions | None = None,
                 stats: DecodeStats | None = None) -> None:
        if archive.version < BARE_STREAMS_SINCE:
            raise ArchiveError(f"{archive.path}: its {archive.codec} streams are in Matroska, as archive version "
                               f"{archive.version} stored them: built by an older nvrloader; rebuild it")
        super().__init__(archive, device, options, stats)

    def decode_video(self, video: int) -> np.ndarray:
        with self.archive.decoding(f"streams/{video_key(video)}"):
            return decode_bytes(self.archive.get("streams", video_key(video)), DECODERS[self.archive.codec],
                                num_frames=self.meta["videos"][video]["num_frames"],
                                size=(self.meta["height"], self.meta["width"]))
