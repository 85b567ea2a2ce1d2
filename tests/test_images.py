from pathlib import Path

import numpy as np
import pytest

from nvrloader.compress.images import CODECS, decode_image, decode_images, encode_image, encode_images

REAL = Path(__file__).resolve().parents[1].parent / "shared/data/real-videos/v_Basketball_g01_c01.avi"


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def _synthetic(height: int = 64, width: int = 80) -> np.ndarray:
    """A smooth scene with edges and mild noise: compressible but not trivial."""
    y, x = np.mgrid[0:height, 0:width] / np.array([height, width])[:, None, None]
    img = np.stack([200 * x + 30, 150 * y + 50, 120 * np.sin(6 * x + 4 * y) + 128], axis=-1)
    img[height // 4: height // 2, width // 3: 2 * width // 3] = (230, 40, 60)
    img += np.random.default_rng(0).normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    """A real frame at 64x80 when the shared videos are present, otherwise the synthetic scene."""
    if not REAL.exists():
        return _synthetic()
    import av
    from PIL import Image
    with av.open(str(REAL)) as container:
        for i, decoded in enumerate(container.decode(video=0)):
            if i == 30:
                return np.asarray(decoded.to_image().resize((80, 64), Image.BICUBIC))
    raise AssertionError("real video shorter than expected")


@pytest.mark.parametrize("codec", CODECS)
def test_round_trip_shape(codec, frame):
    decoded = decode_image(encode_image(frame, codec, quality=60), codec)
    assert decoded.shape == frame.shape and decoded.dtype == np.uint8
    assert _psnr(frame, decoded) > 26


def test_png_is_exact(frame):
    assert np.array_equal(decode_image(encode_image(frame, "png"), "png"), frame)


@pytest.mark.parametrize("codec", ["avif", "hevc", "av1"])
def test_lower_quality_fewer_bytes_lower_psnr(codec, frame):
    sizes, psnrs = [], []
    for quality in (20, 50, 80):
        data = encode_image(frame, codec, quality)
        sizes.append(len(data))
        psnrs.append(_psnr(frame, decode_image(data, codec)))
    assert sizes[0] < sizes[1] < sizes[2]
    assert psnrs[0] < psnrs[1] < psnrs[2]
    assert 20 < psnrs[0] and psnrs[2] < 60
    assert sizes[2] < frame.nbytes / 4


def test_odd_sizes_and_batches():
    frames = np.stack([_synthetic(33, 47), _synthetic(33, 47)[::-1].copy()])
    for codec, subsampling in [("avif", None), ("av1", None), ("png", None), ("hevc", "4:4:4")]:
        blobs = encode_images(frames, codec, quality=70, subsampling=subsampling)
        decoded = decode_images(blobs, codec)
        assert decoded.shape == frames.shape
        assert min(_psnr(a, b) for a, b in zip(frames, decoded)) > 25


def test_limits_are_reported():
    with pytest.raises(ValueError, match=">= 16 px"):
        encode_image(_synthetic(8, 8), "hevc")
    with pytest.raises(ValueError, match="even sides"):
        encode_image(_synthetic(33, 47), "hevc", subsampling="4:2:0")
    with pytest.raises(ValueError, match="only 4:2:0"):
        encode_image(_synthetic(), "av1", subsampling="4:4:4")
    with pytest.raises(ValueError, match="unknown image codec"):
        encode_image(_synthetic(), "jpeg2000")
    with pytest.raises(ValueError, match="uint8"):
        encode_image(_synthetic().astype(np.float32), "png")
    with pytest.raises(ValueError, match="cannot decode avif"):
        decode_image(b"definitely not an image", "avif")


# -- untrusted input: only the codec's own format, of the expected size ----------------------------
def _pillow_bytes(fmt: str) -> bytes:
    import io

    from PIL import Image
    buffer = io.BytesIO()
    Image.fromarray(_synthetic()).save(buffer, format=fmt)
    return buffer.getvalue()


EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 80 64\nshowpage\n%%EOF\n"


@pytest.mark.parametrize("codec", ["avif", "png"])
@pytest.mark.parametrize("fmt", ["BMP", "GIF", "TIFF", "EPS", "PNG", "JPEG"])
def test_other_formats_are_refused(codec, fmt, monkeypatch):
    import subprocess
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: pytest.fail("an external program was started"))
    data = EPS if fmt == "EPS" else _pillow_bytes(fmt)
    if fmt == codec.upper():
        assert decode_image(data, codec).shape == (64, 80, 3)
    else:
        with pytest.raises(ValueError, match=f"cannot decode {codec} .*UnidentifiedImageError"):
            decode_image(data, codec)


def test_expected_size_is_checked_before_decoding(frame):
    data = encode_image(frame, "png")
    assert decode_image(data, "png", size=frame.shape[:2]).shape == frame.shape
    with pytest.raises(ValueError, match="expected 32x40"):
        decode_image(data, "png", size=(32, 40))
    with pytest.raises(ValueError, match="expected 32x40"):
        decode_image(encode_image(frame, "av1"), "av1", size=(32, 40))


def test_pack_unpack_images_and_forged_counts():
    import struct

    from nvrloader.compress.images import pack_images, unpack_images
    streams = [b"abc", b"", b"defgh"]
    data = pack_images(streams)
    assert unpack_images(data) == streams and unpack_images(data, count=3) == streams
    with pytest.raises(ValueError, match="holds 3 images, expected 2"):
        unpack_images(data, count=2)
    for count in (4, 0xFFFFFFFF, 1 << 28):
        with pytest.raises(ValueError, match="too many|add up"):
            unpack_images(struct.pack("<I", count) + data[4:])
    with pytest.raises(ValueError, match="add up"):
        unpack_images(data[:8] + struct.pack("<I", 1 << 30) + data[12:])
    with pytest.raises(ValueError, match="shorter"):
        unpack_images(b"\x01")
