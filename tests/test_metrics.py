"""PSNR, MS-SSIM and bpp against hand-computed values (nvrloader.metrics)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import pytorch_msssim
import torch

from nvrloader.metrics import bpp, ms_ssim, psnr


def test_psnr_of_constant_offsets_per_frame():
    target = torch.full((2, 3, 3, 8, 10), 0.5)                  # [B, T, C, H, W] -> 6 frames
    offsets = torch.tensor([0.1, 0.01, 0.2, 0.05, 0.1, 0.3]).view(2, 3, 1, 1, 1)
    values = psnr(target + offsets, target)
    assert values.shape == (6,)
    expected = [20 * math.log10(1 / d) for d in (0.1, 0.01, 0.2, 0.05, 0.1, 0.3)]   # MSE = d^2
    np.testing.assert_allclose(values.numpy(), expected, rtol=1e-5)


def test_psnr_known_mse_and_data_range():
    target = torch.zeros(1, 1, 2, 2)
    pred = torch.tensor([[[[1.0, 1.0], [3.0, 3.0]]]])           # MSE = (1 + 1 + 9 + 9) / 4 = 5
    assert psnr(pred, target, data_range=255.0).item() == pytest.approx(10 * math.log10(255 ** 2 / 5), rel=1e-6)


def test_psnr_uint8_is_scaled_and_identical_frames_are_inf():
    a = np.full((4, 3, 6, 6), 100, np.uint8)
    b = a + np.uint8(5)
    assert psnr(b, a).numpy() == pytest.approx([20 * math.log10(255 / 5)] * 4, rel=1e-5)
    assert psnr(torch.from_numpy(b), torch.from_numpy(b).float() / 255).isinf().all()
    assert psnr(a.astype(np.float32), b.astype(np.float32), data_range=255.0).numpy() == pytest.approx(
        psnr(a, b).numpy(), rel=1e-5)


def test_mean_of_per_frame_psnr_is_not_psnr_of_mean_mse():
    target = torch.zeros(2, 1, 4, 4)
    pred = torch.stack([torch.full((1, 4, 4), 0.1), torch.full((1, 4, 4), 0.01)])
    # (20 + 40) / 2 dB, the papers' average; PSNR of the pooled MSE would be 22.97 dB
    assert psnr(pred, target).mean().item() == pytest.approx(30.0, rel=1e-5)


def test_ms_ssim_matches_pytorch_msssim_on_full_size_frames():
    torch.manual_seed(0)
    target = torch.rand(1, 1, 3, 168, 176)
    pred = (target + 0.1 * torch.randn_like(target)).clamp(0, 1)
    ours = ms_ssim(pred, target)
    reference = pytorch_msssim.ms_ssim(pred.flatten(0, 1), target.flatten(0, 1), data_range=1.0, size_average=False)
    assert ours.shape == (1,)
    torch.testing.assert_close(ours, reference)
    assert torch.allclose(ms_ssim(target, target), torch.ones(1))


def test_ms_ssim_small_frames_use_a_window_that_fits():
    torch.manual_seed(1)
    target = torch.rand(3, 3, 64, 80)                            # short side 64: a 3-px window fits 5 scales
    pred = (target + 0.05 * torch.randn_like(target)).clamp(0, 1)
    reference = pytorch_msssim.ms_ssim(pred, target, data_range=1.0, size_average=False, win_size=3,
                                       win_sigma=1.5 * 3 / 11)
    torch.testing.assert_close(ms_ssim(pred, target), reference)
    medium = torch.rand(2, 3, 48, 64)
    noisy = [(medium + s * torch.randn_like(medium)).clamp(0, 1) for s in (0.02, 0.1, 0.3)]
    scores = [ms_ssim(n, medium).mean().item() for n in noisy]
    assert 1 > scores[0] > scores[1] > scores[2] > 0


def test_ms_ssim_rejects_tiny_or_mismatched_frames():
    with pytest.raises(ValueError, match="at least 33 px"):
        ms_ssim(torch.rand(1, 3, 32, 40), torch.rand(1, 3, 32, 40))
    with pytest.raises(ValueError, match="differ"):
        ms_ssim(torch.rand(1, 3, 40, 40), torch.rand(1, 3, 40, 38))


def test_bpp():
    assert bpp(1000, 10, 20, 4) == pytest.approx(10.0)           # 8000 bits / 800 pixels
    assert bpp(0, 256, 320, 1) == 0.0
    with pytest.raises(ValueError):
        bpp(10, 0, 320, 1)
