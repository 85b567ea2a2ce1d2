"""Shared fixtures: a small synthetic UCF101-layout dataset and the real test videos."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nvrloader.synth import generate

# Tests use tiny tensors; with several threads on 2 (often shared) cores, OpenMP's busy-waiting
# makes them many times slower, not faster.
torch.set_num_threads(1)

REAL_VIDEOS = Path(__file__).resolve().parents[1].parent / "shared/data/real-videos"

# 4 classes (MoveLeft, MoveRight, RotateClockwise, RotateCounterclockwise) x 4 videos, 1.0-1.5 s at
# 25 fps, 320x240 XviD. Groups g01 and g02 hold 2 clips per class each; split 1 tests on g01.
SYNTH_KWARGS = {"classes": 4, "videos_per_class": 4, "seed": 0, "duration": (1.0, 1.5)}


@pytest.fixture
def synth_params() -> dict:
    """The generate() arguments behind `synth_root`."""
    return dict(SYNTH_KWARGS)


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root of a generated dataset: <root>/UCF-101/<Class>/*.avi and <root>/ucfTrainTestlist/."""
    return generate(tmp_path_factory.mktemp("synth") / "ucf", progress=False, **SYNTH_KWARGS)


@pytest.fixture(scope="session")
def real_videos() -> Path:
    """The shared real test videos; skips when the folder is not beside the checkout."""
    if not REAL_VIDEOS.is_dir():
        pytest.skip(f"real test videos not found at {REAL_VIDEOS}")
    return REAL_VIDEOS
