"""H.264 and H.265 through PyAV: one bitstream per video, one rate setting for the whole dataset.

The papers' baselines use a single CRF for every video, so a target bpp is met by searching that
one value rather than rate-controlling each video.
"""
from __future__ import annotations

import argparse
import math
from typing import Any, Callable

import numpy as np
import torch
from tqdm import tqdm

from nvrloader.archive import ArchiveWriter
from nvrloader.codecs.base import Codec, CodecError, WholeVideoDecoder, register_codec
from nvrloader.codecs.raw import video_key
from nvrloader.framestore import FrameStore
from nvrloader.metrics import bpp
from nvrloader.video import decode_bytes, encode_frames

ENCODERS = {"h264": "libx264", "h265": "libx265"}
DECODERS = {"h264": "h264", "h265": "hevc"}  # the only FFmpeg decoder an archive's streams may reach
CRF_RANGE = (0.0, 51.0)


def search_rate(measure: Callable[[float], float], target: float, lo: float, hi: float,
                tolerance: float, max_steps: int = 14) -> tuple[float, float]:
    """Bisect a rate parameter (bpp monotone in it, either way); return (parameter, bpp) closest to target.

    Raises CodecError when the target lies outside what the parameter range reaches.
    """
    ends = ((lo, measure(lo)), (hi, measure(hi)))
    (p_min, bpp_min), (p_max, bpp_max) = sorted(ends, key=lambda pb: pb[1])
    if target > bpp_max * (1 + tolerance):
        raise CodecError(f"target {target:.5g} bpp is above the highest rate reachable ({bpp_max:.5g} bpp at {p_max:g})")
    if target < bpp_min * (1 - tolerance):
        raise CodecError(f"target {target:.5g} bpp is below the lowest rate reachable ({bpp_min:.5g} bpp at {p_min:g})")
    best = min(ends, key=lambda pb: abs(math.log(pb[1] / target)))
    for _ in range(max_steps):
        if abs(best[1] / target - 1) <= tolerance:
            break
        mid = (p_min + p_max) / 2
        got = measure(mid)
        best = min((best, (mid, got)), key=lambda pb: abs(math.log(pb[1] / target)))
        p_min, p_max = (p_min, mid) if got > target else (mid, p_max)
    return best


class StreamDecoder(WholeVideoDecoder):
    def decode_video(self, video: int) -> np.ndarray:
        with self.archive.decoding(f"streams/{video_key(video)}"):
            return decode_bytes(self.archive.get("streams", video_key(video)),
                                num_frames=self.meta["videos"][video]["num_frames"],
                                size=(self.meta["height"], self.meta["width"]), codec=DECODERS[self.archive.codec])


@register_codec
class ClassicalCodec(Codec):
    names = tuple(ENCODERS)
    decoder = StreamDecoder

    @classmethod
    def add_arguments(cls, group: argparse._ArgumentGroup) -> None:
        group.add_argument("--crf", type=float, help="H.264/H.265 constant rate factor (default 23, or searched "
                           "for --target-bpp)")
        group.add_argument("--preset", help="x264/x265 preset (default medium)")
        group.add_argument("--gop", type=int, help="keyframe interval in frames (default: the whole video)")

    def _options(self, crf: float, preset: str, gop: int | None, num_frames: int) -> dict[str, str]:
        opts = {"crf": f"{crf:.3f}", "preset": preset, "g": str(gop or max(1, num_frames))}
        if self.name == "h265":
            opts["x265-params"] = f"log-level=error:info=0:keyint={opts['g']}"  # no 2 KB version SEI
        return opts

    def _encode_all(self, store: FrameStore, video_ids: list[int], crf: float, preset: str,
                    gop: int | None, desc: str) -> list[bytes]:
        streams = []
        for vid in tqdm(video_ids, desc=desc, unit="video", leave=False):
            frames = store.frames(vid)
            streams.append(encode_frames(frames, store.fps or 25.0, ENCODERS[self.name],
                                         self._options(crf, preset, gop, len(frames))))
        return streams

    def encode(self, store: FrameStore, video_ids: list[int], writer: ArchiveWriter,
               options: dict[str, Any], device: torch.device, meta_bytes: int) -> dict[str, Any]:
        preset = options.get("preset") or "medium"
        gop = options.get("gop")
        target = options.get("target_bpp")
        if target is not None and options.get("crf") is not None:
            raise CodecError("give either --crf or --target-bpp, not both")
        pixels = sum(store.num_frames(v) for v in video_ids) * store.height * store.width
        cache: dict[float, list[bytes]] = {}

        def measure(crf: float) -> float:
            cache[crf] = self._encode_all(store, video_ids, crf, preset, gop, f"{self.name} crf {crf:.2f}")
            return bpp(sum(map(len, cache[crf])) + meta_bytes, pixels, 1, 1)

        extras: dict[str, Any] = {}
        if target is not None:
            crf, got = search_rate(measure, target, *CRF_RANGE, tolerance=0.02)
            extras = {"target_bpp": target, "searched_bpp": got}
        else:
            crf = float(options.get("crf") if options.get("crf") is not None else 23.0)
            measure(crf)
        for i, data in enumerate(cache[crf]):
            writer.put("streams", video_key(i), data)
        return {"encoder": ENCODERS[self.name], "crf": round(crf, 3), "preset": preset,
                "gop": gop or "whole video", "pix_fmt": "yuv420p", **extras}
