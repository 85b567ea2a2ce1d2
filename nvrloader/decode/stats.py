"""Counters of decoding work (frames decoded versus delivered), summed over DataLoader workers.

Workers decode in their own processes, so the counts live in a shared-memory tensor with one row per
process (row 0: the main process, row 1 + i: worker i); rows are summed when read, so no two
processes ever write the same element.
"""
from __future__ import annotations

import torch
from torch.utils.data import get_worker_info

# requests and frames_delivered: what callers asked (a frame asked twice counts twice); frames_decoded:
# frames the codec computed for them (whole videos for H.264/raw, every frame of a D-NeRV clip through
# its GTMLP stages, distinct frames otherwise); keyframes_decoded / _encoded: D-NeRV keyframe images
# decoded and put through the content encoder (both 0 while its pyramid cache holds the videos asked)
FIELDS = ("requests", "frames_delivered", "frames_decoded", "keyframes_decoded", "keyframes_encoded")
MAX_WORKERS = 64  # workers beyond this share rows (their counts may then race)


class DecodeStats:
    """``add(frames_decoded=n, ...)`` from any process; ``snapshot()`` sums every process's row."""

    def __init__(self) -> None:
        self._counts = torch.zeros(MAX_WORKERS + 1, len(FIELDS), dtype=torch.int64).share_memory_()

    def add(self, **counts: int) -> None:
        info = get_worker_info()
        row = self._counts[0 if info is None else 1 + info.id % MAX_WORKERS]
        for name, value in counts.items():
            row[FIELDS.index(name)] += int(value)

    def snapshot(self) -> dict[str, int]:
        total = self._counts.sum(0)
        return {name: int(total[i]) for i, name in enumerate(FIELDS)}

    def reset(self) -> None:
        self._counts.zero_()
