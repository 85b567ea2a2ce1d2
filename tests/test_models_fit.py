"""Each tiny model actually learns: fitting a few frames of a real video raises PSNR."""

import pytest
import torch
import torch.nn.functional as F

from nvrloader.models import create_model

from realframes import load_frames, psnr


def fit(name: str, frames: int, steps: int) -> tuple[float, float]:
    """PSNR before and after ``steps`` Adam steps on one clip (keyframes: its first and next frame)."""
    torch.manual_seed(0)
    video = load_frames(frames + 1)
    target = video[:frames].unsqueeze(0)
    batch = {"t": torch.arange(frames, dtype=torch.float32).unsqueeze(0) / frames,
             "keyframes": video[[0, frames]].unsqueeze(0),
             "offset": torch.arange(frames, dtype=torch.float32).unsqueeze(0),
             "span": torch.tensor([float(frames)])}
    extra = {"clip_len": frames} if name == "dnerv" else {}
    model = create_model(name, "tiny", **extra)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    with torch.no_grad():
        before = psnr(model(batch), target)
    for _ in range(steps):
        loss = F.mse_loss(model(batch), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = psnr(model(batch), target)
    return before, after


# dB a fit must add: D-NeRV starts from the blend of its keyframes (zero-initialised heads), which on
# neighbouring frames of a real video is already near 47 dB (4 frames) or 40 dB (8 frames).
GAIN = {"nerv": (3.0, 10.0), "enerv": (3.0, 10.0), "dnerv": (0.1, 0.5)}


@pytest.mark.parametrize("name", ["nerv", "enerv", "dnerv"])
def test_short_fit_improves_psnr(name):
    before, after = fit(name, frames=4, steps=25)
    assert after > before + GAIN[name][0], f"{name}: PSNR {before:.2f} -> {after:.2f}"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["nerv", "enerv", "dnerv"])
def test_200_step_fit_reaches_useful_quality(name):
    before, after = fit(name, frames=8, steps=200)
    assert after > max(before + GAIN[name][1], 22.0), f"{name}: PSNR {before:.2f} -> {after:.2f}"
