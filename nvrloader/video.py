"""Video reading through PyAV: decode to uint8 RGB, resample to a target fps, resize (writing: `video_encode`).

Every failure inside FFmpeg surfaces as a `VideoError` whose message starts with the file (or
in-memory stream) it concerns, so a dataset build can name the bad video and move on.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from PIL import Image

RESIZE_MODES = ("stretch", "crop")
_EPS = 1e-6  # seconds; absorbs float error when a frame time equals a target time


class VideoError(RuntimeError):
    """A video could not be read or written; the message starts with the path."""


class _UnreliableTimestamps(Exception):
    """Presentation timestamps are missing or not increasing (e.g. AVI with B-frames)."""


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float
    num_frames: int
    codec: str
    duration: float


@contextmanager
def _open(path: Path) -> Iterator[tuple[av.container.InputContainer, av.video.stream.VideoStream]]:
    """Open a container and its first video stream, turning FFmpeg errors into VideoError."""
    if not path.is_file():
        raise VideoError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: file is empty")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise VideoError(f"{path}: cannot open as a video ({e})") from e
    try:
        if not container.streams.video:
            raise VideoError(f"{path}: contains no video stream")
        yield container, container.streams.video[0]
    finally:
        container.close()


def _stream_rate(stream: av.video.stream.VideoStream) -> float | None:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else None


def probe(path: str | Path) -> VideoInfo:
    """Header information; counts packets only when the container does not store a frame count."""
    path = Path(path)
    with _open(path) as (container, stream):
        rate = _stream_rate(stream) or 0.0
        num_frames = stream.frames
        try:
            if num_frames <= 0:
                num_frames = sum(1 for p in container.demux(stream) if p.size > 0)
        except av.FFmpegError as e:
            raise VideoError(f"{path}: cannot read packets ({e})") from e
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            duration = num_frames / rate if rate else 0.0
        return VideoInfo(width=stream.codec_context.width, height=stream.codec_context.height, fps=rate,
                         num_frames=int(num_frames), codec=stream.codec_context.name, duration=duration)


def _decoded(container, stream, path: Path) -> Iterator[av.VideoFrame]:
    """Decoded frames in presentation order; a file that ends well short of the frame count in
    its header is reported as truncated (a few missing frames are tolerated: headers can be off)."""
    count = 0
    try:
        for frame in container.decode(stream):
            count += 1
            yield frame
    except av.FFmpegError as e:
        raise VideoError(f"{path}: decoding failed after {count} frames ({e})") from e
    if count == 0:
        raise VideoError(f"{path}: no decodable video frames")
    announced = stream.frames
    if announced > 0 and announced - count > max(2, 0.05 * announced):
        raise VideoError(f"{path}: truncated or damaged, decoded {count} of the {announced} frames in its header")


def _stamped(frames: Iterable[av.VideoFrame], rate: float | None, use_pts: bool,
             path: Path) -> Iterator[tuple[float, av.VideoFrame]]:
    """Attach a presentation time (seconds from the first frame) to each decoded frame.

    With `use_pts` the container's timestamps are used (correct for variable frame rate), and
    `_UnreliableTimestamps` is raised at the first missing or non-increasing one; otherwise frame i
    is placed at i / rate, which is exact for constant-rate containers such as AVI.
    """
    start = previous = None
    for i, frame in enumerate(frames):
        if use_pts:
            if frame.pts is None or frame.time_base is None:
                raise _UnreliableTimestamps
            t = float(frame.pts * frame.time_base)
            if previous is not None and t <= previous:
                raise _UnreliableTimestamps
            start = t if start is None else start
            previous = t
            yield t - start, frame
        else:
            if not rate:
                raise VideoError(f"{path}: no usable timestamps and no frame rate, cannot resample")
            yield i / rate, frame


def _select(stamped: Iterable[tuple[float, av.VideoFrame]], fps: float,
            period: float | None) -> Iterator[av.VideoFrame]:
    """For each target time k / fps, yield the latest frame whose time is <= it.

    The clip is taken to last until the final frame's time plus one frame period, so a clip of
    D seconds yields ceil(D * fps) frames; target rates above the source rate repeat frames.
    """
    k, prev, prev_t, step = 0, None, 0.0, period
    for t, frame in stamped:
        while prev is not None and k / fps < t - _EPS:
            yield prev
            k += 1
        if prev is not None and step is None:
            step = t - prev_t
        prev, prev_t = frame, t
    if prev is None:
        return
    end = prev_t + (step if step else 1.0 / fps)
    while k / fps < end - _EPS:
        yield prev
        k += 1


def _decode(path: Path, fps: float | None, size: tuple[int, int] | None, resize_mode: str,
            use_pts: bool) -> np.ndarray:
    with _open(path) as (container, stream):
        rate = _stream_rate(stream)
        frames: Iterable[av.VideoFrame] = _decoded(container, stream, path)
        if fps is not None:
            frames = _select(_stamped(frames, rate, use_pts, path), fps, 1.0 / rate if rate else None)
        out: list[np.ndarray] = []
        source, rgb = None, None
        for frame in frames:
            if frame is not source:  # resampling repeats a frame: convert it once
                source = frame
                rgb = frame.to_ndarray(format="rgb24")
                if size is not None:
                    rgb = resize_frames(rgb[None], size, resize_mode)[0]
            out.append(rgb)
    if len({f.shape for f in out}) > 1:
        raise VideoError(f"{path}: frame size changes within the video; pass size= to resize every frame")
    return np.stack(out)


def read_video(path: str | Path, fps: float | None = None, size: tuple[int, int] | None = None,
               resize_mode: str = "stretch") -> np.ndarray:
    """Decode a whole video to uint8 RGB [T, H, W, 3].

    fps=None keeps every frame. Otherwise frames are resampled by presentation time: for each
    target time k / fps the latest source frame shown at or before it is taken. When a container's
    timestamps cannot be trusted (missing, or out of order as in AVI files with B-frames) the
    frames are placed at i / frame_rate instead. size=(H, W) resizes with antialiasing.
    """
    path = Path(path)
    if fps is not None and not fps > 0:
        raise ValueError(f"fps must be positive or None, got {fps}")
    _check_size(size, resize_mode)
    try:
        return _decode(path, fps, size, resize_mode, use_pts=True)
    except _UnreliableTimestamps:
        return _decode(path, fps, size, resize_mode, use_pts=False)


def _check_size(size: tuple[int, int] | None, mode: str) -> None:
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {mode!r}")
    if size is not None and (len(size) != 2 or min(size) <= 0):
        raise ValueError(f"size must be (height, width) with positive entries, got {size}")


def resize_frames(frames: np.ndarray, size: tuple[int, int], mode: str = "stretch") -> np.ndarray:
    """Resize uint8 [T, H, W, 3] frames to size=(H, W) with Pillow's bilinear filter.

    Pillow widens the triangle filter by the scale factor when shrinking, so downscaling is
    antialiased (as torchvision's antialiased bilinear resize), and upscaling is plain bilinear.

    "stretch" ignores the aspect ratio; "crop" keeps it: the largest centred region with the target
    aspect ratio is cut out and resized, i.e. a short-side resize followed by a centre crop.
    """
    _check_size(size, mode)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    out_h, out_w = size
    h, w = frames.shape[1:3]
    if mode == "crop":
        scale = max(out_h / h, out_w / w)
        crop_h, crop_w = min(h, round(out_h / scale)), min(w, round(out_w / scale))
        top, left = (h - crop_h) // 2, (w - crop_w) // 2
        frames = frames[:, top:top + crop_h, left:left + crop_w]
    if frames.shape[1:3] == (out_h, out_w):
        return np.ascontiguousarray(frames)
    out = np.empty((len(frames), out_h, out_w, 3), dtype=np.uint8)
    for i, frame in enumerate(frames):
        out[i] = Image.fromarray(np.ascontiguousarray(frame)).resize((out_w, out_h), Image.Resampling.BILINEAR)
    return out


def _pixel_bound(size: tuple[int, int]) -> int:
    """FFmpeg's ``max_pixels`` for pictures of ``size``: what it checks is the coded size (a few
    macroblocks or CTBs over, and its width aligned for SIMD), so allow 128 more in each dimension;
    a stream declaring far larger pictures is refused before its buffers are allocated."""
    return (size[0] + 128) * (size[1] + 128)


def decode_bytes(data: bytes, codec: str, num_frames: int | None = None,
                 size: tuple[int, int] | None = None,
                 to_rgb: Callable[[av.VideoFrame], np.ndarray] | None = None) -> np.ndarray:
    """Decode every frame of a bare elementary stream (the inverse of `encode_frames`).

    ``codec`` is the FFmpeg decoder ("h264", "hevc"): its parser splits the bytes into packets and
    only that decoder sees them, with no demuxer and no format probing. For an untrusted stream,
    ``num_frames`` and ``size`` (H, W) are what it must decode to: decoding stops with a VideoError
    at the first frame past ``num_frames`` or of another size, and pictures much larger than
    ``size`` are refused before FFmpeg allocates them. ``to_rgb`` converts a decoded picture
    (default: FFmpeg's rgb24 conversion).
    """
    name = f"<in-memory {codec} stream of {len(data)} bytes>"
    frames = []
    try:
        ctx = av.CodecContext.create(codec, "r")
        if size is not None:
            ctx.options = {"max_pixels": str(_pixel_bound(size))}
        for packet in [*ctx.parse(data), *ctx.parse(None), None]:  # parse(None) and decode(None) flush
            for frame in ctx.decode(packet):
                if num_frames is not None and len(frames) == num_frames:
                    raise VideoError(f"{name}: holds more than the expected {num_frames} frames")
                if size is not None and (frame.height, frame.width) != tuple(size):
                    raise VideoError(f"{name}: has {frame.height}x{frame.width} frames, expected {size[0]}x{size[1]}")
                frames.append(frame.to_ndarray(format="rgb24") if to_rgb is None else to_rgb(frame))
    except (av.FFmpegError, OSError) as e:
        raise VideoError(f"{name}: cannot decode ({e})") from e
    if not frames:
        raise VideoError(f"{name}: no decodable video frames")
    if num_frames is not None and len(frames) != num_frames:
        raise VideoError(f"{name}: decodes to {len(frames)} frames, expected {num_frames}")
    return np.stack(frames)
