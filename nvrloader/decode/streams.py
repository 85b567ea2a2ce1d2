"""H.264 / H.265: one bitstream per video, decoded by FFmpeg through PyAV."""
from __future__ import annotations

import numpy as np

from nvrloader.decode.base import WholeVideoDecoder, register_decoder, video_key
from nvrloader.video import decode_bytes

DECODERS = {"h264": "h264", "h265": "hevc"}   # FFmpeg's decoder of each codec: nothing else is opened


@register_decoder(*DECODERS)
class StreamDecoder(WholeVideoDecoder):
    def decode_video(self, video: int) -> np.ndarray:
        with self.archive.decoding(f"streams/{video_key(video)}"):
            return decode_bytes(self.archive.get("streams", video_key(video)),
                                num_frames=self.meta["videos"][video]["num_frames"],
                                size=(self.meta["height"], self.meta["width"]), codec=DECODERS[self.archive.codec])
