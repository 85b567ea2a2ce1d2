"""Raw frames: the quality upper bound and the speed reference every other codec is measured against."""
from __future__ import annotations

from typing import Any

from tqdm import tqdm

from nvrloader.codecs.base import Codec, EncodeJob, register_codec
from nvrloader.decode.base import video_key


@register_codec
class RawCodec(Codec):
    names = ("raw",)
    rate_controlled = False

    def encode(self, job: EncodeJob) -> dict[str, Any]:
        for i, vid in enumerate(tqdm(job.video_ids, desc="raw: storing frames", unit="video",
                                     disable=not job.progress)):
            job.writer.put("frames", video_key(i), job.store.frames(vid))
        return {}
