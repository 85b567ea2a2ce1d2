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
        self._threads = torch.zeros(MAX_WORKERS + 1, dtype=torch.int64).share_memory_()

    @staticmethod
    def _row() -> int:
        info = get_worker_info()
        return 0 if info is None else 1 + info.id % MAX_WORKERS

    def add(self, **counts: int) -> None:
        row = self._counts[self._row()]
        for name, value in counts.items():
            row[FIELDS.index(name)] += int(value)

    def note_threads(self) -> None:
        """Record the torch intra-op threads of the process that is decoding (as it decodes)."""
        self._threads[self._row()] = torch.get_num_threads()

    def threads(self) -> list[int]:
        """The thread counts the decoding processes ran with, as measured in them (distinct, sorted)."""
        return sorted({int(t) for t in self._threads if t > 0})

    def snapshot(self) -> dict[str, int]:
        total = self._counts.sum(0)
        return {name: int(total[i]) for i, name in enumerate(FIELDS)}

    def reset(self) -> None:
        self._counts.zero_()
        self._threads.zero_()
