"""H.264/H.265 stored as bare Annex-B streams: same pixels as in Matroska, reproducible bytes, a lower
floor, and the x264 info SEI dropped without touching other SEI (nvrloader.annexb, video_encode)."""
from __future__ import annotations

import numpy as np
import pytest

from nvrloader.annexb import nal_units, strip_user_data
from nvrloader.codecs.classical import ClassicalCodec
from nvrloader.codecs.options import StreamOptions
from nvrloader.video import VideoError, decode_bytes, read_video
from nvrloader.video_encode import BARE_STREAMS, encode_frames, write_video

ENCODERS = {"h264": "libx264", "h265": "libx265"}


def gradient(n: int = 8, h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    """Moving gradients with a little noise: cheap to encode, yet every frame differs."""
    y, x = np.mgrid[0:h, 0:w]
    t = np.arange(n)[:, None, None]
    base = np.stack([x * 3 + t * 7 + 0 * y, y * 3 + 0 * t, (x + y + t * 5) * 2], axis=-1)
    noise = np.random.default_rng(seed).integers(0, 8, base.shape)
    return ((base + noise) % 256).astype(np.uint8)


def build_options(codec: str, crf: float, num_frames: int) -> dict[str, str]:
    """Exactly the encoder options an archive build uses (deterministic settings included)."""
    return ClassicalCodec(codec)._encoder_options(crf, StreamOptions(), num_frames)


@pytest.mark.parametrize("codec", ["h264", "h265"])
def test_bare_stream_decodes_like_matroska(codec, tmp_path):
    """The same encode muxed into Matroska (the old archive payload) gives the same pixels."""
    frames = gradient()
    options = build_options(codec, 30, len(frames))
    bare = encode_frames(frames, 2.0, ENCODERS[codec], options)
    write_video(tmp_path / "old.mkv", frames, 2.0, ENCODERS[codec], options)
    assert bare.startswith(b"\x00\x00\x00\x01") and b"Matroska" not in bare and b"x264 - core" not in bare
    ours = decode_bytes(bare, BARE_STREAMS[ENCODERS[codec]], num_frames=len(frames), size=frames.shape[1:3])
    np.testing.assert_array_equal(ours, read_video(tmp_path / "old.mkv"))
    assert 25 < 10 * np.log10(255 ** 2 / np.mean((ours.astype(float) - frames) ** 2)) < 60


@pytest.mark.parametrize("codec", ["h264", "h265"])
def test_bare_streams_are_byte_identical_for_equal_inputs(codec):
    frames = gradient(seed=1)
    options = build_options(codec, 28, len(frames))
    streams = {encode_frames(frames.copy(), 2.0, ENCODERS[codec], dict(options)) for _ in range(3)}
    assert len(streams) == 1
    assert encode_frames(gradient(seed=2), 2.0, ENCODERS[codec], options) not in streams  # inputs matter


@pytest.mark.parametrize("codec", ["h264", "h265"])
def test_crf51_floor_is_lower_than_in_matroska(codec, tmp_path):
    frames = gradient(n=6, h=32, w=48)
    options = build_options(codec, 51, len(frames))
    bare = encode_frames(frames, 2.0, ENCODERS[codec], options)
    write_video(tmp_path / "old.mkv", frames, 2.0, ENCODERS[codec], options)
    old = (tmp_path / "old.mkv").stat().st_size
    saved = {"h264": 700, "h265": 150}[codec]   # x264's info SEI and the container; the container alone
    assert len(bare) <= old - saved, (len(bare), old)


def test_decoder_refuses_pictures_far_larger_than_expected_before_decoding_them():
    big = encode_frames(np.repeat(np.repeat(gradient(n=3), 4, axis=1), 4, axis=2), 2.0, "libx264", {"g": "3"})
    assert decode_bytes(big, "h264").shape == (3, 192, 256, 3)
    with pytest.raises(VideoError, match="cannot decode") as err:  # FFmpeg's max_pixels, not the size check
        decode_bytes(big, "h264", num_frames=3, size=(48, 64))
    assert "192x256" not in str(err.value)


def test_decoder_refuses_a_matroska_file(tmp_path):
    """What a version-1 archive stored: the bare decoder has no demuxer to read it."""
    frames = gradient(n=4)
    write_video(tmp_path / "old.mkv", frames, 2.0, "libx264", build_options("h264", 30, len(frames)))
    with pytest.raises(VideoError):
        decode_bytes((tmp_path / "old.mkv").read_bytes(), "h264", num_frames=4, size=(48, 64))


# -- SEI surgery on hand-made streams --------------------------------------------------------------
def sei(*messages: tuple[int, bytes], codec: str = "h264") -> bytes:
    """An SEI NAL unit (with start code) holding ``messages`` (payload type, payload)."""
    body = bytearray()
    for kind, payload in messages:
        for value in (kind, len(payload)):
            body += b"\xff" * (value // 255) + bytes([value % 255])
        body += payload
    body += b"\x80"
    escaped = body.replace(b"\x00\x00", b"\x00\x00\x03")  # emulation prevention (enough for these payloads)
    header = b"\x06" if codec == "h264" else bytes([39 << 1, 1])
    return b"\x00\x00\x00\x01" + header + bytes(escaped)


SPS, SLICE = b"\x00\x00\x00\x01\x67\x42\x00\x0a\xf8", b"\x00\x00\x01\x65\x88\x84\x00\x00\x03\x01\x21"
HEVC_SLICE = b"\x00\x00\x01\x26\x01\xaf\x00\x00\x03\x02"


def test_strip_user_data_drops_only_user_data_sei():
    info = sei((5, b"\x00" * 16 + b"x264 - core 164 - options: " + b"\x00\x00\x01" * 3 + b"a" * 300))
    timing = sei((1, b"\x12\x34"))
    mixed = sei((5, b"u" * 20), (6, b"\x80\x00"))
    stream = SPS + info + timing + mixed + SLICE
    assert strip_user_data(stream, "h264") == SPS + timing + mixed + SLICE
    assert [stream[h] & 0x1F for _, h, _ in nal_units(stream)] == [7, 6, 6, 6, 5]
    hevc = sei((5, b"v" * 40), codec="hevc") + HEVC_SLICE
    assert strip_user_data(hevc, "hevc") == HEVC_SLICE
    assert strip_user_data(hevc, "h264") == hevc        # header byte 0x4e is no H.264 SEI
    broken = sei((5, b"u" * 20))[:-10]                 # a size running past the unit: kept, not guessed at
    assert strip_user_data(SPS + broken + SLICE, "h264") == SPS + broken + SLICE
