"""D-NeRV without loss at keyframe positions: its fit leaves them out, its decoder delivers the keyframes."""
from __future__ import annotations

import json

import numpy as np
import pytest

from nvrloader import build
from nvrloader.codecs.training import training_for
from nvrloader.decode.layouts import FrameTable


class Frames:
    """A frame store stand-in: black frames of any video."""

    def frames(self, video: int, idx: np.ndarray) -> np.ndarray:
        return np.zeros((len(idx), 4, 4, 3), dtype=np.uint8)


def masks(keyframe_loss: bool) -> list[list[bool]]:
    training = training_for("clip", FrameTable((5, 3)), 2, keyframe_loss)
    assert training.layout.keyframes_as_frames == (not keyframe_loss)
    items = training.items(Frames(), [0, 1], {0: np.zeros((3, 4, 4, 3), np.uint8), 1: np.zeros((2, 4, 4, 3), np.uint8)})
    return [items[i]["mask"].tolist() for i in range(len(items))]


def test_the_fit_leaves_keyframe_positions_out_and_drops_clips_of_keyframes_alone():
    # clip length 2: keyframes 0, 2, 4 of the 5-frame video and 0, 2 of the 3-frame one; last clips padded
    assert masks(True) == [[True, True], [True, True], [True, False], [True, True], [True, False]]
    assert masks(False) == [[False, True], [False, True], [False, True]]
    with pytest.raises(ValueError, match="every frame is a keyframe"):
        training_for("clip", FrameTable((2,)), 2, keyframe_loss=False).items(Frames(), [0], {0: np.zeros((2, 4, 4, 3))})


def test_a_build_without_keyframe_loss_delivers_keyframes(synth_root, tmp_path):
    out = tmp_path / "dnerv.nvr"
    assert build.main([str(synth_root), "--resolution", "64x80", "--fps", "4", "--subset", "test", "--cache-dir",
                       str(tmp_path / "cache"), "--device", "cpu", "--codec", "dnerv", "--size", "tiny", "--epochs",
                       "1", "--clip-len", "2", "--keyframe-loss", "false", "-o", str(out)]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["codec_config"]["keyframes"]["as_frames"] and report["keyframes_as_frames"]["chosen"]
    # the report's PSNRs are of the frames delivered, as eval scores them
    assert report["psnr_qat"] == pytest.approx(report["psnr"], abs=0.01)
