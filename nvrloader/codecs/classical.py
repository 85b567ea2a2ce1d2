"""H.264 and H.265 through PyAV: one bitstream per video, one rate setting for the whole dataset.

Each video is stored as a bare Annex-B stream (no container, no encoder-info SEI): every stored
byte is one the decoder needs, as for the neural codecs, so low-rate comparisons are fair.

The papers' baselines use a single CRF for every video, so a target bpp is met by searching that
one value rather than rate-controlling each video.
"""
from __future__ import annotations

from typing import Any

from tqdm import tqdm

from nvrloader.codecs.base import Codec, CodecError, EncodeJob, register_codec
from nvrloader.codecs.options import STREAM_CODECS, StreamOptions
from nvrloader.decode.base import video_key
from nvrloader.rate import RateError, search_rate
from nvrloader.video_encode import REPRODUCIBLE, encode_frames

ENCODERS = dict(zip(STREAM_CODECS, ("libx264", "libx265")))
CRF_RANGE = (0.0, 51.0)
DEFAULT_CRF = 23.0


@register_codec
class ClassicalCodec(Codec):
    names = tuple(ENCODERS)

    def _encoder_options(self, crf: float, opts: StreamOptions, num_frames: int) -> dict[str, str]:
        params = {"crf": f"{crf:.3f}", "preset": opts.preset, "g": str(opts.gop or max(1, num_frames)),
                  **REPRODUCIBLE[ENCODERS[self.name]]}
        if self.name == "h265":  # info=0: no 2 KB version SEI
            params["x265-params"] = f"log-level=error:info=0:keyint={params['g']}:{params['x265-params']}"
        return params

    def _encode_all(self, job: EncodeJob, crf: float) -> list[bytes]:
        streams = []
        for vid in tqdm(job.video_ids, desc=f"{self.name} crf {crf:.2f}", unit="video", leave=False,
                        disable=not job.progress):
            frames = job.store.frames(vid)
            streams.append(encode_frames(frames, job.store.fps or 25.0, ENCODERS[self.name],
                                         self._encoder_options(crf, job.options, len(frames))))
        return streams

    def _config(self, crf: float, opts: StreamOptions) -> dict[str, Any]:
        return {"encoder": ENCODERS[self.name], "crf": round(crf, 3), "preset": opts.preset,
                "gop": opts.gop or "whole video", "pix_fmt": "yuv420p"}

    def encode(self, job: EncodeJob) -> dict[str, Any]:
        opts: StreamOptions = job.options
        target = job.budget.target_bpp
        if target is not None and opts.crf is not None:
            raise CodecError("give either a crf or a target bpp, not both")
        cache: dict[float, list[bytes]] = {}

        def measure(crf: float) -> float:
            cache[crf] = self._encode_all(job, crf)
            return job.budget.bpp(sum(map(len, cache[crf])), self._config(crf, opts))

        report: dict[str, Any] = {}
        if target is not None:
            try:
                crf, got = search_rate(measure, target, *CRF_RANGE, tolerance=0.02)
            except RateError as err:
                raise CodecError(f"{self.name}: {err}") from None
            report = {"target_bpp": target, "searched_bpp": got}
        else:
            crf = DEFAULT_CRF if opts.crf is None else float(opts.crf)
            measure(crf)
        for i, data in enumerate(cache[crf]):
            job.writer.put("streams", video_key(i), data)
        return {**self._config(crf, opts), "report": report}
