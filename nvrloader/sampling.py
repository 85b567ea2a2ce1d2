"""Which frames of a video make a clip: TSN segments (as TSM samples them), dense windows, or all.

Randomness comes from torch's global generator, so a DataLoader seeded with torch.manual_seed gives
the same clips whatever the number of workers (each worker's generator is seeded from it).
"""
from __future__ import annotations

import numpy as np
import torch

SAMPLINGS = ("tsn", "dense", "all")


def tsn_indices(num_frames: int, num_segments: int, frames_per_segment: int = 1,
                random_offset: bool = False) -> np.ndarray:
    """N equal segments over the video; a random start inside each (training) or its centre (eval).

    Videos with fewer frames than segments repeat frames in temporal order instead of padding with
    the first frame, so the clip still spans the whole video.
    """
    span = max(1, num_frames - frames_per_segment + 1)
    seg = span / num_segments
    pos = torch.rand(num_segments).numpy() if random_offset else np.full(num_segments, 0.5)
    starts = np.floor((np.arange(num_segments) + pos) * seg).astype(np.int64).clip(0, span - 1)
    idx = starts[:, None] + np.arange(frames_per_segment)[None, :]
    return idx.reshape(-1).clip(0, num_frames - 1)


def dense_indices(num_frames: int, length: int, random_offset: bool = False) -> np.ndarray:
    """``length`` consecutive frames (random window in training, centred in eval), last frame repeated if short."""
    room = max(0, num_frames - length)
    start = int(torch.randint(room + 1, ()).item()) if random_offset else room // 2
    return (start + np.arange(length)).clip(0, num_frames - 1)


def sample_indices(sampling: str, num_frames: int, num_segments: int, frames_per_segment: int,
                   random_offset: bool) -> np.ndarray:
    if sampling == "tsn":
        return tsn_indices(num_frames, num_segments, frames_per_segment, random_offset)
    if sampling == "dense":
        return dense_indices(num_frames, num_segments * frames_per_segment, random_offset)
    if sampling == "all":
        return np.arange(num_frames)
    raise ValueError(f"unknown sampling {sampling!r}; choose one of {', '.join(SAMPLINGS)}")
