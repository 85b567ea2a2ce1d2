"""Raw frames: stored as uint8 arrays, read back as they are."""
from __future__ import annotations

import numpy as np

from nvrloader.decode.base import WholeVideoDecoder, register_decoder, video_key


@register_decoder("raw")
class RawDecoder(WholeVideoDecoder):
    def decode_video(self, video: int) -> np.ndarray:
        return self.archive.get("frames", video_key(video))
