"""D-NeRV keyframes as one stream per video (hevc-seq, av1-seq): round trips, archives that decode any
one video's keyframes, old per-image archives, and hostile streams."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

import hostile
import tiny_archives
from nvrloader.archive import ArchiveError, open_archive
from nvrloader.compress import images
from nvrloader.decode import open_decoder
from nvrloader.decode.base import video_key
from nvrloader.decode.layouts import keyframe_indices

SEQUENCES = images.SEQUENCE_CODECS
SIZE = (tiny_archives.HEIGHT, tiny_archives.WIDTH)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    return tiny_archives.videos((6,), seed=3)[0]


@pytest.mark.parametrize("codec", SEQUENCES)
def test_sequence_round_trip_is_one_reproducible_stream(codec, clip):
    data = images.encode_keyframes(clip, codec, 60)
    decoded = images.decode_keyframes(data, codec, len(clip), SIZE)
    assert decoded.shape == clip.shape and decoded.dtype == np.uint8
    assert min(_psnr(a, b) for a, b in zip(decoded, clip)) > 30
    assert images.encode_keyframes(clip, codec, 60) == data          # deterministic encoder settings
    # one header and inter prediction: fewer bytes than the same encoder's packed images, at a lower quality setting
    assert len(data) < len(images.encode_keyframes(clip, codec.removesuffix("-seq"), 50))
    assert images.is_sequence(codec) and not images.is_sequence(codec.removesuffix("-seq"))


@pytest.mark.parametrize("codec", SEQUENCES)
def test_sequence_decode_refuses_what_it_was_not_promised(codec, clip):
    data = images.encode_keyframes(clip, codec, 40)
    with pytest.raises(ValueError, match="more than the expected 5 frames"):
        images.decode_keyframes(data, codec, 5, SIZE)
    with pytest.raises(ValueError, match="decodes to 6 frames, expected 7"):
        images.decode_keyframes(data, codec, 7, SIZE)
    with pytest.raises(ValueError, match="expected 32x40"):
        images.decode_keyframes(data, codec, 6, (32, 40))
    for bad in (data[: len(data) // 3], b"", b"\x00\x00\x01garbage" * 40):
        with pytest.raises(ValueError, match=f"cannot decode {codec} keyframes"):
            images.decode_keyframes(bad, codec, 6, SIZE)
    with pytest.raises(ValueError, match="unknown keyframe codec"):
        images.decode_keyframes(data, "h264", 6, SIZE)


@pytest.mark.parametrize("codec, quality", [("hevc-seq", 50), ("av1-seq", 50), ("av1", 50), ("png", 100)])
def test_archive_decodes_any_one_videos_keyframes_once(codec, quality, tmp_path):
    """Stream archives and the per-image archives built before them decode each video's keyframes, as
    stored, on first use of that video only; the pyramid cache keeps them."""
    videos = tiny_archives.videos()
    path = tiny_archives.write_dnerv(tmp_path / "d.nvr", videos, keyframe_codec=codec, keyframe_quality=quality)
    with open_archive(path) as archive:
        decoder = open_decoder(archive, torch.device("cpu"))
        last = len(videos) - 1
        for _ in range(2):   # the last video alone, twice: decoded once
            decoder.decode([(last, np.arange(3))])
        assert decoder.stats.snapshot()["keyframes_decoded"] == len(keyframe_indices(len(videos[last]), 8))
        for v in (last, 0, 1):
            count = len(keyframe_indices(len(videos[v]), 8))
            payload = archive.get("keyframes", video_key(v))
            if images.is_sequence(codec):
                expected = images.decode_keyframes(payload, codec, count, SIZE)
            else:  # what the per-image decoder returned before streams existed
                expected = np.stack([images.decode_image(s, codec) for s in images.unpack_images(payload, count)])
            got = decoder.keyframes(v).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
            np.testing.assert_array_equal(got, expected)
            assert _psnr(expected, videos[v][keyframe_indices(len(videos[v]), 8)]) > 28


@pytest.fixture(scope="module")
def stream_archive(tmp_path_factory):
    """The hostile tests' tiny D-NeRV archive with its keyframes as HEVC streams."""
    path = hostile.build("dnerv", tmp_path_factory.mktemp("seq") / "dnerv.nvr")
    clip_len = hostile.read_meta(path)["codec_config"]["clip_len"]
    hostile.edit_meta(path, lambda meta: meta["codec_config"]["keyframes"].update(codec="hevc-seq"))
    for i, (n, _, _) in enumerate(hostile.VIDEOS):
        keys = hostile.frames(i, n)[keyframe_indices(n, clip_len)]
        hostile.write_payload(path, "keyframes", video_key(i), images.encode_keyframes(keys, "hevc-seq", 50))
    return path


def _mutated(stream_archive, tmp_path, data: bytes):
    path = shutil.copyfile(stream_archive, tmp_path / "m.nvr")
    hostile.write_payload(path, "keyframes", "000000", data)
    return path


def test_stream_archive_decodes(stream_archive):
    assert hostile.exercise(str(stream_archive)) == {"outcome": "ok"}


@pytest.mark.parametrize("change", ["truncated", "garbage", "one frame more", "twice the size", "av1 bytes"])
def test_hostile_keyframe_stream_is_an_archive_error_naming_the_payload(stream_archive, tmp_path, change):
    n = hostile.VIDEOS[0][0]
    keys = hostile.frames(0, n)[keyframe_indices(n, 4)]
    good = hostile.read_payload(stream_archive, "keyframes", "000000")
    data = {"truncated": good[: len(good) // 2], "garbage": bytes(range(256)) * 4,
            "one frame more": images.encode_keyframes(np.concatenate([keys, keys[:1]]), "hevc-seq", 50),
            "twice the size": images.encode_keyframes(np.repeat(np.repeat(keys, 2, 1), 2, 2), "hevc-seq", 50),
            "av1 bytes": images.encode_keyframes(keys, "av1-seq", 50)}[change]
    path = _mutated(stream_archive, tmp_path, data)
    with open_archive(path) as archive, pytest.raises(ArchiveError, match=r"keyframes/000000: .*hevc-seq"):
        open_decoder(archive, "cpu").decode([(0, np.arange(2))])


def test_fuzzed_keyframe_streams_decode_cleanly_or_raise_archive_error(stream_archive, tmp_path):
    """Seeded cuts and bit flips, each probed in a worker process (a crash or hang fails the test)."""
    good = hostile.read_payload(stream_archive, "keyframes", "000000")
    rng = np.random.default_rng(0)
    outcomes = []
    with hostile.Prober(timeout=60) as prober:
        for i in range(12):
            data = bytearray(good)
            if i % 2:
                data = data[: int(rng.integers(1, len(data)))]
            for _ in range(int(rng.integers(1, 6))):
                data[int(rng.integers(len(data)))] ^= 1 << int(rng.integers(8))
            path = shutil.copyfile(stream_archive, tmp_path / f"f{i}.nvr")
            hostile.write_payload(path, "keyframes", "000000", bytes(data))
            outcomes.append(prober.probe(path))
    assert all(r["outcome"] in ("ok", "archive_error") for r in outcomes), outcomes
    assert any(r["outcome"] == "archive_error" and "keyframes/000000" in r["message"] for r in outcomes), outcomes


def test_keyframe_study_writes_its_table_json_and_plot(synth_root, tmp_path, capsys):
    import json

    from nvrloader.study import cli

    out = tmp_path / "kf"
    assert cli.main(["keyframes", str(synth_root), "--resolution", "48x64", "--fps", "4", "--codecs", "hevc,avif",
                     "--quality", "20,40,60", "--codings", "image,video-stream", "--cache-dir",
                     str(tmp_path / "cache"), "-o", str(out)]) == 0
    study = json.loads((out / "results.json").read_text())
    assert (out / "keyframes_rd.png").stat().st_size > 0 and "| hevc | video-stream |" in (out / "table.md").read_text()
    # avif has no stream form: measured as images only; every point is one coded and decoded pass
    assert {(p["codec"], p["coding"]) for p in study["points"]} == {("hevc", "image"), ("hevc", "video-stream"),
                                                                     ("avif", "image")}
    assert all(p["bytes"] > 0 and 15 < p["psnr"] < 60 for p in study["points"])
    assert study["deltas"]["hevc video-stream"]["vs_image"]["bd_rate"]["value"] is not None
    assert cli.main(["keyframes", "--codecs", "h264", "-o", str(out)]) == 2
    assert "unknown codecs" in capsys.readouterr().err
