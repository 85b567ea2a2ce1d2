"""Rate control in one place: the byte budget of a build, the monotone searches that meet it, and
how an archive's bytes split into parts.

bpp counts every byte a decoder needs: payloads plus the stored meta, codec config included. The
budget measures the meta by serialising it exactly as the archive will (`encode_meta`), so a
search lands on the archive's real size rather than on an estimate.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from nvrloader.archive import Archive, encode_meta

META_GROUP = "meta"


class RateError(ValueError):
    """A target no setting of the codec reaches."""


@dataclass(frozen=True)
class Budget:
    """Pixels of a build, its target (None = no target) and its meta as it will be stored."""

    pixels: int
    target_bpp: float | None
    meta: dict[str, Any]

    def __post_init__(self) -> None:
        if self.target_bpp is not None and not (self.target_bpp > 0 and math.isfinite(self.target_bpp)):
            raise ValueError(f"target bpp must be a positive number, got {self.target_bpp}")
        if self.pixels <= 0:
            raise ValueError(f"a build needs at least one pixel, got {self.pixels}")

    @property
    def target_bytes(self) -> float | None:
        return None if self.target_bpp is None else self.target_bpp * self.pixels / 8

    def meta_bytes(self, codec_config: dict[str, Any] | None = None) -> int:
        """Bytes of the stored meta holding ``codec_config``."""
        return len(encode_meta({**self.meta, "codec_config": codec_config or {}}))

    def bpp(self, payload_bytes: int, codec_config: dict[str, Any] | None = None) -> float:
        """bpp of an archive with these payload bytes and this codec config."""
        return (payload_bytes + self.meta_bytes(codec_config)) * 8 / self.pixels


def search_rate(measure: Callable[[float], float], target: float, lo: float, hi: float,
                tolerance: float, max_steps: int = 14) -> tuple[float, float]:
    """Bisect a rate parameter (bpp monotone in it, either way); return (parameter, bpp) closest to target.

    Raises RateError when the target lies outside what the parameter range reaches.
    """
    ends = ((lo, measure(lo)), (hi, measure(hi)))
    (p_min, bpp_min), (p_max, bpp_max) = sorted(ends, key=lambda pb: pb[1])
    if target > bpp_max * (1 + tolerance):
        raise RateError(f"target {target:.5g} bpp is above the highest rate reachable ({bpp_max:.5g} bpp at {p_max:g})")
    if target < bpp_min * (1 - tolerance):
        raise RateError(f"target {target:.5g} bpp is below the lowest rate reachable ({bpp_min:.5g} bpp at {p_min:g})")
    best = min(ends, key=lambda pb: abs(math.log(pb[1] / target)))
    for _ in range(max_steps):
        if abs(best[1] / target - 1) <= tolerance:
            break
        mid = (p_min + p_max) / 2
        got = measure(mid)
        best = min((best, (mid, got)), key=lambda pb: abs(math.log(pb[1] / target)))
        p_min, p_max = (p_min, mid) if got > target else (mid, p_max)
    return best


def largest_within(size: Callable[[int], float], budget: float, lo: int, hi: int) -> int:
    """The largest integer setting in [lo, hi] whose size fits ``budget`` (size rising with the setting)."""
    if size(lo) > budget:
        raise RateError(f"even the lowest setting ({lo}) takes {size(lo):.0f} bytes, over the budget of "
                        f"{budget:.0f} bytes")
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if size(mid) <= budget else (lo, mid)
    return hi if size(hi) <= budget else lo


def byte_split(archive: Archive) -> dict[str, int]:
    """Bytes per part of an archive: every payload group, the meta and, within it, the codec config.

    ``meta`` excludes the codec config, so the parts sum to the bytes bpp counts.
    """
    groups = archive.payload_bytes()
    stored_meta = groups.pop(META_GROUP)
    meta = dict(archive.meta)
    without_config = len(encode_meta({**meta, "codec_config": {}}))
    config = len(encode_meta(meta)) - without_config
    return {**groups, "meta": stored_meta - config, "config": config}
