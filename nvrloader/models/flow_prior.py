"""Optical flow between consecutive keyframes, measured by the decoder itself (no bits stored).

D-NeRV's flow heads start at zero, so a model fitted for a few CPU minutes on real footage stays
close to blending its two keyframes, and at 4 fps real motion is too large for that: on the clips
in ``shared/data/real-videos`` (64x80, keyframes every 2 frames) the blend of the source keyframes
reaches 25.45 dB on the frames between them, and warping both keyframes along OpenCV's DIS flow
between them, as below, 27.03 dB. A model with ``flow_prior`` adds this flow to every flow head's
output, so fitting starts from motion-compensated interpolation and learns a correction.

The flow is a function of the decoded keyframes only, so encoder and decoder compute the same.
"""
from __future__ import annotations

import functools

import numpy as np
import torch

# DIS presets gave 27.03 (medium), 26.99 (ultrafast) dB on the clips above; Farneback 26.86 dB
_PRESET = "MEDIUM"


@functools.cache
def _dis():  # type: ignore[no-untyped-def]
    """One DIS estimator per process, on one thread: a 64x80 pair takes about a millisecond, and
    DataLoader workers already share the cores."""
    import cv2   # opencv-python-headless: only models with a flow prior need it

    cv2.setNumThreads(1)
    return cv2.DISOpticalFlow_create(getattr(cv2, f"DISOPTICAL_FLOW_PRESET_{_PRESET}"))


def _gray(frames: torch.Tensor) -> np.ndarray:
    """float [K, 3, H, W] in [0, 1] -> uint8 luma [K, H, W] (BT.601, as OpenCV's RGB2GRAY).

    From the 8-bit values first: decoded keyframes in fp16 or fp32 give the same luma, so the same
    flow. Elementwise, so autocast leaves it in fp32."""
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float32, device=frames.device).view(1, 3, 1, 1)
    rgb = frames.detach().float().mul(255).round_().clamp_(0, 255)
    return (rgb * weights).sum(1).round_().clamp_(0, 255).to(torch.uint8).cpu().numpy()


def next_keyframe_flows(keyframes: torch.Tensor, pairs: bool = False) -> torch.Tensor:
    """Flows between each keyframe and the next one, float [K, 4, H, W] in pixels on the keyframes' device.

    Row k holds F(k -> k+1) in channels 0-1 and F(k+1 -> k) in channels 2-3, in the convention of
    `blocks.warp` (keyframe k at p matches keyframe k+1 at p + F(k -> k+1)(p)); the last row is zero.
    With ``pairs`` the rows are (start, end) pairs and only each start's row is measured (odd rows
    stay zero): half the work for a batch of clips."""
    k, _, h, w = keyframes.shape
    out = np.zeros((k, 4, h, w), dtype=np.float32)
    if k > 1:
        dis = _dis()
        gray = _gray(keyframes)
        for i in range(0, k - 1, 2 if pairs else 1):
            out[i, :2] = dis.calc(gray[i], gray[i + 1], None).transpose(2, 0, 1)
            out[i, 2:] = dis.calc(gray[i + 1], gray[i], None).transpose(2, 0, 1)
    return torch.from_numpy(out).to(keyframes.device)


def frame_flows(pair_flows: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Flows from a frame at fraction ``t`` [N] between two keyframes to the start and end keyframe,
    [N, 4, h, w], from the keyframes' flows [N, 4, h, w] under linear motion (Super SloMo's
    approximation, Jiang et al. 2018): F(t -> 0) = -(1 - t) t F01 + t^2 F10,
    F(t -> 1) = (1 - t)^2 F01 - t (1 - t) F10."""
    t = t.reshape(-1, 1, 1, 1).to(pair_flows.dtype)
    f01, f10 = pair_flows[:, :2], pair_flows[:, 2:]
    return torch.cat((-(1 - t) * t * f01 + t * t * f10, (1 - t) ** 2 * f01 - t * (1 - t) * f10), 1)
