"""Video writing through PyAV: frames to a file or an in-memory stream (the build side only).

Kept apart from `nvrloader.video` so that loading an archive never imports an encoder.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from nvrloader.annexb import strip_user_data
from nvrloader.video import VideoError

# Reproducible builds (encoder options by encoder; also used for D-NeRV's HEVC keyframes): with
# PyAV's bundled encoders the same frames and options decoded to different pixels from run to run
# (x264: 6 of 12 synthetic videos, up to 21 levels apart; x265: 6 of 12). x264 is bit-identical
# without its assembly (same rate-distortion: crf 24/32/40 on 24 videos, bytes
# within 1%, equal PSNR; 2-3x the encoding time). x265 needed no assembly, one thread and fixed
# B-frame placement (adaptive placement was the remaining source: 1 of 36 encodes differed with
# it on, 0 of 36 off; on the same 24 videos its rate-distortion is within 0.2 dB of the default).
# Decoding is unaffected. Stored bare, equal inputs give byte-identical streams, with one known
# exception: x265 reads uninitialised memory at 64x80 with its 64-pixel CTUs (the same encode under
# different MALLOC_PERTURB_ fills differed in 10 of the 72 sample videos at crf 30, 1 at crf 51;
# none at 48x64, 128x160, 256x320). ctu=32 removes it (0 of 72) but at 256x320 costs 1.7% more bytes
# and 0.07-0.19 dB (crf 30/40), so it is not set.
REPRODUCIBLE = {"libx264": {"x264-params": "no-asm=1"},
                "libx265": {"x265-params": "pools=none:frame-threads=1:lookahead-slices=0:asm=0:b-adapt=0"}}
BARE_STREAMS = {"libx264": "h264", "libx265": "hevc"}  # encoder -> the decoder of its elementary stream


def _encoder_options(codec: str, options: dict | None) -> dict[str, str]:
    """Stringify options; libx265 prints its banner and per-frame stats unless told not to."""
    opts = {str(k): str(v) for k, v in (options or {}).items()}
    if codec == "libx265":
        params = [p for p in opts.get("x265-params", "").split(":") if p and not p.startswith("log-level=")]
        opts["x265-params"] = ":".join(params + ["log-level=error"])
    return opts


def _rate(fps: float) -> Fraction:
    return Fraction(fps).limit_denominator(1001)


def _encoded(encode: Callable[[av.VideoFrame | None], list[av.Packet]], frames: np.ndarray) -> Iterator[av.Packet]:
    """Packets of ``frames`` (frame i at pts i), flushed: encoders with lookahead hold back the last frames."""
    for i, rgb in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts = i
        yield from encode(frame)
    yield from encode(None)


def _mux(container, frames: np.ndarray, fps: float, codec: str, options: dict | None,
         codec_tag: str | None, pix_fmt: str) -> None:
    stream = container.add_stream(codec, rate=_rate(fps))
    stream.height, stream.width = frames.shape[1:3]
    stream.pix_fmt = pix_fmt
    if codec_tag is not None:
        stream.codec_context.codec_tag = codec_tag
    stream.options = _encoder_options(codec, options)
    for packet in _encoded(stream.encode, frames):
        container.mux(packet)


def _check_frames(frames: np.ndarray, pix_fmt: str) -> None:
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"frames must be non-empty uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    if pix_fmt.startswith("yuv420") and (frames.shape[1] % 2 or frames.shape[2] % 2):
        raise ValueError(f"{pix_fmt} needs an even height and width, got {frames.shape[1]}x{frames.shape[2]}")


def write_video(path: str | Path, frames: np.ndarray, fps: float, codec: str = "libx264",
                options: dict | None = None, codec_tag: str | None = None, pix_fmt: str = "yuv420p") -> None:
    """Encode uint8 [T, H, W, 3] frames to a file; the container follows the file extension.

    The file is written under a temporary name beside the target and renamed when complete.
    """
    path = Path(path)
    _check_frames(frames, pix_fmt)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.partial{path.suffix}")
    try:
        with av.open(str(tmp), "w") as container:
            _mux(container, frames, fps, codec, options, codec_tag, pix_fmt)
        os.replace(tmp, path)
    except (av.FFmpegError, OSError, ValueError) as e:
        raise VideoError(f"{path}: writing with {codec} failed ({e})") from e
    finally:
        tmp.unlink(missing_ok=True)


def encode_frames(frames: np.ndarray, fps: float, codec: str, options: dict[str, str]) -> bytes:
    """Encode frames (as yuv420p) into a bare elementary stream: the encoder's packets end to end,
    no container. The frame rate goes to the encoder only (an archive keeps it in its meta).

    H.264 and H.265 come out as Annex-B with their parameter sets in band, without the user-data
    SEI in which x264 describes itself (~700 bytes a stream, and the same pixels without it).
    """
    _check_frames(frames, "yuv420p")
    try:
        ctx = av.CodecContext.create(codec, "w")
        ctx.height, ctx.width = frames.shape[1:3]
        ctx.pix_fmt = "yuv420p"
        ctx.framerate = _rate(fps)
        ctx.time_base = 1 / ctx.framerate
        ctx.options = _encoder_options(codec, options)
        data = b"".join(bytes(packet) for packet in _encoded(ctx.encode, frames))
    except (av.FFmpegError, ValueError) as e:
        raise VideoError(f"<in-memory {codec} stream>: encoding failed ({e})") from e
    return strip_user_data(data, BARE_STREAMS[codec]) if codec in BARE_STREAMS else data
