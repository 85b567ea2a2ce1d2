"""Reconstruction metrics as the papers report them: per-frame PSNR and MS-SSIM, and bits per pixel.

Both image metrics return one value per frame; a video's or dataset's score is the mean of the
per-frame values over all its frames (not PSNR of the pooled MSE).
"""
from __future__ import annotations

import numpy as np
import torch
import pytorch_msssim

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003, pytorch-msssim defaults
WIN_SIZE, WIN_SIGMA = 11, 1.5


def _as_frames(x: torch.Tensor | np.ndarray, name: str) -> torch.Tensor:
    """[..., C, H, W] -> float [N, C, H, W]; uint8 is scaled to [0, 1]."""
    x = torch.as_tensor(x)
    if x.ndim < 3:
        raise ValueError(f"{name} must be [..., C, H, W], got shape {tuple(x.shape)}")
    x = x.reshape(-1, *x.shape[-3:])
    if x.dtype == torch.uint8:
        return x.float() / 255.0
    return x.float() if not x.is_floating_point() else x


def _pair(pred, target) -> tuple[torch.Tensor, torch.Tensor]:
    p, t = _as_frames(pred, "pred"), _as_frames(target, "target")
    if p.shape != t.shape:
        raise ValueError(f"pred and target shapes differ: {tuple(p.shape)} vs {tuple(t.shape)}")
    return p, t.to(p.device)


def psnr(pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray,
         data_range: float = 1.0) -> torch.Tensor:
    """PSNR in dB per frame [N] over inputs [..., C, H, W]; identical frames give inf.

    uint8 inputs are divided by 255 first, so data_range stays 1.0 for them.
    """
    p, t = _pair(pred, target)
    mse = (p.double() - t.double()).pow(2).flatten(1).mean(1)
    return (10.0 * torch.log10(data_range ** 2 / mse)).float()


def ms_ssim(pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray,
            data_range: float = 1.0) -> torch.Tensor:
    """MS-SSIM per frame [N] over inputs [..., C, H, W]: `pytorch_msssim.ms_ssim`, five scales.

    Its 11-px Gaussian window needs a short side above (11 - 1) * 2**4 = 160 px (the papers'
    256x320 frames). Smaller frames get the largest odd window that fits all five scales (7 px
    at 128x160, 3 px at 64x80; sigma scaled with it), so small-frame scores are comparable with
    each other, not with full-size ones. A short side under 33 px raises ValueError.
    """
    p, t = _pair(pred, target)
    side = min(p.shape[-2:])
    win = min(WIN_SIZE, (side - 1) // 2 ** (len(MS_SSIM_WEIGHTS) - 1) + 1)
    win -= 1 - win % 2
    if win < 3:
        raise ValueError(f"MS-SSIM needs frames with a short side of at least 33 px, got {tuple(p.shape[-2:])}")
    return pytorch_msssim.ms_ssim(p, t, data_range=data_range, size_average=False, win_size=win,
                                  win_sigma=WIN_SIGMA * win / WIN_SIZE, weights=list(MS_SSIM_WEIGHTS))


def bpp(num_bytes: int, height: int, width: int, num_frames: int) -> float:
    """Bits per pixel: 8 * bytes / (H * W * frames), pixels not channels, as in the papers."""
    if min(height, width, num_frames) <= 0 or num_bytes < 0:
        raise ValueError(f"bpp needs positive H, W, frames and non-negative bytes, got "
                         f"{num_bytes} B, {height}x{width}, {num_frames} frames")
    return 8.0 * num_bytes / (height * width * num_frames)
