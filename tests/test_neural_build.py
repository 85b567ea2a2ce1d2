"""Every neural codec end to end at tiny size: build -> archive -> NVRDataset/eval, resume, target bpp."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nvrloader import build
from nvrloader import eval as nvr_eval
from nvrloader.archive import open_archive
from nvrloader.compress import quant
from nvrloader.decode import open_decoder
from nvrloader.dataset import NVRDataset
from nvrloader.framestore import FrameStore

NEURAL = ("dnerv", "nerv", "enerv", "hnerv", "snerv")


@pytest.fixture(scope="module")
def common(synth_root, tmp_path_factory):
    """The synthetic test-split videos (4 short clips) at 64x80, 2 fps, as every build below sees them."""
    cache = tmp_path_factory.mktemp("neural-cache")
    return [str(synth_root), "--resolution", "64x80", "--fps", "4", "--subset", "test", "--cache-dir", str(cache),
            "--device", "cpu"]


def store_of(args):
    cache = args[args.index("--cache-dir") + 1]
    from pathlib import Path
    return FrameStore(next(Path(cache).glob("*.h5")))


@pytest.mark.parametrize("codec", NEURAL)
def test_codec_builds_and_decodes_what_eval_scores(codec, common, tmp_path):
    out = tmp_path / f"{codec}.nvr"
    assert build.main([*common, "--codec", codec, "--size", "tiny", "--epochs", "2", "-o", str(out)]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    with open_archive(out) as archive:
        sizes = archive.payload_bytes()
        assert report["bytes_total"] == sum(sizes.values())
        assert report["bytes_model"] == sizes["model"] > 0
        assert (report["bytes_keyframes"] > 0) == (codec == "dnerv")
        assert (report["bytes_embeddings"] > 0) == (codec in ("hnerv", "snerv"))
        assert report["bpp"] == pytest.approx(8 * sum(sizes.values()) / (64 * 80 * report["num_frames"]))
        assert 0 < report["params"] < 1_000_000 and report["train_seconds"] > 0
        assert sum(report["weights_per_part"].values()) == report["params"]
        assert all(np.isfinite(report[k]) for k in ("psnr", "psnr_float", "psnr_rounded", "psnr_qat"))
        # the report's QAT number is the PSNR of the stored weights, as the network produces it; D-NeRV's
        # decoder delivers the keyframes themselves where they measured better than the network there
        if codec == "dnerv":
            kaf = report["keyframes_as_frames"]
            assert kaf["chosen"] == (kaf["psnr_keyframes"] >= kaf["psnr_network"])
            assert archive.meta["codec_config"]["keyframes"]["as_frames"] == kaf["chosen"]
        if codec != "dnerv" or not kaf["chosen"]:
            assert report["psnr_qat"] == pytest.approx(report["psnr"], abs=0.01)
        else:
            assert report["psnr"] >= report["psnr_qat"] - 0.01
        assert report["qat"]["epochs"] == 1 and report["qat"]["steps"] > 0
    # NVRDataset's clips are exactly the decoder's frames that eval scored
    store = store_of(common)
    ds = NVRDataset(out, split="all", sampling="all", device="cpu")
    clip, label = ds[0]
    with open_archive(out) as archive:
        frames = open_decoder(archive, torch.device("cpu")).decode([(0, np.arange(clip.shape[0]))])[0]
        assert label == archive.meta["videos"][0]["label"]
    assert torch.equal(clip, frames)
    again = nvr_eval.evaluate(out, store, "cpu", progress=False)
    assert again["psnr"] == pytest.approx(report["psnr"], abs=1e-6)


def test_dnerv_batch_decode_equals_one_clip_at_a_time(common, tmp_path):
    out = tmp_path / "dnerv.nvr"
    assert build.main([*common, "--codec", "dnerv", "--size", "tiny", "--epochs", "1", "--no-eval",
                       "-o", str(out)]) == 0
    with open_archive(out) as archive:
        dec = open_decoder(archive, torch.device("cpu"))
        n = [v["num_frames"] for v in archive.meta["videos"]]
        requests = [(v, np.arange(n[v])[::-1]) for v in range(len(n))]
        together = dec.decode(requests)
        alone = [dec.decode([r])[0] for r in requests]
    # the same clips computed in a different batch may round a handful of pixels the other way
    for a, b in zip(together, alone):
        diff = (a.int() - b.int()).abs()
        assert diff.max() <= 1 and (diff > 0).float().mean() < 1e-3
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="fp16 decoding needs a CUDA device"):
            NVRDataset(out, split="all", device="cpu", half=True)[0]


def test_resume_after_interrupted_fit(common, tmp_path):
    out = tmp_path / "nerv.nvr"
    args = [*common, "--codec", "nerv", "--size", "tiny", "--epochs", "4", "--no-eval", "-o", str(out)]
    # a time budget of zero stops after the first step: the checkpoint is there, an archive too
    assert build.main([*args, "--time-budget", "0"]) == 0
    first = json.loads(out.with_suffix(".json").read_text())
    assert first["stopped_early"] and (tmp_path / "nerv.nvr.ckpt" / "fit.pt").exists()
    assert first["qat"]["stopped_early"] and first["qat"]["steps"] == 1   # QAT's share of the budget, too
    stale = list((tmp_path / "nerv.nvr.ckpt").glob("qat-*/fit.pt"))
    assert len(stale) == 1
    assert build.main([*args, "--resume", "--keep-checkpoint"]) == 0
    resumed = json.loads(out.with_suffix(".json").read_text())
    assert resumed["epochs"] == 4 and not resumed["stopped_early"]
    # the float fit went on, so its QAT started afresh (from other weights) and ran to the end
    assert resumed["qat"]["steps"] == resumed["qat"]["planned_steps"] and not resumed["qat"]["stopped_early"]
    fresh = list((tmp_path / "nerv.nvr.ckpt").glob("qat-*/fit.pt"))
    assert len(fresh) == 1 and fresh != stale
    # the same build with other options is refused rather than mixed with the old checkpoint
    assert build.main([*common, "--codec", "nerv", "--size", "tiny", "--epochs", "5", "--no-eval", "-o", str(out),
                       "--resume"]) == 2


def test_qat_lowers_the_quantisation_loss_and_can_be_turned_off(common, tmp_path):
    args = [*common, "--codec", "nerv", "--size", "tiny", "--lr", "5e-3", "--weight-bits", "2", "--no-eval"]
    assert build.main([*args, "--epochs", "3", "-o", str(tmp_path / "qat.nvr")]) == 0
    qat = json.loads((tmp_path / "qat.json").read_text())
    assert qat["psnr_qat"] > qat["psnr_rounded"] + 0.1, {k: qat[k] for k in ("psnr_float", "psnr_rounded", "psnr_qat")}
    assert qat["qat"]["bits"] == qat["codec_config"]["weights"]["bits"] == 2
    assert build.main([*args, "--epochs", "1", "--qat-epochs", "0", "-o", str(tmp_path / "plain.nvr")]) == 0
    plain = json.loads((tmp_path / "plain.json").read_text())
    assert plain["qat"] is None and "psnr_qat" not in plain and plain["options"]["qat_epochs"] == 0


@pytest.mark.parametrize("codec", ["dnerv", "nerv"])
def test_target_bpp_within_five_percent(codec, common, tmp_path):
    out = tmp_path / f"{codec}.nvr"
    target = 4.0  # ~20 tiny frames: the smallest D-NeRV needs ~18k weights besides its keyframes
    share = ["--keyframe-share", "0.5"] if codec == "dnerv" else []
    assert build.main([*common, "--codec", codec, "--target-bpp", str(target), "--epochs", "1", "--no-eval",
                       "-o", str(out), *share]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert abs(report["bpp"] / target - 1) <= 0.05


def test_a_target_sizes_a_larger_model_for_the_fewer_bits_qat_makes_safe(common, tmp_path):
    reports = {}
    for qat in ("0", "1"):
        out = tmp_path / f"nerv-qat{qat}.nvr"
        assert build.main([*common, "--codec", "nerv", "--target-bpp", "4.0", "--epochs", "1", "--qat-epochs", qat,
                           "--no-eval", "-o", str(out)]) == 0
        reports[qat] = json.loads(out.with_suffix(".json").read_text())
        assert abs(reports[qat]["bpp"] / 4.0 - 1) <= 0.05
    without, with_qat = reports["0"], reports["1"]
    assert with_qat["params"] > 1.2 * without["params"]   # sized for 6-bit weights instead of 8
    assert with_qat["codec_config"]["weights"]["bits"] < without["codec_config"]["weights"]["bits"]


def test_ddp_build_with_two_gloo_processes(common, tmp_path):
    """torchrun with 2 CPU processes: rank 0 writes one archive, both ranks shared the fit."""
    import os
    import subprocess
    import sys

    out = tmp_path / "ddp.nvr"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "nvrloader.build", *common, "--codec", "nerv", "--size", "tiny", "--epochs", "2", "--no-eval",
           "--keep-checkpoint", "-o", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["codec"] == "nerv" and report["bytes_model"] > 0
    checkpoint = torch.load(tmp_path / "ddp.nvr.ckpt" / "fit.pt", weights_only=True)
    assert checkpoint["world_size"] == 2
    # both ranks ran QAT at the bits rank 0 chose; its checkpoint holds the weights the archive quantised
    assert report["qat"]["steps"] > 0
    qat = torch.load(next((tmp_path / "ddp.nvr.ckpt").glob("qat-*/fit.pt")), weights_only=True)
    assert qat["world_size"] == 2 and qat["fingerprint"]["bits"] == report["codec_config"]["weights"]["bits"]
    with open_archive(out) as archive:
        stored = quant.unpack(archive.get("model", "weights"))
    for name, value in stored.items():
        expected = quant.quantised_values(qat["model"][name], qat["fingerprint"]["bits"], qat["fingerprint"]["modes"][name])
        assert torch.equal(value, expected), name
    ds = NVRDataset(out, split="all", device="cpu")
    assert ds[0][0].shape[1:] == (3, 64, 80)
