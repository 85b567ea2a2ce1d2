"""Comparisons that cannot go silently wrong: --match copies the frames, targets are honoured or
refused, outputs are checked before work, and a clip depends only on (seed, epoch, index, mode)."""
from __future__ import annotations

import json

import pytest
import torch
from torch.utils.data import DataLoader

from nvrloader import build
from nvrloader.dataset import NVRDataset
from nvrloader.decode import ArchiveDecoder


@pytest.fixture(scope="module")
def env(synth_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("comparisons")
    common = [str(synth_root), "--cache-dir", str(out / "cache"), "--device", "cpu", "--no-eval"]
    first = out / "h264_a.nvr"
    assert build.main([*common, "--resolution", "48x64", "--fps", "4", "--subset", "test", "--codec", "h264",
                       "--crf", "30", "-o", str(first)]) == 0
    return out, common, first


def test_match_takes_frames_and_bpp_from_the_archive(env):
    out, common, first = env
    second = out / "h265_matched.nvr"
    assert build.main([*common, "--codec", "h265", "--match", str(first), "-o", str(second)]) == 0
    a, b = ArchiveDecoder(first, "cpu"), ArchiveDecoder(second, "cpu")
    assert (b.metadata.height, b.metadata.width, b.metadata.fps, b.metadata.subset) == (48, 64, 4.0, "test")
    assert a.metadata.differences(b.metadata) == []
    report_a = json.loads(first.with_suffix(".json").read_text())
    report_b = json.loads(second.with_suffix(".json").read_text())
    assert abs(report_b["bpp"] / report_a["bpp"] - 1) <= 0.03


def test_match_refuses_contradicting_flags(env, capsys):
    out, common, first = env
    assert build.main([*common, "--codec", "h265", "--match", str(first), "--resolution", "64x80",
                       "-o", str(out / "x.nvr")]) == 2
    assert "--resolution (64, 80) (archive: (48, 64))" in capsys.readouterr().err
    assert build.main([*common, "--codec", "h265", "--match", str(first), "--fps", "4", "--subset", "test",
                       "--target-bpp", "9", "-o", str(out / "x.nvr")]) == 2
    assert not (out / "x.nvr").exists()


def test_differences_name_what_is_not_comparable(env):
    out, common, first = env
    other = out / "h264_other.nvr"
    assert build.main([*common, "--resolution", "48x64", "--fps", "2", "--subset", "test", "--codec", "h264",
                       "--crf", "30", "-o", str(other)]) == 0
    found = ArchiveDecoder(first, "cpu").metadata.differences(ArchiveDecoder(other, "cpu").metadata)
    assert any(d.startswith("fps 4.0 vs 2.0") for d in found)


@pytest.mark.parametrize("codec,target,message", [("dnerv", "0", "target bpp must be a positive number"),
                                                   ("raw", "0", "has no rate setting"),
                                                   ("raw", "1.0", "has no rate setting")])
def test_any_given_target_is_honoured_or_refused(env, capsys, codec, target, message):
    out, common, _ = env
    assert build.main([*common, "--resolution", "48x64", "--codec", codec, "--target-bpp", target,
                       "-o", str(out / "t.nvr")]) == 2
    assert message in capsys.readouterr().err


def test_output_is_checked_before_any_work(env, tmp_path, capsys):
    out, common, first = env
    cache = tmp_path / "cache"
    args = [common[0], "--cache-dir", str(cache), "--codec", "h264", "--no-eval"]
    assert build.main([*args, "-o", str(tmp_path)]) == 2
    assert "output is a directory" in capsys.readouterr().err
    assert build.main([*args, "-o", str(first)]) == 2
    assert "archive exists" in capsys.readouterr().err
    assert not cache.exists()  # refused before a frame store was built


def _clips(ds: NVRDataset, workers: int, persistent: bool = False) -> list[torch.Tensor]:
    loader = DataLoader(ds, batch_size=2, num_workers=workers, persistent_workers=persistent)
    return [clip for clip, _ in loader]


def test_clips_depend_on_seed_epoch_index_and_mode_only(env):
    _, _, first = env
    ds = NVRDataset(first, split="all", device="cpu", seed=5).train()
    zero, two = _clips(ds, 0), _clips(ds, 2)
    assert all(torch.equal(a, b) for a, b in zip(zero, two))
    ds.set_epoch(1)
    assert not all(torch.equal(a, b) for a, b in zip(zero, _clips(ds, 0)))
    ds.set_epoch(0)
    assert all(torch.equal(a, b) for a, b in zip(zero, _clips(ds, 0)))


def test_mode_and_epoch_reach_persistent_workers(env):
    _, _, first = env
    ds = NVRDataset(first, split="all", device="cpu", seed=5).train()
    loader = DataLoader(ds, batch_size=2, num_workers=2, persistent_workers=True)
    train_pass = [c for c, _ in loader]
    ds.eval()
    eval_pass = [c for c, _ in loader]
    fresh = _clips(NVRDataset(first, split="all", device="cpu", seed=5).eval(), 0)
    assert all(torch.equal(a, b) for a, b in zip(eval_pass, fresh))
    assert not all(torch.equal(a, b) for a, b in zip(train_pass, eval_pass))
    ds.train()
    ds.set_epoch(3)
    again = [c for c, _ in loader]
    ds3 = NVRDataset(first, split="all", device="cpu", seed=5).train()
    ds3.set_epoch(3)
    assert all(torch.equal(a, b) for a, b in zip(again, _clips(ds3, 0)))


def test_return_info_names_the_clip(env):
    _, _, first = env
    ds = NVRDataset(first, split="all", device="cpu", return_info=True).eval()
    clip, label, info = ds[1]
    assert info["video_name"] == ds.decoder.metadata.videos[ds.video_ids[1]].name
    assert torch.equal(info["frame_indices"], torch.as_tensor(ds.frame_indices(1)))


def test_model_and_resolution_mismatch_is_refused_before_any_work(tmp_path, synth_root, capsys):
    cache = tmp_path / "cache"
    assert build.main([str(synth_root), "--cache-dir", str(cache), "--codec", "dnerv", "--size", "S",
                       "--resolution", "64x80", "-o", str(tmp_path / "d.nvr")]) == 2
    err = capsys.readouterr().err
    assert "dnerv size 'S' cannot code 64x80 frames" in err and "target-bpp" not in err
    assert not cache.exists()


@pytest.mark.parametrize("codec", ["h264", "h265"])
def test_classical_builds_are_reproducible(env, tmp_path, codec):
    _, common, _ = env
    decoded = []
    for run in range(2):
        out = tmp_path / f"{codec}{run}.nvr"
        assert build.main([*common, "--resolution", "48x64", "--fps", "4", "--codec", codec, "--crf", "30",
                           "-o", str(out)]) == 0
        dec = ArchiveDecoder(out, "cpu")
        decoded.append(dec.get_frames_batch([(v, None) for v in range(dec.num_videos)]))
    assert all(torch.equal(a, b) for a, b in zip(*decoded))


def test_bench_refuses_archives_of_other_frames(env, capsys):
    from nvrloader import bench

    out, common, first = env
    other = out / "h264_other_bench.nvr"
    assert build.main([*common, "--resolution", "48x64", "--fps", "2", "--subset", "test", "--codec", "h264",
                       "--crf", "30", "-o", str(other)]) == 0
    assert bench.main([str(first), str(other), "--repeats", "1", "--num-workers", "0", "--device", "cpu"]) == 2
    assert "do not hold the same frames" in capsys.readouterr().err
