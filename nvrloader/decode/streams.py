"""H.264 / H.265: one bitstream per video, decoded by FFmpeg through PyAV."""
from __future__ import annotations

import numpy as np

from nvrloader.archive import ArchiveError
from nvrloader.decode.base import WholeVideoDecoder, register_decoder, video_key
from nvrloader.video import decode_bytes


@register_decoder("h264", "h265")
class StreamDecoder(WholeVideoDecoder):
    def decode_video(self, video: int) -> np.ndarray:
        frames = decode_bytes(self.archive.get("streams", video_key(video)))
        expected = self.meta["videos"][video]["num_frames"]
        if len(frames) != expected:
            raise ArchiveError(f"{self.archive.path}: stream {video_key(video)} decodes to {len(frames)} "
                               f"frames, meta says {expected}")
        return frames
