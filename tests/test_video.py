"""Decoding, fps resampling, resizing, corrupt files and encode/decode round trips (nvrloader.video)."""
from __future__ import annotations

import math
from fractions import Fraction

import av
import numpy as np
import pytest

from nvrloader.metrics import psnr
from nvrloader.video import VideoError, decode_bytes, probe, read_video, resize_frames
from nvrloader.video_encode import encode_frames, write_video


def indexed_frames(n: int, h: int = 48, w: int = 64) -> np.ndarray:
    """Flat grey frames whose level encodes the frame index (survives lossy coding)."""
    return np.broadcast_to((20 + 8 * np.arange(n, dtype=np.uint8))[:, None, None, None], (n, h, w, 3)).copy()


def frame_indices(frames: np.ndarray) -> list[int]:
    return [round((f.mean() - 20) / 8) for f in frames]


def latest_at_or_before(times: np.ndarray, targets: np.ndarray) -> list[int]:
    return [int(np.searchsorted(times, t + 1e-9, side="right") - 1) for t in targets]


def synth_video(root):
    return sorted((root / "UCF-101").rglob("*.avi"))[0]


def test_synthetic_video_decodes_every_frame(synth_root):
    path = synth_video(synth_root)
    info = probe(path)
    frames = read_video(path)
    assert (info.width, info.height, info.fps, info.codec) == (320, 240, 25.0, "mpeg4")
    assert frames.dtype == np.uint8 and frames.shape == (info.num_frames, 240, 320, 3)
    assert info.duration == pytest.approx(info.num_frames / 25.0, abs=0.05)


@pytest.mark.parametrize("fps", [2, 5, 10, 50])
def test_fps_resampling_takes_latest_frame_by_time(synth_root, fps):
    path = synth_video(synth_root)
    full = read_video(path)
    out = read_video(path, fps=fps)
    n = len(full)
    assert len(out) == math.ceil(n / 25 * fps - 1e-9)        # duration * fps
    expected = latest_at_or_before(np.arange(n) / 25, np.arange(len(out)) / fps)
    np.testing.assert_array_equal(out, full[expected])


@pytest.mark.parametrize("suffix", [".avi", ".h264"])
def test_unusable_timestamps_fall_back_to_frame_rate(tmp_path, suffix):
    # H.264 with B-frames in AVI gives out-of-order timestamps (like real AVI files with B-frames);
    # a raw .h264 stream gives none at all
    path = tmp_path / f"bframes{suffix}"
    write_video(path, indexed_frames(25), 25, codec="libx264", options={"bf": "2", "crf": "10"})
    with av.open(str(path)) as c:
        pts = [f.pts for f in c.decode(video=0)]
    assert None in pts or pts != sorted(pts)                 # the case the fallback exists for
    assert frame_indices(read_video(path)) == list(range(25))
    assert frame_indices(read_video(path, fps=5)) == [0, 5, 10, 15, 20]


def test_variable_frame_rate_uses_timestamps(tmp_path):
    path = tmp_path / "vfr.mkv"
    times_ms = [0, 40, 300, 320, 700, 1100, 1150, 1600]
    with av.open(str(path), "w") as c:
        stream = c.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        stream.options = {"qmin": "1", "qmax": "2"}
        for i, (t, rgb) in enumerate(zip(times_ms, indexed_frames(len(times_ms)))):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = t, Fraction(1, 1000)
            c.mux(stream.encode(frame))
        c.mux(stream.encode(None))
    out = read_video(path, fps=10)
    targets = np.arange(16) / 10                             # 0.0 .. 1.5 s: inside the last frame's start
    assert len(out) >= 16
    assert frame_indices(out[:16]) == latest_at_or_before(np.array(times_ms) / 1000, targets)


def test_resize_stretch_and_crop_keep_the_right_content():
    frame = np.zeros((1, 240, 320, 3), np.uint8)
    frame[..., :40, 0] = 255                                 # red left band, outside a centred 4:3 -> 1:1 crop
    frame[..., 280:, 2] = 255                                # blue right band
    frame[..., 40:280, 1] = 255                              # green centre
    stretched = resize_frames(frame, (60, 80), "stretch")
    cropped = resize_frames(frame, (60, 60), "crop")
    assert stretched.shape == (1, 60, 80, 3) and cropped.shape == (1, 60, 60, 3)
    assert stretched[0, :, 0].tolist() == [[255, 0, 0]] * 60
    assert stretched[0, :, -1].tolist() == [[0, 0, 255]] * 60
    assert (cropped[..., 1] == 255).all() and (cropped[..., [0, 2]] == 0).all()


def test_downscale_is_antialiased():
    checker = (np.indices((96, 128)).sum(0) % 2 * 255).astype(np.uint8)
    frames = np.repeat(checker[None, ..., None], 3, axis=3)
    small = resize_frames(frames, (24, 32))
    assert np.abs(small.astype(float) - 127.5).max() < 3     # nearest/unfiltered would give 0 or 255


def test_read_video_size_matches_resize_frames(synth_root):
    path = synth_video(synth_root)
    for mode in ("stretch", "crop"):
        out = read_video(path, fps=5, size=(64, 64), resize_mode=mode)
        np.testing.assert_array_equal(out, resize_frames(read_video(path, fps=5), (64, 64), mode))


@pytest.mark.parametrize("name, fps, frames, size", [
    ("v_Basketball_g01_c01.avi", 30000 / 1001, 141, (240, 320)),  # UCF101 XviD
    ("eyemakeup_test.avi", 25, 164, (240, 320)),                  # MPEG-4 AVI with B-frames
    ("abseiling_k400.mp4", 25, 250, (256, 454)),                  # Kinetics H.264
])
def test_real_videos(real_videos, name, fps, frames, size):
    path = real_videos / name
    info = probe(path)
    assert (info.num_frames, (info.height, info.width)) == (frames, size)
    assert info.fps == pytest.approx(fps, rel=1e-4)
    full = read_video(path)
    assert full.shape == (frames, *size, 3)
    for mode in ("stretch", "crop"):
        out = read_video(path, fps=2, size=(120, 160), resize_mode=mode)
        assert out.shape == (math.ceil(frames / fps * 2), 120, 160, 3)
        expected = latest_at_or_before(np.arange(frames) / fps, np.arange(len(out)) / 2)
        np.testing.assert_array_equal(out, resize_frames(full[expected], (120, 160), mode))


@pytest.mark.parametrize("kind", ["empty", "garbage", "truncated"])
def test_corrupt_files_raise_video_error_naming_the_file(synth_root, tmp_path, kind):
    path = tmp_path / "broken.avi"
    good = synth_video(synth_root).read_bytes()
    path.write_bytes({"empty": b"", "garbage": b"not a video at all " * 200, "truncated": good[:len(good) // 2]}[kind])
    calls = [read_video, lambda p: read_video(p, fps=2, size=(32, 32))]
    if kind != "truncated":          # a truncated file still has a valid header
        calls.append(probe)
    for call in calls:
        with pytest.raises(VideoError) as err:
            call(path)
        assert str(err.value).startswith(str(path))


def test_missing_file_raises_video_error(tmp_path):
    with pytest.raises(VideoError, match="no such file"):
        read_video(tmp_path / "absent.mp4")


CODECS = [("libx264", {"crf": "18", "preset": "veryfast", "g": "4"}),
          ("libx265", {"crf": "18", "preset": "ultrafast", "g": "4"})]
DECODERS = {"libx264": "h264", "libx265": "hevc"}


def moving_gradient(n: int = 10, h: int = 64, w: int = 96) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    t = np.arange(n)[:, None, None]
    r = 128 + 100 * np.sin((x + 3 * t) / 9.0)
    g = 128 + 100 * np.cos((y - 2 * t) / 7.0)
    b = np.broadcast_to((x + y) * 255 // (h + w), r.shape)
    return np.stack([r, g, b], axis=-1).astype(np.uint8)


@pytest.mark.parametrize("codec, options", CODECS)
def test_encode_decode_round_trip(codec, options, capfd):
    frames = moving_gradient()
    data = encode_frames(frames, 25, codec, options)
    decoded = decode_bytes(data, DECODERS[codec])
    assert decoded.shape == frames.shape                      # every frame back: the encoder was flushed
    quality = psnr(decoded.transpose(0, 3, 1, 2), frames.transpose(0, 3, 1, 2)).mean().item()
    assert 30 < quality < 60
    assert "x265 [info]" not in capfd.readouterr().err


def test_lower_quality_gives_fewer_bytes():
    frames = moving_gradient()
    sizes = [len(encode_frames(frames, 25, "libx264", {"crf": crf, "preset": "veryfast"})) for crf in ("15", "35")]
    assert sizes[1] < sizes[0]


def test_write_video_is_atomic_and_readable(tmp_path):
    frames = moving_gradient(6)
    path = tmp_path / "out.mp4"
    write_video(path, frames, 10, codec="libx264", options={"crf": "10"})
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]
    assert read_video(path).shape == frames.shape
    with pytest.raises(VideoError) as err:
        write_video(tmp_path / "missing_dir" / "x.mp4", frames, 10)
    assert str(err.value).startswith(str(tmp_path / "missing_dir" / "x.mp4"))
    with pytest.raises(ValueError, match="even"):
        write_video(tmp_path / "odd.mp4", frames[:, :63], 10)
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def test_decode_bytes_rejects_garbage():
    with pytest.raises(VideoError, match="in-memory"):
        decode_bytes(b"\x00\x01garbage" * 100, "h264")
