"""Frames of a real UCF101 clip for the models' short-fit tests (skips when the shared videos are absent)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import REAL_VIDEOS

VIDEO = REAL_VIDEOS / "v_Basketball_g01_c01.avi"


def load_frames(count: int, size: tuple[int, int] = (64, 80)) -> torch.Tensor:
    """The first ``count`` frames, area-resized, float [count, 3, H, W] in [0, 1]."""
    av = pytest.importorskip("av")
    if not VIDEO.exists():
        pytest.skip(f"real test video absent: {VIDEO}")
    frames = []
    with av.open(str(VIDEO)) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == count:
                break
    x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255
    return F.interpolate(x, size=size, mode="area")


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR of a whole batch (one MSE), enough to see a fit improve."""
    return float(-10 * torch.log10(F.mse_loss(a, b)))
