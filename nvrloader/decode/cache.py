"""A least-recently-used cache bounded by bytes: decoded side information kept per video per process."""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Generic, Hashable, TypeVar

import torch

V = TypeVar("V")


def nbytes(value: object) -> int:
    """Bytes held by a tensor or a (nested) list/tuple of tensors; anything else counts 0."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (list, tuple)):
        return sum(nbytes(v) for v in value)
    return 0


class ByteLRU(Generic[V]):
    """Entries made on first use and dropped oldest-first once they hold more than ``max_bytes``.

    Bytes, not a count, because one D-NeRV video's keyframe pyramids weigh 0.5 MB at 64x80 and
    hundreds of MB at 256x320. ``max_bytes=0`` keeps nothing (every use makes the entry again)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()
        self.bytes = 0

    def get(self, key: Hashable, make: Callable[[], V]) -> V:
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key][0]
        value = make()
        size = nbytes(value)
        if size <= self.max_bytes:
            self._items[key] = (value, size)
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, (_, dropped) = self._items.popitem(last=False)
                self.bytes -= dropped
        return value

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)
