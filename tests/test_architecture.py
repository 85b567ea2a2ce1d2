"""The structure the other work rests on: a decode side without the build side, typed codec options,
one rate module whose byte split is the archive's, one registry entry per model family."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from nvrloader import build
from nvrloader.archive import open_archive
from nvrloader.codecs import codec_names
from nvrloader.codecs.options import KEYFRAME_CODECS, codec_options, options_from_values, options_to_argv
from nvrloader.compress.images import KEYFRAME_CODECS as CODECS
from nvrloader.eval import size_report
from nvrloader.models import list_models, model_family
from nvrloader.rate import Budget, byte_split

BUILD_SIDE = ("nvrloader.fit", "nvrloader.training", "nvrloader.study", "nvrloader.framestore", "nvrloader.synth",
              "nvrloader.codecs", "nvrloader.build",
              "nvrloader.rate", "nvrloader.video_encode", "nvrloader.eval", "nvrloader.bench", "pytorch_msssim",
              "matplotlib")


def test_loading_imports_nothing_from_the_build_side():
    code = ("import sys, nvrloader; nvrloader.NVRDataset; nvrloader.ArchiveDecoder; "
            f"print([m for m in sys.modules if m.startswith({BUILD_SIDE!r})])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def _non_default(field: dataclasses.Field, kind: type):
    """A valid value other than the field's default, from its declared choices and range."""
    meta = field.metadata
    if meta.get("choices"):
        return next(c for c in reversed(meta["choices"]) if c != field.default)
    if kind is str:
        return "S"
    if kind is bool:
        return not field.default
    low = meta.get("low") or 0
    high = meta.get("high")
    value = kind(2 if field.default is None else field.default + 1)
    value = max(kind(low) + kind(1) if kind is int else kind(low) + 0.5, value) if field.default is None else value
    return min(value, kind(high)) if high is not None and value > high else value


@pytest.mark.parametrize("codec", codec_names())
def test_options_round_trip_through_the_cli(codec):
    from nvrloader.codecs.options import _scalar_type

    cls = codec_options()[codec]
    values = {f.name: _non_default(f, _scalar_type(cls, f.name)) for f in dataclasses.fields(cls)}
    options = cls(**values)
    ap, owners = build.build_parser()
    args = ap.parse_args(["--codec", codec, *options_to_argv(options)])
    assert options_from_values(codec, cls, vars(args), owners) == options
    assert options_to_argv(cls()) == []


def test_foreign_and_invalid_options_are_refused_clearly():
    ap, owners = build.build_parser()
    args = ap.parse_args(["--codec", "dnerv", "--crf", "20"])
    with pytest.raises(ValueError, match="--crf do\\(es\\) not apply to codec 'dnerv'"):
        options_from_values("dnerv", codec_options()["dnerv"], vars(args), owners)
    with pytest.raises(ValueError, match="KeyframeOptions.keyframe_share must be <= 0.99"):
        codec_options()["dnerv"](keyframe_share=1.5)
    assert build.main(["--codec", "h264", "--keyframe-share", "0.5"]) == 2


def test_the_light_option_catalogue_matches_the_encoders():
    assert set(codec_options()) == set(codec_names()) and KEYFRAME_CODECS == CODECS


def test_every_model_family_is_one_registry_entry_and_a_codec():
    for name in list_models():
        family = model_family(name)
        assert family.model.MODEL_NAME == name and family.presets and family.recipe["lr"] > 0
        assert family.side_info in ("none", "keyframes", "embeddings")
        assert name in codec_names()
    assert model_family("dnerv").side_info == "keyframes" and model_family("snerv").layout == "subband"


def test_budget_counts_the_meta_as_stored():
    meta = {"videos": [{"name": "a", "num_frames": 3}], "fps": 2.0}
    budget = Budget(pixels=3 * 64 * 80, target_bpp=0.5, meta=meta)
    small, large = budget.meta_bytes({}), budget.meta_bytes({"model": "dnerv", "weights": {"bits": 8.0}})
    assert large > small > len(json.dumps(meta))
    assert budget.bpp(1000, {}) == pytest.approx((1000 + small) * 8 / budget.pixels)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="target bpp must be a positive number"):
            Budget(pixels=10, target_bpp=bad, meta=meta)


def test_byte_split_sums_to_the_counted_bytes(synth_root, tmp_path):
    out = tmp_path / "h264.nvr"
    common = [str(synth_root), "--resolution", "48x64", "--fps", "4", "--cache-dir", str(tmp_path / "cache"),
              "--device", "cpu", "--no-eval"]
    assert build.main([*common, "--codec", "h264", "--target-bpp", "1.5", "-o", str(out)]) == 0
    with open_archive(out) as archive:
        parts = byte_split(archive)
        counted = sum(archive.payload_bytes().values())
        report = size_report(archive)
    assert sum(parts.values()) == counted == report["bytes_total"]
    assert parts["config"] > 0 and parts["meta"] > 0 and parts["streams"] > 0
    # the searched CRF counted its own config: the archive lands on the target
    assert abs(report["bpp"] / 1.5 - 1) <= 0.02


@pytest.mark.parametrize("command", [["-m", "nvrloader.build"], ["-m", "nvrloader.eval"], ["-m", "nvrloader.bench"],
                                     ["-m", "nvrloader.synth"], ["-m", "nvrloader.study"],
                                     ["recognition/train_tsm.py"], ["recognition/compare.py"],
                                     ["-m", "recognition.study"]])
def test_help_imports_no_encoder_trainer_or_timm(command):
    """--help answers in about torch's import time: nothing heavier is loaded to print it."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-X", "importtime", *command, "--help"], capture_output=True, text=True,
                          timeout=120, cwd=root)
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    heavy = {"timm", "torchvision", "nvrloader.codecs.base", "nvrloader.codecs.neural", "nvrloader.fit",
             "matplotlib", "recognition.engine"}
    assert not loaded & heavy, sorted(loaded & heavy)
