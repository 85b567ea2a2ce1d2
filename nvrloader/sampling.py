"""Which frames of a video make a clip: TSN segments (as TSM samples them), dense windows, or all.

Random choices come from the ``rng`` passed in. `NVRDataset` passes one seeded by (seed, epoch,
clip index), so a clip never depends on which process or worker draws it. Without ``rng`` a
generator is seeded from torch's global one (``torch.manual_seed`` makes direct calls repeatable).
"""
from __future__ import annotations

import numpy as np
import torch

SAMPLINGS = ("tsn", "dense", "all")


def _generator(rng: np.random.Generator | None) -> np.random.Generator:
    return rng if rng is not None else np.random.default_rng(int(torch.randint(2 ** 62, ()).item()))


def tsn_indices(num_frames: int, num_segments: int, frames_per_segment: int = 1,
                random_offset: bool = False, rng: np.random.Generator | None = None) -> np.ndarray:
    """N equal segments over the video; a random start inside each (training) or its centre (eval).

    Videos with fewer frames than segments repeat frames in temporal order instead of padding with
    the first frame, so the clip still spans the whole video.
    """
    span = max(1, num_frames - frames_per_segment + 1)
    seg = span / num_segments
    pos = _generator(rng).random(num_segments) if random_offset else np.full(num_segments, 0.5)
    starts = np.floor((np.arange(num_segments) + pos) * seg).astype(np.int64).clip(0, span - 1)
    idx = starts[:, None] + np.arange(frames_per_segment)[None, :]
    return idx.reshape(-1).clip(0, num_frames - 1)


def dense_indices(num_frames: int, length: int, random_offset: bool = False,
                  rng: np.random.Generator | None = None) -> np.ndarray:
    """``length`` consecutive frames (random window in training, centred in eval), last frame repeated if short."""
    room = max(0, num_frames - length)
    start = int(_generator(rng).integers(room + 1)) if random_offset else room // 2
    return (start + np.arange(length)).clip(0, num_frames - 1)


def sample_indices(sampling: str, num_frames: int, num_segments: int, frames_per_segment: int,
                   random_offset: bool, rng: np.random.Generator | None = None) -> np.ndarray:
    if sampling == "tsn":
        return tsn_indices(num_frames, num_segments, frames_per_segment, random_offset, rng)
    if sampling == "dense":
        return dense_indices(num_frames, num_segments * frames_per_segment, random_offset, rng)
    if sampling == "all":
        return np.arange(num_frames)
    raise ValueError(f"unknown sampling {sampling!r}; choose one of {', '.join(SAMPLINGS)}")
