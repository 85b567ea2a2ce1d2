"""One-level orthonormal 2D Haar wavelet transform as plain differentiable tensor ops.

Same coefficients, signs and band order as ``pywt.dwt2(x, "haar")`` (mode "periodization", even
sizes): for each 2x2 block [[a, b], [c, d]]
    LL = (a + b + c + d) / 2        pywt cA
    H  = (a + b - c - d) / 2        pywt cH (detail along the height axis)
    V  = (a - b + c - d) / 2        pywt cV (detail along the width axis)
    D  = (a - b - c + d) / 2        pywt cD
The transform is orthonormal, so ``idwt2(*dwt2(x)) == x`` up to rounding and the energy is kept.
A pixel (un)shuffle does the 2x2 blocking, so there is no convolution and no padding to get wrong.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

BANDS = ("H", "V", "D")

# rows: output band (LL, H, V, D); columns: block position (a, b, c, d) in pixel_unshuffle order.
_ANALYSIS = torch.tensor([[1.0, 1.0, 1.0, 1.0],
                          [1.0, 1.0, -1.0, -1.0],
                          [1.0, -1.0, 1.0, -1.0],
                          [1.0, -1.0, -1.0, 1.0]]) / 2.0


def _check_even(height: int, width: int) -> None:
    if height % 2 or width % 2:
        raise ValueError(f"nvrloader/models/wavelet.py: the Haar DWT needs an even height and width, "
                         f"got {height}x{width}")


def dwt2(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Haar DWT of ``x [..., H, W]`` -> ``(ll [..., H/2, W/2], highs [..., 3, H/2, W/2])``, highs in H, V, D order."""
    *lead, height, width = x.shape
    _check_even(height, width)
    blocks = F.pixel_unshuffle(x.reshape(-1, 1, height, width), 2)          # [M, 4, H/2, W/2]
    coeffs = torch.einsum("kp,mphw->mkhw", _ANALYSIS.to(x), blocks)
    coeffs = coeffs.reshape(*lead, 4, height // 2, width // 2)
    return coeffs[..., 0, :, :], coeffs[..., 1:, :, :]


def idwt2(ll: torch.Tensor, highs: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`dwt2`: ``ll [..., h, w]`` and ``highs [..., 3, h, w]`` -> ``[..., 2h, 2w]``."""
    if highs.shape[:-3] != ll.shape[:-2] or highs.shape[-3] != 3 or highs.shape[-2:] != ll.shape[-2:]:
        raise ValueError(f"nvrloader/models/wavelet.py: idwt2 needs highs of shape {(*ll.shape[:-2], 3, *ll.shape[-2:])}, "
                         f"got {tuple(highs.shape)}")
    *lead, height, width = ll.shape
    coeffs = torch.cat([ll.unsqueeze(-3), highs], dim=-3).reshape(-1, 4, height, width)
    # The analysis matrix is symmetric and orthogonal, so it is its own inverse.
    blocks = torch.einsum("pk,mkhw->mphw", _ANALYSIS.to(ll), coeffs)
    return F.pixel_shuffle(blocks, 2).reshape(*lead, 2 * height, 2 * width)
