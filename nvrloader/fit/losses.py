"""The loss presets of the NeRV family and the per-frame PSNR the fit loop reports."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_msssim import ssim

# (distortion, its weight, weight of 1 - SSIM) for each loss preset
LOSSES: dict[str, tuple[str, float, float]] = {
    "l1_ssim": ("l1", 0.7, 0.3),    # NeRV, E-NeRV, HNeRV, SNeRV; D-NeRV on UVG
    "mse_ssim": ("mse", 1.0, 0.03),  # D-NeRV on UCF101
    "mse": ("mse", 1.0, 0.0),
    "l1": ("l1", 1.0, 0.0),
}


@dataclass
class FitOutput:
    """What a codec's forward function returns for one batch."""
    pred: torch.Tensor                  # [B, T, 3, H, W] in [0, 1]
    target: torch.Tensor                # same shape
    mask: torch.Tensor | None = None    # [B, T] bool: the frames that count (padding excluded)
    aux: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)  # more (pred, target) pairs


def ssim_window(height: int, width: int) -> int:
    """SSIM's Gaussian window: 11 px, shrunk to the largest odd size that fits smaller frames."""
    win = min(11, height, width)
    return win if win % 2 else win - 1


def pair_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "l1_ssim") -> torch.Tensor:
    """One loss preset over every frame of `pred`/`target` ([..., C, H, W], values in [0, 1])."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    distortion, weight, ssim_weight = LOSSES[kind]
    pred = pred.float().reshape(-1, *pred.shape[-3:])
    target = target.float().reshape(-1, *target.shape[-3:])
    loss = weight * (F.l1_loss(pred, target) if distortion == "l1" else F.mse_loss(pred, target))
    if ssim_weight:
        similarity = ssim(pred, target, data_range=1.0, win_size=ssim_window(*pred.shape[-2:]))
        loss = loss + ssim_weight * (1.0 - similarity)
    return loss


def _masked(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The frames of x that count; the mask applies to every tensor whose leading dims are [B, T]."""
    if mask is not None and x.dim() >= 2 and x.shape[:2] == mask.shape:
        return x[mask]
    return x


def fit_loss(output: FitOutput, kind: str = "l1_ssim") -> torch.Tensor:
    """The training loss of a batch: the preset on (pred, target) plus the same on each aux pair."""
    mask = output.mask
    if mask is not None:
        mask = mask.bool()
        if output.pred.shape[:2] != mask.shape:
            raise ValueError(f"the mask {tuple(mask.shape)} must be [B, T] of the prediction {tuple(output.pred.shape)}")
    pairs = [(output.pred, output.target), *output.aux]
    return sum(pair_loss(_masked(p, mask), _masked(t, mask), kind) for p, t in pairs)


def psnr_sum(output: FitOutput) -> tuple[torch.Tensor, int]:
    """Sum of per-frame PSNR (dB) over the frames that count, and how many there are."""
    mask = output.mask.bool() if output.mask is not None else None
    with torch.no_grad():
        pred = _masked(output.pred, mask).detach().float().clamp(0, 1)
        target = _masked(output.target, mask).float()
        mse = (pred - target).pow(2).reshape(-1, int(np.prod(pred.shape[-3:]))).mean(dim=1)
        return (-10.0 * torch.log10(mse.clamp_min(1e-10))).sum(), mse.numel()
