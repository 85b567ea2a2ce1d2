"""Raw frames: the quality upper bound and the speed reference every other codec is measured against."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from nvrloader.archive import ArchiveWriter
from nvrloader.codecs.base import Codec, WholeVideoDecoder, register_codec
from nvrloader.framestore import FrameStore
from nvrloader.meta_schema import video_key  # the archive format names per-video payloads


class RawDecoder(WholeVideoDecoder):
    def decode_video(self, video: int) -> np.ndarray:
        return self.archive.get("frames", video_key(video))


@register_codec
class RawCodec(Codec):
    names = ("raw",)
    decoder = RawDecoder

    def encode(self, store: FrameStore, video_ids: list[int], writer: ArchiveWriter,
               options: dict[str, Any], device: torch.device, meta_bytes: int) -> dict[str, Any]:
        for i, vid in enumerate(tqdm(video_ids, desc="raw: storing frames", unit="video")):
            writer.put("frames", video_key(i), store.frames(vid))
        return {}
