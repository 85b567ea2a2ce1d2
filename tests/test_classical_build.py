"""Build -> archive -> NVRDataset / eval / bench with the raw and H.264/H.265 codecs, end to end."""
from __future__ import annotations

import io
import json

import av
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from nvrloader import bench, build
from nvrloader import eval as nvr_eval
from nvrloader.archive import ArchiveError, open_archive
from nvrloader.decode import open_decoder
from nvrloader.meta_schema import video_key
from nvrloader.rate import RateError, search_rate

from nvrloader.dataset import NVRDataset
from nvrloader.framestore import FrameStore

RES = "48x64"
FPS = "4"


@pytest.fixture(scope="module")
def built(synth_root, tmp_path_factory):
    """Raw and H.264 archives of the small synthetic dataset, plus their reports."""
    out = tmp_path_factory.mktemp("classical")
    common = [str(synth_root), "--resolution", RES, "--fps", FPS, "--cache-dir", str(out / "cache"),
              "--device", "cpu"]
    reports = {}
    for codec, extra in (("raw", []), ("h264", ["--crf", "28"])):
        assert build.main([*common, "--codec", codec, "-o", str(out / f"{codec}.nvr"), *extra]) == 0
        reports[codec] = json.loads((out / f"{codec}.json").read_text())
    store_path = next((out / "cache").glob("*.h5"))
    return out, reports, common, store_path


def test_raw_archive_is_exact(built):
    out, reports, _, store_path = built
    assert reports["raw"]["psnr"] == "inf"
    with FrameStore(store_path) as store, open_archive(out / "raw.nvr") as archive:
        decoder = open_decoder(archive, torch.device("cpu"))
        for vid, video in enumerate(archive.meta["videos"]):
            ref = store.frames([r.name for r in store.records].index(video["name"]))
            got = decoder.decode([(vid, np.arange(video["num_frames"]))])[0]
            assert torch.equal(got, torch.from_numpy(ref).permute(0, 3, 1, 2))


def test_report_bpp_is_payload_bytes(built):
    out, reports, _, _ = built
    for codec, report in reports.items():
        with open_archive(out / f"{codec}.nvr") as archive:
            total = sum(archive.payload_bytes().values())
        h, w = map(int, RES.split("x"))
        assert report["bytes_total"] == total
        assert report["bpp"] == pytest.approx(8 * total / (h * w * report["num_frames"]))
    assert reports["raw"]["bpp"] > 24  # raw frames plus the meta
    assert reports["h264"]["bpp"] < reports["raw"]["bpp"] / 10


def test_h264_decode_matches_pyav(built):
    out, _, _, _ = built
    with open_archive(out / "h264.nvr") as archive:
        stream = archive.get("streams", "000000")
        decoder = open_decoder(archive, torch.device("cpu"))
        ours = decoder.decode([(0, np.arange(archive.meta["videos"][0]["num_frames"]))])[0]
    with av.open(io.BytesIO(stream)) as container:
        theirs = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    assert torch.equal(ours, torch.from_numpy(theirs).permute(0, 3, 1, 2))


def test_h264_builds_store_byte_identical_bare_streams(built):
    out, _, common, _ = built
    assert build.main([*common, "--codec", "h264", "--crf", "28", "--no-eval", "-o", str(out / "again.nvr")]) == 0
    with open_archive(out / "h264.nvr") as first, open_archive(out / "again.nvr") as again:
        assert first.payload_bytes() == again.payload_bytes()
        for i in range(len(first.meta["videos"])):
            stream = first.get("streams", video_key(i))
            assert stream == again.get("streams", video_key(i))
            assert stream.startswith(b"\x00\x00\x00\x01") and b"x264 - core" not in stream   # bare Annex-B


@pytest.mark.parametrize("codec", ["h264", pytest.param("h265", marks=pytest.mark.slow)])  # h265: ~8 s
def test_veryslow_preset_end_to_end(built, codec):
    out, _, common, _ = built
    path = out / f"{codec}-veryslow.nvr"
    assert build.main([*common, "--codec", codec, "--preset", "veryslow", "--crf", "28", "-o", str(path)]) == 0
    report = json.loads(path.with_suffix(".json").read_text())
    assert report["codec_config"]["preset"] == "veryslow" and 20 < report["psnr"] < 60
    ds = NVRDataset(path, split="all", num_segments=2, device="cpu")
    assert ds[0][0].shape == (2, 3, *map(int, RES.split("x")))


def test_eval_agrees_with_build_report(built):
    out, reports, _, store_path = built
    report = nvr_eval.evaluate(out / "h264.nvr", FrameStore(store_path), "cpu", progress=False)
    assert report["bpp"] == reports["h264"]["bpp"]
    assert report["psnr"] == pytest.approx(reports["h264"]["psnr"])
    assert 20 < report["psnr"] < 60 and 0 < report["ms_ssim"] <= 1


def test_eval_cli_on_source_folder(built, synth_root, capsys):
    out, reports, _, _ = built
    assert nvr_eval.main([str(out / "h264.nvr"), "--reference", str(synth_root),
                          "--cache-dir", str(out / "cache"), "--device", "cpu"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["psnr"] == pytest.approx(reports["h264"]["psnr"])


def test_target_bpp_lands_within_tolerance(built):
    out, _, common, _ = built
    target = 3.0  # tiny 48x64 videos of ~5 frames: stream headers alone take ~1.5 bpp
    assert build.main([*common, "--codec", "h265", "--target-bpp", str(target), "--no-eval",
                       "-o", str(out / "h265.nvr")]) == 0
    report = json.loads((out / "h265.json").read_text())
    assert abs(report["bpp"] / target - 1) <= 0.03


def test_unreachable_target_and_stray_options_are_refused(built, capsys):
    out, _, common, _ = built
    assert build.main([*common, "--codec", "h264", "--target-bpp", "1e-6", "-o", str(out / "x.nvr")]) == 2
    assert "below the lowest rate" in capsys.readouterr().err
    assert build.main([*common, "--codec", "raw", "--crf", "20", "-o", str(out / "y.nvr")]) == 2
    assert "--crf" in capsys.readouterr().err
    assert not (out / "x.nvr").exists() and not (out / "y.nvr").exists()
    assert not list(out.glob("*.tmp"))


def test_search_rate_bisects_a_monotone_curve():
    curve = lambda crf: 10.0 * 2 ** (-crf / 6)  # noqa: E731 - x264's rule of thumb
    crf, got = search_rate(curve, 0.5, 0.0, 51.0, tolerance=0.01)
    assert abs(got / 0.5 - 1) <= 0.01 and 25 < crf < 27
    with pytest.raises(RateError, match="above the highest"):
        search_rate(curve, 100.0, 0.0, 51.0, tolerance=0.03)
    bits, got = search_rate(lambda b: 2.0 ** b, 100.0, 4.0, 12.0, tolerance=0.01)  # rising curves work too
    assert abs(got / 100 - 1) <= 0.01 and bits == pytest.approx(6.64, abs=0.02)


def test_dataset_shapes_labels_and_batching(built, monkeypatch):
    out, _, _, _ = built
    ds = NVRDataset(out / "h264.nvr", split="train", num_segments=8, device="cpu")
    assert len(ds) == sum(v["split"] == "train" for v in ds.meta["videos"])
    clip, label = ds[0]
    h, w = map(int, RES.split("x"))
    assert clip.shape == (8, 3, h, w) and clip.dtype == torch.uint8
    assert label == ds.meta["videos"][ds.video_ids[0]]["label"]
    calls = []
    real = type(ds.decoder).get_frames_batch
    monkeypatch.setattr(type(ds.decoder), "get_frames_batch",
                        lambda self, req: calls.append(len(req)) or real(self, req))
    clips, labels = next(iter(DataLoader(ds, batch_size=4)))
    assert clips.shape == (4, 8, 3, h, w) and calls == [4]
    assert labels.tolist() == ds.labels[:4]
    fl = NVRDataset(out / "raw.nvr", split="test", output="float", device="cpu")
    x, _ = fl[0]
    assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1


def test_dataset_eval_mode_takes_segment_centres(built):
    out, _, _, _ = built
    ds = NVRDataset(out / "raw.nvr", split="all", num_segments=4, device="cpu").eval()
    n = ds.meta["videos"][0]["num_frames"]
    expected = np.floor((np.arange(4) + 0.5) * n / 4).astype(int)
    np.testing.assert_array_equal(ds.frame_indices(0), expected)
    clip, _ = ds[0]
    with open_archive(out / "raw.nvr") as archive:
        frames = archive.get("frames", "000000")
    assert torch.equal(clip, torch.from_numpy(frames[expected]).permute(0, 3, 1, 2))


def test_dataloader_workers_and_seed_determinism(built):
    out, _, _, _ = built
    ds = NVRDataset(out / "h264.nvr", split="all", device="cpu")

    def run(workers):
        torch.manual_seed(7)
        return [c for c, _ in DataLoader(ds, batch_size=3, shuffle=True, num_workers=workers)]

    a, b = run(2), run(2)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert sum(len(x) for x in a) == len(ds)


def test_distributed_sampler_partitions_the_dataset(built):
    out, _, _, _ = built
    ds = NVRDataset(out / "raw.nvr", split="all", device="cpu")
    parts = [list(DistributedSampler(ds, num_replicas=2, rank=r, shuffle=True, seed=1)) for r in (0, 1)]
    assert set(parts[0]).isdisjoint(parts[1]) or len(ds) % 2  # padding repeats one index when odd
    assert set(parts[0]) | set(parts[1]) == set(range(len(ds)))


def test_bad_archives_give_clear_errors(tmp_path):
    with pytest.raises(ArchiveError, match="missing.nvr"):
        NVRDataset(tmp_path / "missing.nvr")
    bad = tmp_path / "bad.nvr"
    bad.write_bytes(b"not an archive at all")
    with pytest.raises(ArchiveError, match="bad.nvr"):
        NVRDataset(bad)


def test_bench_reports_ratio_to_first(built, tmp_path):
    out, _, _, _ = built
    result = tmp_path / "bench.json"
    assert bench.main([str(out / "raw.nvr"), str(out / "h264.nvr"), "--batch-size", "4", "--repeats", "2",
                       "--device", "cpu", "-o", str(result)]) == 0
    rows = json.loads(result.read_text())["results"]
    assert rows[0]["ratio_to_first"] == 1.0 and rows[1]["ratio_to_first"] > 0
    assert rows[1]["clips_per_s"] > 0 and result.with_suffix(".png").exists()
