"""D-NeRV keyframe codecs: one image at a time, or a video's keyframes as one stream.

Image codecs code each keyframe as self-contained bytes, packed per video (`pack_images`);
sequence codecs (``hevc-seq``, ``av1-seq``) code a video's keyframes as one bare bitstream: one
sequence header and inter prediction between consecutive keyframes, decoded all at once
(`encode_keyframes` / `decode_keyframes` take either kind).

- ``avif``: AV1 still image through Pillow (libaom). Carries a ~300-byte ISOBMFF
  container, which matters only for very small images.
- ``hevc``: one HEVC intra frame through PyAV/libx265, stored as a bare Annex-B bitstream (no
  container; x265's informational SEI is switched off, it would cost ~2 KB per image).
- ``av1``: one AV1 key frame through PyAV/SVT-AV1, stored as a bare OBU stream.
- ``png``: lossless, for experiments.
- ``hevc-seq`` / ``av1-seq``: the same encoders over the whole sequence, one group of pictures,
  with the same quality map, chroma and limits as ``hevc`` / ``av1``.

Streams against images, bytes at equal keyframe PSNR (BD-rate, `python -m nvrloader.study keyframes`,
64x80, README): HEVC -16% (synthetic sample set, 2 fps, 3 keyframes a video), -23% / -33% (real
clips at 2 / 4 fps); AV1 +3%, -18%, -30%. HEVC 4:4:4 streams are the best coding above about
0.1-0.15 keyframe bits per frame pixel on real clips and at every rate on the synthetic set (where
4:2:0 AV1 tops out near 30 dB); AV1 streams are best below that (and their header is smaller).

Encoder settings (same measurement, BD-rate of the stream codings): x265 ``preset=slow`` with
``ctu=32`` (-8% synthetic, -3% real against medium / 64-pixel CTUs; 32-pixel CTUs also keep x265
from reading uninitialised memory at 64x80: 4 of 48 keyframe streams differed between runs before,
none after) plus the classical baseline's reproducible settings; SVT-AV1 ``preset=4`` (-12% synthetic,
-14% real against preset 8, at about the same time at 64x80; preset 2 gains another 7-10% at more
time). SVT-AV1's output was byte-identical across runs and ``MALLOC_PERTURB_`` fills as is.

``quality`` is 0..100, higher is better, for every lossy codec: AVIF passes it to libavif, the
video codecs map it linearly onto their CRF range (``crf = round((100 - quality) * max_crf / 100)``,
max_crf 51 for HEVC, 63 for AV1 -- the same linear map libavif applies to AV1 quantisers).

Chroma: 4:4:4 by default where supported. Measured on four real frames (UCF101/Kinetics) at equal
bytes: AVIF 4:4:4 is never worse than 4:2:0 (+0.0..0.4 dB at 256x320, +0.1..1.0 dB at 64x80);
HEVC 4:2:0 wins below about 3 KB at 256x320 (+0.4 dB at 1.7 KB), 4:4:4 above (+1.5 dB at 15 KB)
and at 64x80 from about 600 B. 4:2:0 also caps quality through chroma resampling alone (41.7 dB at
256x320, 35.3 dB at 64x80). SVT-AV1 only encodes 4:2:0, so ``av1`` uses 4:2:0. Pass
``subsampling`` to override.

The AVIF container costs about 300 bytes per image, so for small keyframes (well under 1 KB) the
bare ``hevc``/``av1`` bitstreams are much better at equal bytes (64x80, ~450 B: AVIF 23.8 dB, HEVC
27.2 dB, AV1 27.7 dB).

Size limits: ``hevc`` needs both sides >= 16 px, and even sides for 4:2:0; ``av1`` needs both
sides >= 4 px (odd sides are fine); ``avif`` and ``png`` take any size.

Decoding treats its input as untrusted (it comes from an archive): Pillow may only use the stored
codec's own format (an EPS keyframe would otherwise start Ghostscript, BMP bytes labelled avif
would decode), the image size is checked against the expected one before pixels are decoded, and
any failure of the image libraries becomes a ValueError.
"""
from __future__ import annotations

import io
import os
from fractions import Fraction
from typing import Sequence

import av
import numpy as np
from PIL import Image
from tqdm import tqdm

from nvrloader.video import decode_bytes

os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints a banner per encoder unless told errors only

CODECS = ("avif", "hevc", "av1", "png")        # one image at a time
SEQUENCE_SUFFIX = "-seq"
SEQUENCE_CODECS = ("hevc-seq", "av1-seq")      # a video's keyframes as one stream
KEYFRAME_CODECS = CODECS + SEQUENCE_CODECS
SUBSAMPLINGS = ("4:2:0", "4:4:4")
DEFAULT_SUBSAMPLING = {"avif": "4:4:4", "hevc": "4:4:4", "av1": "4:2:0", "png": "4:4:4"}
# Quality settings that change the output, for rate searches (png is lossless: one setting).
QUALITY_RANGE = {"avif": (0, 100), "hevc": (0, 100), "av1": (0, 100), "png": (100, 100),
                 "hevc-seq": (0, 100), "av1-seq": (0, 100)}

# PyAV encoder, decoder, highest CRF, smallest side, supported chroma, extra encoder options
# (x265: the classical baseline's reproducible settings are added when encoding).
_VIDEO = {
    "hevc": ("libx265", "hevc", 51, 16, SUBSAMPLINGS, {"preset": "slow", "x265-params": "log-level=error:info=0:ctu=32"}),
    "av1": ("libsvtav1", "libdav1d", 63, 4, ("4:2:0",), {"preset": "4"}),
}
_PIX_FMT = {"4:2:0": "yuv420p", "4:4:4": "yuv444p"}
_PILLOW_FORMATS = {"avif": ("AVIF",), "png": ("PNG",)}  # the only formats Image.open may try per codec
MAX_IMAGES = 1 << 20  # image streams in one packed payload
_YUV = {"src_colorspace": "ITU601", "src_color_range": "MPEG", "interpolation": "AREA"}


def _check_frame(frame: np.ndarray) -> np.ndarray:
    arr = np.asarray(frame)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected a uint8 [H, W, 3] RGB frame, got {arr.dtype} {arr.shape}")
    return np.ascontiguousarray(arr)


def _resolve(codec: str, quality: int, subsampling: str | None) -> str:
    if codec not in CODECS:
        raise ValueError(f"unknown image codec {codec!r}; choose from {', '.join(CODECS)}")
    if not 0 <= quality <= 100:
        raise ValueError(f"quality must be in 0..100, got {quality}")
    subsampling = subsampling or DEFAULT_SUBSAMPLING[codec]
    if subsampling not in SUBSAMPLINGS:
        raise ValueError(f"subsampling must be one of {SUBSAMPLINGS}, got {subsampling!r}")
    return subsampling


def is_sequence(codec: str) -> bool:
    """True for a codec that codes a video's keyframes as one stream."""
    return codec in SEQUENCE_CODECS


def _video_codec(codec: str) -> str:
    """The image codec whose encoder and decoder a sequence codec uses (itself for an image codec)."""
    return codec.removesuffix(SEQUENCE_SUFFIX)


def _encode_video(frames: np.ndarray, codec: str, quality: int, subsampling: str) -> bytes:
    """uint8 [N, H, W, 3] frames as one bare bitstream in a single group of pictures: N = 1 is an
    intra image, N > 1 a sequence with inter prediction between consecutive frames."""
    from nvrloader.video_encode import REPRODUCIBLE  # the build side only: decoding imports no encoder

    encoder, _, max_crf, min_side, chroma, options = _VIDEO[codec]
    height, width = frames.shape[1:3]
    if subsampling not in chroma:
        raise ValueError(f"{codec} ({encoder}) supports only {', '.join(chroma)} chroma, not {subsampling}")
    if min(height, width) < min_side:
        raise ValueError(f"{codec} ({encoder}) needs both sides >= {min_side} px, got {height}x{width}")
    if subsampling == "4:2:0" and codec == "hevc" and (height % 2 or width % 2):
        raise ValueError(f"hevc 4:2:0 needs even sides, got {height}x{width}; use subsampling='4:4:4'")
    pix_fmt = _PIX_FMT[subsampling]
    ctx = av.CodecContext.create(encoder, "w")
    ctx.width, ctx.height, ctx.pix_fmt = width, height, pix_fmt
    ctx.time_base = Fraction(1, 25)
    ctx.gop_size = len(frames)  # one intra frame, the rest predicted
    reproducible = REPRODUCIBLE.get(encoder, {})  # x265's join its own params
    params = {k: ":".join(filter(None, (v, reproducible.get(k)))) for k, v in options.items()}
    ctx.options = {"crf": str(round((100 - quality) * max_crf / 100)), **params}
    packets = []
    for i, frame in enumerate(frames):
        yuv = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(
            format=pix_fmt, dst_colorspace="ITU601", dst_color_range="MPEG", interpolation="AREA")
        yuv.pts = i
        packets += ctx.encode(yuv)
    packets += ctx.encode(None)
    return b"".join(bytes(packet) for packet in packets)


def _to_rgb(frame: av.VideoFrame) -> np.ndarray:
    return frame.reformat(format="rgb24", **_YUV).to_ndarray()


def _decode_video(data: bytes, codec: str, count: int, size: tuple[int, int] | None) -> np.ndarray:
    """Every frame of a bare bitstream, which must hold exactly ``count`` of ``size``; the decoder
    stops at the first frame past ``count`` and refuses pictures much larger than ``size`` before
    allocating them."""
    return decode_bytes(data, _VIDEO[codec][1], num_frames=count, size=size, to_rgb=_to_rgb)


def _decode_pillow_image(data: bytes, codec: str, size: tuple[int, int] | None) -> np.ndarray:
    with Image.open(io.BytesIO(data), formats=list(_PILLOW_FORMATS[codec])) as image:
        if size is not None and image.size != (size[1], size[0]):
            raise ValueError(f"image is {image.size[1]}x{image.size[0]}, expected {size[0]}x{size[1]}")
        return np.asarray(image.convert("RGB"))


def encode_image(frame: np.ndarray, codec: str = "avif", quality: int = 50,
                 subsampling: str | None = None) -> bytes:
    """Compress one uint8 [H, W, 3] RGB frame; ``quality`` 0..100 (ignored by png)."""
    frame = _check_frame(frame)
    subsampling = _resolve(codec, quality, subsampling)
    if codec in _VIDEO:
        return _encode_video(frame[None], codec, quality, subsampling)
    buffer = io.BytesIO()
    if codec == "avif":
        Image.fromarray(frame).save(buffer, format="AVIF", quality=int(quality), subsampling=subsampling,
                                    max_threads=1)
    else:
        Image.fromarray(frame).save(buffer, format="PNG", compress_level=9)
    return buffer.getvalue()


def decode_image(data: bytes, codec: str, size: tuple[int, int] | None = None) -> np.ndarray:
    """Inverse of :func:`encode_image`: uint8 [H, W, 3] RGB; ``size`` (H, W), if given, must match."""
    if codec not in CODECS:
        raise ValueError(f"unknown image codec {codec!r}; choose from {', '.join(CODECS)}")
    try:
        if codec in _VIDEO:
            frame = _decode_video(data, codec, 1, size)[0]
        else:
            frame = _decode_pillow_image(data, codec, size)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - Pillow raises SyntaxError, struct.error, ...; PyAV its own
        raise ValueError(f"cannot decode {codec} image ({len(data)} bytes): {type(exc).__name__}: {exc}") from None
    if size is not None and frame.shape[:2] != tuple(size):
        raise ValueError(f"{codec} image is {frame.shape[0]}x{frame.shape[1]}, expected {size[0]}x{size[1]}")
    return frame


def encode_images(frames: np.ndarray, codec: str = "avif", quality: int = 50,
                  subsampling: str | None = None, progress: bool = False) -> list[bytes]:
    """Compress each frame of uint8 [N, H, W, 3] independently (keyframes are decoded one by one)."""
    return [encode_image(frame, codec, quality, subsampling)
            for frame in tqdm(frames, desc=f"{codec} keyframes", disable=not progress, leave=False)]


def decode_images(blobs: list[bytes], codec: str, size: tuple[int, int] | None = None) -> np.ndarray:
    """Inverse of :func:`encode_images`: uint8 [N, H, W, 3] (all frames must share one size)."""
    frames = [decode_image(blob, codec, size) for blob in blobs]
    if not frames:
        raise ValueError("decode_images needs at least one image")
    if len({frame.shape for frame in frames}) > 1:
        raise ValueError(f"{codec} images differ in size: {sorted({frame.shape[:2] for frame in frames})}")
    return np.stack(frames)


def pack_images(streams: Sequence[bytes]) -> bytes:
    """Several image bitstreams in one payload: a uint32 count and lengths, then the streams."""
    head = np.array([len(streams), *map(len, streams)], dtype="<u4").tobytes()
    return head + b"".join(streams)


def unpack_images(data: bytes, count: int | None = None) -> list[bytes]:
    """Inverse of :func:`pack_images`; the count (``count`` if the caller knows it) and the lengths
    must account for every byte, checked before anything is sliced."""
    if len(data) < 4:
        raise ValueError(f"packed images payload is {len(data)} bytes, shorter than its count")
    declared = int(np.frombuffer(data[:4], dtype="<u4")[0])
    if count is not None and declared != count:
        raise ValueError(f"packed images payload holds {declared} images, expected {count}")
    if declared > MAX_IMAGES or 4 + 4 * declared > len(data):
        raise ValueError(f"packed images payload declares {declared} images, too many for its {len(data)} bytes")
    lengths = np.frombuffer(data[4:4 + 4 * declared], dtype="<u4").astype(np.int64)
    head = 4 + 4 * declared
    if head + int(lengths.sum()) != len(data):
        raise ValueError(f"packed images payload lengths add up to {int(lengths.sum())} bytes, "
                         f"it holds {len(data) - head}")
    ends = head + np.cumsum(lengths)
    return [data[e - n:e] for e, n in zip(ends.tolist(), lengths.tolist())]


def encode_keyframes(frames: np.ndarray, codec: str, quality: int, subsampling: str | None = None) -> bytes:
    """A video's keyframes uint8 [K, H, W, 3] as one payload: packed images, or one stream."""
    if not is_sequence(codec):
        return pack_images(encode_images(frames, codec, quality, subsampling))
    if len(frames) == 0:
        raise ValueError("a keyframe sequence needs at least one frame")
    frames = np.stack([_check_frame(f) for f in frames])
    base = _video_codec(codec)
    return _encode_video(frames, base, quality, _resolve(base, quality, subsampling))


def decode_keyframes(data: bytes, codec: str, count: int, size: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`encode_keyframes` for an untrusted payload: exactly ``count`` frames of ``size``
    (H, W), uint8 [count, H, W, 3]; any problem is a ValueError."""
    if codec not in KEYFRAME_CODECS:
        raise ValueError(f"unknown keyframe codec {codec!r}; choose from {', '.join(KEYFRAME_CODECS)}")
    if not is_sequence(codec):
        return decode_images(unpack_images(data, count), codec, size)
    try:
        return _decode_video(data, _video_codec(codec), count, size)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - PyAV's own errors, VideoError
        raise ValueError(f"cannot decode {codec} keyframes ({len(data)} bytes): {type(exc).__name__}: {exc}") \
            from None
