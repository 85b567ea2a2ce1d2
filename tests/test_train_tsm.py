"""TSM training on archives: augmentation, metrics, class checks, learning, exact resume, eval-only, compare."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nvrloader import build, synth
from recognition import compare
from recognition.config import TrainConfig, recipe_warnings
from recognition.data import open_data, split_groups, video_groups
from recognition.engine import check_resumable, evaluate_checkpoint, load_checkpoint, make_optimizer, make_tsm, train
from recognition.report import classification_report
from recognition.train_tsm import main
from recognition.transforms import (ClipTransform, centre_crop_box, crop_resize, jitter_colour, multiscale_crop_boxes,
                                    shuffle_channels, standardise_clips)

RESOLUTION = "32x40"


def build_archive(src: Path, out: Path, cache: Path, codec: str = "raw", *extra: str) -> Path:
    argv = [str(src), "-o", str(out), "--codec", codec, "--fps", "8", "--resolution", RESOLUTION,
            "--no-eval", "--cache-dir", str(cache), *extra]
    assert build.main(argv) == 0
    return out


@pytest.fixture(scope="session")
def archives(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Raw and H.264 archives of the 4-class synthetic set (8 train / 8 test clips)."""
    root = tmp_path_factory.mktemp("tsm-archives")
    return {"raw": build_archive(synth_root, root / "raw.nvr", root / "cache"),
            "h264": build_archive(synth_root, root / "h264.nvr", root / "cache", "h264", "--crf", "35")}


def tiny_config(out: Path, data: Path, **overrides) -> TrainConfig:
    """resnet18 at 1/8 width on 32x32 crops: a CPU step takes a fraction of a second."""
    base = {"train_data": str(data), "test_data": str(data), "output_dir": str(out), "width_mult": 0.125,
            "batch_size": 4, "epochs": 2, "lr_steps": (1,), "device": "cpu", "progress": False}
    return TrainConfig.from_recipe("synthetic", **{**base, **overrides})


# --- augmentation ---------------------------------------------------------------------------

def test_crop_resize_is_area_resize_of_the_box() -> None:
    torch.manual_seed(0)
    clips = torch.rand(2, 3, 3, 8, 12)
    boxes = torch.tensor([[2.0, 0.0, 10.0, 8.0], [0.0, 0.0, 8.0, 8.0]])
    same = crop_resize(clips, boxes, 8)
    assert torch.allclose(same[0], clips[0, ..., 2:10], atol=1e-6)  # 8x8 box to 8x8: exact copy
    half = crop_resize(clips, boxes, 4)
    pooled = torch.nn.functional.avg_pool2d(clips[1, ..., :8].flatten(0, 1), 2).view(3, 3, 4, 4)
    assert torch.allclose(half[1], pooled, atol=1e-6)


def test_multiscale_boxes_follow_tsm() -> None:
    torch.manual_seed(0)
    boxes = multiscale_crop_boxes(400, 240, 320, 224)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    allowed = {240, 210, 180, 158}  # int(240 * s) for TSM's scales (1, .875, .75, .66)
    assert set(w.int().tolist()) == allowed and set(h.int().tolist()) == allowed
    ranks = {240: 0, 210: 1, 180: 2, 158: 3}
    assert all(abs(ranks[int(a)] - ranks[int(b)]) <= 1 for a, b in zip(w, h))  # max_distort 1
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 320).all() and (boxes[:, 3] <= 240).all()
    assert len(set(map(tuple, boxes.tolist()))) > 20  # scales and corners vary
    near = multiscale_crop_boxes(200, 226, 300, 224)  # sizes within 3 px of the input snap to it
    assert set((near[:, 2] - near[:, 0]).int().tolist()) == {224, 197, 169, 149}


def test_clip_transform_centre_view_and_flip() -> None:
    assert centre_crop_box(256, 320, 224).tolist() == [48.0, 16.0, 272.0, 240.0]  # 224/256 of the short side
    clips = torch.randint(0, 256, (16, 2, 3, 32, 40), dtype=torch.uint8)
    torch.manual_seed(1)
    out = ClipTransform(32, scales=(1.0,), flip=True)(clips, train=True)
    assert out.shape == (16, 2, 3, 32, 32)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    flips = 0
    for i in range(16):
        norm = (clips[i].float() / 255 - mean) / std
        views = [norm[..., x:x + 32] for x in (0, 2, 4, 6, 8)]  # TSM's fixed offsets, (40 - 32) // 4 apart
        plain = any(torch.allclose(out[i], v, atol=1e-5) for v in views)
        mirrored = any(torch.allclose(out[i], v.flip(-1), atol=1e-5) for v in views)
        assert plain or mirrored
        flips += mirrored
    assert 0 < flips < 16


def test_colour_augmentation_changes_clips_not_motion() -> None:
    torch.manual_seed(0)
    still = torch.rand(6, 1, 3, 8, 8).expand(6, 4, 3, 8, 8)            # four identical frames per clip
    for augment in (lambda x: jitter_colour(x, 0.5), shuffle_channels):
        out = augment(still)
        assert torch.equal(out, out[:, :1].expand_as(out))             # every frame of a clip changes alike
        assert not torch.allclose(out, still)
    jittered = jitter_colour(still, 0.5)
    assert jittered.min() >= 0 and jittered.max() <= 1
    assert torch.allclose(jitter_colour(still, 0.0), still, atol=1e-6)
    shuffled = shuffle_channels(still)
    for i in range(6):                                                   # a permutation of the clip's channels
        assert sorted(shuffled[i, 0].sum((1, 2)).tolist()) == pytest.approx(sorted(still[i, 0].sum((1, 2)).tolist()))


def test_clip_norm_removes_what_a_clip_shares() -> None:
    torch.manual_seed(0)
    clips = torch.rand(3, 4, 3, 8, 8)
    norm = standardise_clips(clips)
    assert norm.mean(dim=(1, 3, 4)).abs().max() < 1e-5
    assert torch.allclose(norm.std(dim=(1, 3, 4)), torch.ones(3, 3), atol=1e-2)
    cast = clips * torch.tensor([0.5, 0.8, 1.2]).view(1, 1, 3, 1, 1) + 0.1   # exposure and colour cast
    assert torch.allclose(standardise_clips(cast), norm, atol=1e-2)
    uint8 = (clips * 255).to(torch.uint8)
    view = ClipTransform(8, clip_norm=True, colour_jitter=0.5, channel_shuffle=True)
    assert torch.equal(view(uint8, train=False), view(uint8, train=False))   # no augmentation at test time


# --- metrics ----------------------------------------------------------------------------------

def test_classification_report_by_hand() -> None:
    logits = torch.tensor([[9., 1, 0], [0, 9, 1], [1, 0, 9], [9, 0, 1], [0, 1, 9]])
    labels = torch.tensor([0, 1, 2, 2, 1])
    report = classification_report(logits, labels, ["a", "b", "c"])
    assert report["top1"] == pytest.approx(60.0)
    assert report["top5"] == pytest.approx(100.0)  # k = 3 classes
    assert report["per_class"] == {"a": 100.0, "b": 50.0, "c": 50.0}
    assert report["confusion"] == [[1, 0, 0], [0, 1, 1], [1, 0, 1]]
    top2 = classification_report(torch.tensor([[3., 2, 1, 0, -1, -2]]), torch.tensor([2]), list("abcdef"))
    assert top2["top1"] == 0 and top2["top5"] == 100.0


# --- training -----------------------------------------------------------------------------------

def test_mismatched_class_lists_refused(archives, synth_root: Path, tmp_path: Path) -> None:
    subset = tmp_path / "two-classes"
    subset.mkdir()
    for name in sorted(p.name for p in (synth_root / "UCF-101").iterdir())[:2]:
        (subset / name).symlink_to(synth_root / "UCF-101" / name)
    other = build_archive(subset, tmp_path / "two.nvr", tmp_path / "cache")
    cfg = tiny_config(tmp_path / "run", archives["raw"], test_data=str(other), test_split="all")
    with pytest.raises(ValueError, match=r"class lists differ: .*raw\.nvr has 4 classes, .*two\.nvr has 2"):
        train(cfg)
    assert main(["--train-data", str(archives["raw"]), "--test-data", str(other), "--test-split", "all",
                 "-o", str(tmp_path / "cli"), "--recipe", "synthetic", "--device", "cpu"]) == 2
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_learns_training_clips(archives, tmp_path: Path) -> None:
    """Cheap learning check: fit the 8 training clips, then recognise them (chance is 25%).

    All 8 come from one scene and the classes are mirror/time-reversed pairs, so even this needs
    motion features; generalising to unseen scenes needs far more data (measured in the closing note of issue 6).
    """
    cfg = tiny_config(tmp_path / "fit", archives["raw"], width_mult=0.25, test_split="train", batch_size=4,
                      epochs=40, lr_steps=(30,), dropout=0.0, weight_decay=0.0)
    result = train(cfg)
    losses = [row["train_loss"] for row in result["history"]]
    assert sum(losses[-5:]) < 0.8 * sum(losses[:5])
    assert result["top1"] >= 50.0
    assert json.loads((tmp_path / "fit" / "metrics.json").read_text())["top1"] == result["top1"]
    assert (tmp_path / "fit" / "confusion.png").stat().st_size > 1000


def test_resume_continues_exactly(archives, tmp_path: Path) -> None:
    full = train(tiny_config(tmp_path / "full", archives["raw"], epochs=3, lr_steps=(2,)))
    train(tiny_config(tmp_path / "part", archives["raw"], epochs=1, lr_steps=(2,)))
    first = load_checkpoint(tmp_path / "part" / "checkpoint.pt")
    assert first["epoch"] == 1
    resumed = train(tiny_config(tmp_path / "part", archives["raw"], epochs=3, lr_steps=(2,),
                                resume=str(tmp_path / "part" / "checkpoint.pt")))
    a = load_checkpoint(tmp_path / "full" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "part" / "checkpoint.pt")
    assert a["epoch"] == b["epoch"] == 3
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"] == 3
    assert [r["train_loss"] for r in a["history"]] == [r["train_loss"] for r in b["history"]]
    assert resumed["top1"] == full["top1"]
    assert not torch.equal(first["model"]["fc.weight"], b["model"]["fc.weight"])  # it did train on
    with pytest.raises(ValueError, match="cannot resume a different experiment; lr: "):
        train(tiny_config(tmp_path / "part", archives["raw"], epochs=4, lr_steps=(2,), lr=0.5,
                          resume=str(tmp_path / "part" / "checkpoint.pt")))


def test_eval_only_cli_matches_training_report(archives, tmp_path: Path) -> None:
    trained = train(tiny_config(tmp_path / "run", archives["raw"], epochs=1))
    argv = ["--eval-only", "--checkpoint", trained["checkpoint"], "--test-data", str(archives["raw"]),
            "-o", str(tmp_path / "eval"), "--device", "cpu", "--no-progress"]
    assert main(argv) == 0
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert report["mode"] == "eval" and report["epochs"] == 1
    assert report["top1"] == trained["top1"] and report["confusion"] == trained["confusion"]
    assert (tmp_path / "eval" / "confusion.png").is_file()


def test_compare_table(archives, tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, archives["raw"], epochs=1)
    results = compare.compare(archives["raw"], [archives["h264"]], tmp_path / "cmp", cfg)
    rows = {r["setting"]: r for r in results["rows"]}
    assert {r["codec"] for r in rows.values()} == {"h264"} and results["seeds"] == [0]
    h264 = results["archives"][0]
    assert h264["codec"] == "h264" and 0 < h264["bpp"] < results["raw"]["bpp"]
    # the "test" row reuses the raw-trained model: scoring its checkpoint on the H.264 archive agrees
    again = evaluate_checkpoint(tmp_path / "cmp" / "runs" / "raw-raw" / "seed0" / "checkpoint.pt", archives["h264"],
                                tmp_path / "again", device="cpu", progress=False)
    assert rows["test"]["top1"] == {0: again["top1"]}
    train_cfg = json.loads((tmp_path / "cmp" / "runs" / "train-h264" / "seed0" / "metrics.json").read_text())["config"]
    assert train_cfg["train_data"] == str(archives["h264"]) and train_cfg["test_data"] == str(archives["raw"])
    table = (tmp_path / "cmp" / "table.md").read_text()
    assert "| raw / raw | raw |" in table and "| Train | H.264 |" in table and "| Test | H.264 |" in table
    assert (tmp_path / "cmp" / "accuracy_bpp.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "cmp" / "results.json").read_text())
    assert saved["rows"][0]["mean"] == results["rows"][0]["mean"]
    mtime = (tmp_path / "cmp" / "runs" / "raw-raw" / "seed0" / "checkpoint.pt").stat().st_mtime_ns
    compare.compare(archives["raw"], [archives["h264"]], tmp_path / "cmp", cfg)  # finished runs are reused
    assert (tmp_path / "cmp" / "runs" / "raw-raw" / "seed0" / "checkpoint.pt").stat().st_mtime_ns == mtime


@pytest.mark.slow
def test_torchrun_two_processes(archives, tmp_path: Path) -> None:
    """DDP on CPU (gloo): two processes share the batch; rank 0 writes the outputs."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "recognition.train_tsm",
           "--train-data", str(archives["raw"]), "--test-data", str(archives["raw"]), "-o", str(tmp_path / "ddp"),
           "--recipe", "synthetic", "--width-mult", "0.125", "--batch-size", "4", "--epochs", "2",
           "--device", "cpu", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert report["world_size"] == 2 and report["num_clips"] == 8 and len(report["history"]) == 2
    assert load_checkpoint(tmp_path / "ddp" / "checkpoint.pt")["epoch"] == 2


def test_config_from_recipe() -> None:
    cfg = TrainConfig.from_recipe("ucf101", lr=None, epochs=3)
    assert (cfg.lr, cfg.batch_size, cfg.lr_steps, cfg.dropout, cfg.partial_bn) == (0.001, 64, (10, 20), 0.8, True)
    assert cfg.epochs == 3
    with pytest.raises(ValueError, match="unknown recipe"):
        TrainConfig.from_recipe("imagenet")
    assert dataclasses.replace(cfg, lr=0.1).lr == 0.1


def test_optimizer_and_classifier_init_follow_the_recipe() -> None:
    """ucf101 fine-tunes with SGD and TSN's near-zero classifier; synthetic trains from scratch with AdamW."""
    for recipe, kind, small in (("ucf101", torch.optim.SGD, True), ("synthetic", torch.optim.AdamW, False)):
        cfg = TrainConfig.from_recipe(recipe, backbone="resnet18", width_mult=0.125)
        model = make_tsm(cfg, 5)
        assert (model.fc.weight.std().item() < 0.01) == small
        optimizer = make_optimizer(cfg, model.param_groups(cfg.lr, cfg.weight_decay, cfg.fc_lr_mult))
        assert type(optimizer) is kind
        lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
        assert lrs["weight"] == cfg.lr and lrs["fc_bias"] == 2 * lrs["fc_weight"] == 2 * cfg.fc_lr_mult * cfg.lr
    with pytest.raises(ValueError, match="unknown optimizer 'adam'"):
        make_optimizer(dataclasses.replace(cfg, optimizer="adam"), [{"params": [torch.zeros(1, requires_grad=True)]}])


# --- epoch selection, validation split, warnings, scripts ----------------------------------------

def test_split_groups_holds_out_whole_groups() -> None:
    groups = ["g01", "g02", "g03", "g01", "g02", "g03", "g03"]
    train_idx, val_idx, held = split_groups(groups, 0.34, seed=0)
    assert len(held) == 1 and sorted(train_idx + val_idx) == list(range(7))
    assert {groups[i] for i in val_idx} == set(held) and not {groups[i] for i in train_idx} & set(held)
    assert split_groups(groups, 0.34, seed=0) == (train_idx, val_idx, held)       # a function of the seed
    assert len(split_groups(groups, 0.99, seed=0)[2]) == 2                         # never every group
    with pytest.raises(ValueError, match="at least two groups"):
        split_groups(["g01", "g01"], 0.5, seed=0)


def test_check_resumable_follows_the_runtime_marks(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, tmp_path / "a.nvr")
    saved = dataclasses.asdict(dataclasses.replace(cfg, epochs=9, eval_every=3, device="cuda", output_dir="x"))
    check_resumable(cfg, saved, "ckpt")                                # runtime fields may differ
    with pytest.raises(ValueError, match="val_fraction: checkpoint 0.5 vs now 0.0"):
        check_resumable(cfg, {**saved, "val_fraction": 0.5}, "ckpt")


def test_best_epoch_on_the_test_split_is_reported_as_optimistic(archives, tmp_path: Path) -> None:
    result = train(tiny_config(tmp_path / "run", archives["raw"], epochs=3, eval_every=1))
    tested = [row["test_top1"] for row in result["history"]]
    assert len(tested) == 3 and result["selection_split"] == "test" and result["top1_best_optimistic"]
    assert result["top1_best"] == max(tested) and tested[result["best_epoch"] - 1] == max(tested)
    assert result["top1"] == result["top1_last"] == tested[-1]                 # the delivered model is the last
    assert result["selected_checkpoint"] == result["checkpoint"]
    assert load_checkpoint(tmp_path / "run" / "best.pt")["epoch"] == result["best_epoch"]
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert {k: saved[k] for k in ("top1_last", "top1_best", "best_epoch", "selection_split")} == \
        {k: result[k] for k in ("top1_last", "top1_best", "best_epoch", "selection_split")}


def test_best_epoch_on_a_validation_split_of_the_training_groups(archives, tmp_path: Path) -> None:
    # split "all" holds both groups of the fixture (g01, g02): one of them becomes the validation split
    cfg = tiny_config(tmp_path / "run", archives["raw"], train_split="all", val_fraction=0.5, epochs=3, eval_every=1)
    data = open_data(cfg, torch.device("cpu"))
    groups = video_groups(data.train.base)
    assert len(data.val) == 8 and len(data.train) == 8 and len(data.val_groups) == 1
    assert {groups[i] for i in data.val.indices} == set(data.val_groups)
    assert not {groups[i] for i in data.train.indices} & set(data.val_groups)
    result = train(cfg)
    assert result["selection_split"] == "val" and not result["top1_best_optimistic"]
    assert all("val_top1" in row and "test_top1" not in row for row in result["history"])   # test left alone
    val = [row["val_top1"] for row in result["history"]]
    assert val[result["best_epoch"] - 1] == max(val) and result["val"]["groups"] == data.val_groups
    assert result["selected_checkpoint"] == str(tmp_path / "run" / "best.pt")
    again = evaluate_checkpoint(result["selected_checkpoint"], archives["raw"], tmp_path / "eval", device="cpu",
                                progress=False)
    assert again["top1"] == result["top1_best"] == result["top1"] and again["epochs"] == result["best_epoch"]
    assert "top1_last" in result and not result["warnings"]


def test_validation_split_needs_two_groups(archives, tmp_path: Path) -> None:
    result = train(tiny_config(tmp_path / "run", archives["raw"], val_fraction=0.2, epochs=1))
    assert result["selection_split"] == "test" and result["val"] is None
    assert any("no validation split" in w for w in result["warnings"])


def test_fine_tune_recipe_without_weights_warns_loudly(archives, tmp_path: Path, capsys) -> None:
    cfg = TrainConfig.from_recipe("ucf101", backbone="resnet18", width_mult=0.125, input_size=32, batch_size=4,
                                  epochs=1, train_data=str(archives["raw"]), test_data=str(archives["raw"]),
                                  output_dir=str(tmp_path / "run"), device="cpu", progress=False)
    result = train(cfg)
    err = capsys.readouterr().err
    assert "WARNING" in err and "--pretrained FILE" in err and "--recipe synthetic" in err
    assert len(result["warnings"]) == 1 and "random weights" in result["warnings"][0]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["warnings"] == result["warnings"]
    assert recipe_warnings(dataclasses.replace(cfg, pretrained="resnet50.safetensors")) == []
    assert recipe_warnings(TrainConfig.from_recipe("synthetic")) == []


@pytest.mark.parametrize("script", ["train_tsm.py", "compare.py"])
def test_scripts_run_from_any_folder(script: str, tmp_path: Path) -> None:
    """The README runs `python recognition/<script>`; that must import this checkout's packages."""
    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, str(root / "recognition" / script), "--help"], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--val-fraction" in done.stdout


def test_compare_refuses_archives_of_other_frames(archives, synth_root, tmp_path: Path) -> None:
    other = build_archive(synth_root, tmp_path / "h264_2fps.nvr", tmp_path / "cache", "h264", "--crf", "35",
                          "--fps", "2")
    cfg = tiny_config(tmp_path, archives["raw"], epochs=1)
    with pytest.raises(ValueError, match="do not hold the same frames .*fps"):
        compare.compare(archives["raw"], [other], tmp_path / "cmp", cfg)


@pytest.mark.slow
def test_synthetic_recipe_recognises_motion_in_an_unseen_scene(tmp_path: Path) -> None:
    """6 classes x 12 videos at 64x80, 4 fps: trained on scenes g02-g03, tested on scene g01, whose
    background, object, colours and contrast it never saw. Chance is 16.7%; the recipe before
    per-clip normalisation and colour augmentation stayed there. Measured with this recipe: 45.8%
    here (seed 0, 1 thread), 58.3 / 37.5 / 58.3% for seeds 0 / 1 / 2 on 2 threads; the bar is twice
    chance, which every measured run cleared."""
    src = synth.generate(tmp_path / "synth", classes=6, videos_per_class=12, seed=0, progress=False)
    raw = build_archive(src, tmp_path / "raw.nvr", tmp_path / "cache", "raw", "--fps", "4", "--resolution", "64x80")
    result = train(TrainConfig.from_recipe("synthetic", train_data=str(raw), test_data=str(raw), device="cpu",
                                           output_dir=str(tmp_path / "run"), progress=False))
    assert result["top1"] >= 2 * 100 / 6, [row.get("test_top1") for row in result["history"]]
