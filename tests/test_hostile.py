"""Hostile or damaged archives: any of them may only decode cleanly or raise ArchiveError.

Most mutants are re-sealed (their checksums and trailer recomputed with the archive's own
functions), so they get past the integrity checks to the meta schema, the payload parsers and the
decoders. Each is opened and decoded in a worker process, so a crash or hang fails the test
instead of killing pytest. The targeted tests below reproduce the cases the fuzzer found.
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

import hostile
from nvrloader.archive import ArchiveError, open_archive
from nvrloader.codecs import codec_names
from nvrloader.decode import open_decoder
from nvrloader.dataset import NVRDataset
from nvrloader.meta_schema import CODEC_SCHEMAS

CLEAN = ("ok", "archive_error")


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> dict:
    """One tiny valid archive of each kind."""
    root = tmp_path_factory.mktemp("hostile-bases")
    return {kind: hostile.build(kind, root / f"{kind}.nvr") for kind in hostile.KINDS}


@pytest.fixture(scope="module")
def prober():
    with hostile.Prober(timeout=60) as probe:
        yield probe


@pytest.fixture
def copy(bases, tmp_path):
    """A fresh copy of the base archive of a kind, to mutate."""
    def make(kind: str):
        return shutil.copyfile(bases[kind], tmp_path / f"{kind}.nvr")
    return make


def _fuzz(bases, prober, tmp_path, count: int, seed: int) -> None:
    results = [(m, prober.probe(m.path)) for m in hostile.mutants(bases, tmp_path, count, seed)]
    bad = [f"{m.path.name} ({m.change}): {r}" for m, r in results if r["outcome"] not in CLEAN]
    assert not bad, "\n".join(bad)
    # the mutants must reach past the integrity checks, or this test proves little
    deep = [r for _, r in results if "invalid archive meta" in r.get("message", "")
            or "cannot decode payload" in r.get("message", "")]
    assert len(deep) >= count // 4, [r for _, r in results]


def test_fuzz_small(bases, prober, tmp_path):
    _fuzz(bases, prober, tmp_path, count=20, seed=0)


@pytest.mark.slow
def test_fuzz_many(bases, prober, tmp_path):
    _fuzz(bases, prober, tmp_path, count=600, seed=1)


def test_valid_bases_decode(bases, prober):
    for kind, path in bases.items():
        assert prober.probe(path) == {"outcome": "ok"}, kind


def test_schema_knows_every_codec():
    assert set(CODEC_SCHEMAS) == set(codec_names())


# -- crashes -------------------------------------------------------------------------------------
@pytest.mark.parametrize("count", [2 ** 42, 2 ** 62])  # a 4 TB allocation (SIGABRT); capacity overflow (panic)
def test_crafted_symbol_count_is_refused_not_fatal(copy, prober, count):
    path = copy("nerv")
    header, side, stream = hostile.quant_parts(hostile.read_payload(path, "model", "weights"))
    hostile.write_payload(path, "model", "weights", hostile.quant_join(header, side,
                                                                       hostile.with_symbol_count(stream, count)))
    result = prober.probe(path)
    assert result["outcome"] == "archive_error" and "model/weights" in result["message"], result


def test_oversized_tensor_shape_is_refused_before_allocating(copy):
    path = copy("nerv")
    header, side, stream = hostile.quant_parts(hostile.read_payload(path, "model", "weights"))
    header[0][1] = [2 ** 20, 2 ** 20]  # 1.28 TB of float64 once dequantised
    hostile.write_payload(path, "model", "weights", hostile.quant_join(header, side, stream))
    with open_archive(path) as archive, pytest.raises(ArchiveError, match="model/weights"):
        open_decoder(archive, "cpu")


# -- meta that decoders trusted ------------------------------------------------------------------
@pytest.mark.parametrize("label", [99, -1, 4, True, "1", 1.0])
def test_label_outside_the_classes(copy, label):
    path = copy("raw")
    hostile.edit_meta(path, lambda meta: meta["videos"][0].__setitem__("label", label))
    with pytest.raises(ArchiveError, match=r"meta\.videos\[0\]\.label"):
        open_archive(path)


def test_unlabelled_archive_uses_minus_one(copy):
    path = copy("raw")

    def unlabel(meta):
        meta["classes"] = []
        for video in meta["videos"]:
            video["label"], video["class_name"] = -1, None

    hostile.edit_meta(path, unlabel)
    assert NVRDataset(path, split="all", device="cpu").labels == [-1, -1]


@pytest.mark.parametrize("kind", ["raw", "h264", "dnerv", "hnerv"])
def test_num_frames_disagreeing_with_the_payloads(copy, prober, kind):
    path = copy(kind)
    hostile.edit_meta(path, lambda meta: meta["videos"][0].__setitem__("num_frames", 9))
    result = prober.probe(path)
    assert result["outcome"] == "archive_error", result
    assert any(name in result["message"] for name in ("frames/000000", "streams/000000", "keyframes/000000",
                                                      "embeddings/all")), result


@pytest.mark.parametrize("clip_len", [0, -4, 10 ** 6, 2.5, None])
def test_clip_len_out_of_range(copy, clip_len):
    path = copy("dnerv")
    hostile.edit_meta(path, lambda meta: meta["codec_config"].__setitem__("clip_len", clip_len))
    with pytest.raises(ArchiveError, match=r"meta\.codec_config\.clip_len"):
        open_archive(path)


@pytest.mark.parametrize("field, value, where", [
    ("fps", 0, r"meta\.fps"),
    ("fps", float("nan"), r"meta\.fps"),
    ("height", 0, r"meta\.height"),
    ("width", 10 ** 9, r"meta\.width"),
    ("videos", {"0": 1}, r"meta\.videos"),
    ("codec", "h264", r"meta\.codec"),
])
def test_meta_fields_out_of_range(copy, field, value, where):
    path = copy("nerv")
    hostile.edit_meta(path, lambda meta: meta.__setitem__(field, value))
    with pytest.raises(ArchiveError, match=where):
        open_archive(path)


@pytest.mark.parametrize("change, where", [
    (lambda cfg: cfg["model_config"].__setitem__("resolution", [32, 40]), "model_config.resolution"),
    (lambda cfg: cfg["model_config"].__setitem__("fc_dim", 2 ** 40), "model_config.fc_dim"),
    (lambda cfg: cfg["model_config"].__setitem__("strides", [2] * 1000), "model_config.strides"),
    (lambda cfg: cfg["model_config"].__setitem__("clip_len", 8), "model_config.clip_len"),
    (lambda cfg: cfg["keyframes"].__setitem__("codec", "eps"), "keyframes.codec"),
    (lambda cfg: cfg["keyframes"].__setitem__("as_frames", "yes"), "keyframes.as_frames"),
    (lambda cfg: cfg.__setitem__("keyframes", None), "keyframes"),
    (lambda cfg: cfg["weights"].__setitem__("bits", 0), "weights.bits"),
    (lambda cfg: cfg.__setitem__("model", "nerv"), "model"),
])
def test_codec_config_out_of_range(copy, change, where):
    path = copy("dnerv")
    hostile.edit_meta(path, lambda meta: change(meta["codec_config"]))
    with pytest.raises(ArchiveError, match=rf"meta\.codec_config\.{where}"):
        open_archive(path)


def test_missing_or_misshapen_payload_refused_on_open(copy):
    path = copy("raw")
    hostile.write_payload(path, "frames", "000001", np.zeros((3, 64, 80, 4), np.uint8))
    with pytest.raises(ArchiveError, match=r"payload frames/000001 is .*\(3, 64, 80, 4\)"):
        open_archive(path)
    path = copy("dnerv")
    hostile.reseal(path, lambda file: file["keyframes"].__delitem__("000001"))
    with pytest.raises(ArchiveError, match=r"payload keyframes/000001 is missing"):
        open_archive(path)


# -- unexpected decoders -------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["EPS", "BMP", "PNG"])
def test_keyframe_in_another_format_is_refused(copy, fmt):
    path = copy("dnerv")
    hostile.write_payload(path, "keyframes", "000000",
                          hostile.images.pack_images([hostile.image_bytes(fmt)] * 2))
    with open_archive(path) as archive:
        decoder = open_decoder(archive, "cpu")
        with pytest.raises(ArchiveError, match=r"keyframes/000000: .*cannot decode avif"):
            decoder.decode([(0, np.arange(2))])


def test_keyframe_of_another_size_is_refused(copy):
    path = copy("dnerv")
    small = hostile.images.encode_image(hostile.frames(0, 1)[0][:32, :40], "avif")
    hostile.write_payload(path, "keyframes", "000000", hostile.images.pack_images([small] * 2))
    with open_archive(path) as archive, pytest.raises(ArchiveError, match=r"keyframes/000000: .*32x40"):
        open_decoder(archive, "cpu").decode([(0, np.arange(2))])


@pytest.mark.parametrize("stream", [
    b"#EXTM3U\n#EXTINF:1,\nfile:///etc/hostname\n#EXT-X-ENDLIST\n",
    "mpeg4",
    "matroska",
])
def test_stream_in_another_container_or_codec_is_refused(copy, stream):
    path = copy("h264")
    if stream == "mpeg4":
        from nvrloader.video_encode import encode_frames
        stream = encode_frames(hostile.frames(0, 5), 2.0, "mpeg4", {})
    elif stream == "matroska":
        stream = hostile.matroska(hostile.frames(0, 5))
    hostile.write_payload(path, "streams", "000000", stream)
    with open_archive(path) as archive, pytest.raises(ArchiveError, match="streams/000000"):
        open_decoder(archive, "cpu").decode([(0, np.arange(5))])


def test_valid_archive_still_decodes_every_frame(bases):
    with open_archive(bases["dnerv"]) as archive:
        clip = open_decoder(archive, "cpu").decode([(1, np.arange(3))])[0]
    assert clip.shape == (3, 3, hostile.HEIGHT, hostile.WIDTH) and clip.dtype == torch.uint8


# -- archives of an older format -----------------------------------------------------------------
def test_version_1_stream_archive_asks_for_a_rebuild(copy):
    path = copy("h264")
    hostile.downgrade(path)
    with open_archive(path) as archive:
        assert archive.version == 1 and len(archive.meta["videos"]) == len(hostile.VIDEOS)
        with pytest.raises(ArchiveError, match="h264 streams are in Matroska.*built by an older nvrloader; rebuild"):
            open_decoder(archive, "cpu")


@pytest.mark.parametrize("kind", ["raw", "nerv"])
def test_version_1_archives_of_other_codecs_still_decode(copy, prober, kind):
    path = copy(kind)
    hostile.downgrade(path)
    with open_archive(path) as archive:
        assert archive.version == 1
    assert prober.probe(path) == {"outcome": "ok"}
