"""Bjøntegaard deltas (VCEG-M33): how much rate, or quality, one RD curve saves over another on average.

Each curve is fitted with a polynomial (quality over log10 rate for BD-quality, log10 rate over
quality for BD-rate) and the two fits are integrated over the range both curves cover; the
average gap is the delta. VCEG-M33 fits a cubic through 4 points; here the degree is
``min(3, points - 1)`` per curve, so 3 points give the interpolating quadratic, 2 a line, and with
fewer there is no curve and the result is n/a. More than 4 points are fitted by least squares,
as in Valenzise's widely used extension of the method.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from numpy.polynomial import Polynomial

FIT_NAMES = {1: "linear", 2: "quadratic", 3: "cubic"}


@dataclass(frozen=True)
class BDResult:
    """A delta (percent for BD-rate, the quality's unit for BD-quality), or None with the reason."""

    value: float | None
    fit: str            # e.g. "cubic", or "cubic/linear" when anchor and test differ; "n/a" without a value
    note: str = ""      # why there is no value, or the quality range integrated over

    def as_dict(self) -> dict[str, object]:
        return {"value": self.value, "fit": self.fit, "note": self.note}


def _curve(rate: Sequence[float], quality: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Finite points with rate > 0, as (log10 rate, quality) sorted by rate.

    A lossless point (PSNR inf) or a failed build (nan) has no place on a fitted curve.
    """
    r = np.asarray(rate, dtype=float)
    q = np.asarray(quality, dtype=float)
    if r.shape != q.shape or r.ndim != 1:
        raise ValueError(f"rate and quality must be 1-D of one length, got {r.shape} and {q.shape}")
    keep = np.isfinite(r) & np.isfinite(q) & (r > 0)
    order = np.argsort(r[keep])
    return np.log10(r[keep][order]), q[keep][order]


def _fit(x: np.ndarray, y: np.ndarray) -> Polynomial | None:
    """The fitted polynomial of degree min(3, distinct x - 1), or None with fewer than 2 distinct x."""
    distinct = len(np.unique(x))
    if distinct < 2:
        return None
    # Polynomial.fit works in a window mapped to [-1, 1]: PSNR around 35 cubed stays well conditioned
    return Polynomial.fit(x, y, deg=min(3, distinct - 1))


def _average_gap(x_anchor: np.ndarray, y_anchor: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                 axis: str) -> tuple[float | None, str, str]:
    """Mean of fit_test - fit_anchor over the x range both curves cover: (gap, fit name, note)."""
    fits = _fit(x_anchor, y_anchor), _fit(x_test, y_test)
    if fits[0] is None or fits[1] is None:
        counts = [len(np.unique(x)) for x in (x_anchor, x_test)]
        return None, "n/a", f"needs 2 or more distinct {axis} values per curve (anchor {counts[0]}, test {counts[1]})"
    lo = max(x_anchor.min(), x_test.min())
    hi = min(x_anchor.max(), x_test.max())
    names = [FIT_NAMES[f.degree()] for f in fits]
    fit = names[0] if names[0] == names[1] else "/".join(names)
    if not hi > lo:
        return None, "n/a", f"the curves' {axis} ranges do not overlap"
    areas = [f.integ()(hi) - f.integ()(lo) for f in fits]
    return float((areas[1] - areas[0]) / (hi - lo)), fit, f"{axis} {lo:.6g}..{hi:.6g}"


def bd_rate(anchor_rate: Sequence[float], anchor_quality: Sequence[float], test_rate: Sequence[float],
            test_quality: Sequence[float]) -> BDResult:
    """Average rate difference (percent) of test against anchor at equal quality; negative = test saves rate."""
    la, qa = _curve(anchor_rate, anchor_quality)
    lt, qt = _curve(test_rate, test_quality)
    gap, fit, note = _average_gap(qa, la, qt, lt, "quality")
    if gap is None:
        return BDResult(None, fit, note)
    try:
        value = (10.0 ** gap - 1.0) * 100.0
    except OverflowError:  # curves that far apart give no meaningful percentage
        value = math.inf
    return BDResult(value, fit, note)


def bd_quality(anchor_rate: Sequence[float], anchor_quality: Sequence[float], test_rate: Sequence[float],
               test_quality: Sequence[float]) -> BDResult:
    """Average quality difference (e.g. BD-PSNR in dB) of test against anchor at equal rate; positive = better."""
    la, qa = _curve(anchor_rate, anchor_quality)
    lt, qt = _curve(test_rate, test_quality)
    gap, fit, note = _average_gap(la, qa, lt, qt, "log10 rate")
    return BDResult(gap, fit, note)


def msssim_db(value: float) -> float:
    """MS-SSIM on a dB scale, -10 log10(1 - MS-SSIM): near 1 the raw scale squeezes every codec together."""
    return math.inf if value >= 1 else -10.0 * math.log10(1.0 - value)
