"""Bjøntegaard deltas against values worked out by hand and an independently evaluated worked example."""
from __future__ import annotations

import math

import numpy as np
import pytest

from nvrloader.study.bdrate import bd_quality, bd_rate, msssim_db

# "Sample 1" of the public VCEG-M33 reference implementations (Bjontegaard_metric demo.py): kbit/s, dB.
# They print no result; 31.397374054908... % is the VCEG-M33 cubic evaluated independently with
# numpy.polyfit/polyint (a public TypeScript port of the method pins the same number).
SAMPLE_RATE_A = [686.76, 309.58, 157.11, 85.95]
SAMPLE_PSNR_A = [40.28, 37.18, 34.24, 31.42]
SAMPLE_RATE_B = [893.34, 407.8, 204.93, 112.75]
SAMPLE_PSNR_B = [40.39, 37.21, 34.17, 31.24]
# FAU-LMS bjontegaard "Test 1" (x265 presets): the test curve saves bits; independently -4.420462706... %
FAU_RATE_A = [9487.76, 4593.60, 2486.44, 1358.24]
FAU_PSNR_A = [40.037, 38.615, 36.845, 34.851]
FAU_RATE_B = [9787.80, 4469.00, 2451.52, 1356.24]
FAU_PSNR_B = [40.121, 38.651, 36.970, 34.987]


@pytest.mark.parametrize("points", [4, 3, 2])
@pytest.mark.parametrize("factor", [0.5, 0.8, 1.3, 2.0])
def test_a_curve_costing_a_fixed_rate_factor_gives_that_bd_rate(points, factor):
    rate, psnr = SAMPLE_RATE_A[:points], SAMPLE_PSNR_A[:points]
    result = bd_rate(rate, psnr, [r * factor for r in rate], psnr)
    assert result.value == pytest.approx((factor - 1) * 100, abs=1e-9)
    assert result.fit == {4: "cubic", 3: "quadratic", 2: "linear"}[points]


@pytest.mark.parametrize("points", [4, 3, 2])
@pytest.mark.parametrize("shift", [-1.5, 0.25, 2.0])
def test_a_curve_shifted_by_a_known_db_gives_that_bd_psnr(points, shift):
    rate, psnr = FAU_RATE_A[:points], FAU_PSNR_A[:points]
    assert bd_quality(rate, psnr, rate, [p + shift for p in psnr]).value == pytest.approx(shift, abs=1e-9)


def test_two_points_each_are_a_line_worked_by_hand():
    # anchor 30 dB at rate 1, 40 dB at 10: PSNR = 30 + 10 x (x = log10 rate); test PSNR = 32 + 8 x.
    # BD-PSNR: mean of (2 - 2x) over x in [0, 1] = 1 dB.
    # BD-rate: x_test - x_anchor = (P-32)/8 - (P-30)/10, linear in P, mean over [32, 40] at P = 36: -0.1,
    # so the test needs 10**-0.1 of the anchor's rate: -20.567 %.
    assert bd_quality([1, 10], [30, 40], [1, 10], [32, 40]).value == pytest.approx(1.0, abs=1e-12)
    result = bd_rate([1, 10], [30, 40], [1, 10], [32, 40])
    assert result.value == pytest.approx((10 ** -0.1 - 1) * 100, abs=1e-9)
    assert result.note == "quality 32..40"   # integrated over the overlap only


def test_cubic_matches_the_independently_evaluated_examples():
    assert bd_rate(SAMPLE_RATE_A, SAMPLE_PSNR_A, SAMPLE_RATE_B, SAMPLE_PSNR_B).value == pytest.approx(
        31.397374054908013, abs=1e-6)
    assert bd_rate(FAU_RATE_A, FAU_PSNR_A, FAU_RATE_B, FAU_PSNR_B).value == pytest.approx(
        -4.420462706090111, abs=1e-6)


def test_cubic_bd_psnr_equals_a_numerical_integral_of_the_interpolating_cubics():
    """A different route to the same quantity: Lagrange cubics through the points, trapezoid integral."""
    la, lb = np.log10(SAMPLE_RATE_A), np.log10(SAMPLE_RATE_B)
    lo, hi = max(la.min(), lb.min()), min(la.max(), lb.max())
    xs = np.linspace(lo, hi, 200_001)

    def lagrange(x_pts, y_pts, x):
        total = np.zeros_like(x)
        for i, (xi, yi) in enumerate(zip(x_pts, y_pts)):
            term = np.full_like(x, yi)
            for j, xj in enumerate(x_pts):
                if j != i:
                    term *= (x - xj) / (xi - xj)
            total += term
        return total

    gap = lagrange(lb, SAMPLE_PSNR_B, xs) - lagrange(la, SAMPLE_PSNR_A, xs)
    expected = float(np.sum((gap[1:] + gap[:-1]) / 2 * np.diff(xs)) / (hi - lo))
    assert bd_quality(SAMPLE_RATE_A, SAMPLE_PSNR_A, SAMPLE_RATE_B, SAMPLE_PSNR_B).value == pytest.approx(
        expected, abs=1e-8)


def test_swapping_anchor_and_test_inverts_the_rate_ratio():
    forward = bd_rate(FAU_RATE_A, FAU_PSNR_A, FAU_RATE_B, FAU_PSNR_B).value
    backward = bd_rate(FAU_RATE_B, FAU_PSNR_B, FAU_RATE_A, FAU_PSNR_A).value
    assert (1 + forward / 100) * (1 + backward / 100) == pytest.approx(1.0, abs=1e-12)
    assert bd_rate(FAU_RATE_A, FAU_PSNR_A, FAU_RATE_A, FAU_PSNR_A).value == pytest.approx(0.0, abs=1e-12)


def test_unordered_points_give_the_same_deltas():
    order = [2, 0, 3, 1]
    shuffled = [SAMPLE_RATE_B[i] for i in order], [SAMPLE_PSNR_B[i] for i in order]
    assert bd_rate(SAMPLE_RATE_A, SAMPLE_PSNR_A, *shuffled).value == pytest.approx(
        bd_rate(SAMPLE_RATE_A, SAMPLE_PSNR_A, SAMPLE_RATE_B, SAMPLE_PSNR_B).value, abs=1e-9)


def test_no_value_without_two_points_or_without_overlap():
    one = bd_rate(FAU_RATE_A, FAU_PSNR_A, FAU_RATE_B[:1], FAU_PSNR_B[:1])
    assert one.value is None and one.fit == "n/a" and "anchor 4, test 1" in one.note
    assert bd_quality(FAU_RATE_A, FAU_PSNR_A, [], []).value is None
    # a lossless (inf dB) or failed (nan) point is left out, not fitted
    assert bd_rate(FAU_RATE_A, FAU_PSNR_A, [1000, 2000], [math.inf, math.nan]).value is None
    far = bd_rate(FAU_RATE_A, FAU_PSNR_A, FAU_RATE_B, [p + 20 for p in FAU_PSNR_B])
    assert far.value is None and "do not overlap" in far.note
    far_rate = bd_quality(FAU_RATE_A, FAU_PSNR_A, [r * 100 for r in FAU_RATE_B], FAU_PSNR_B)
    assert far_rate.value is None and "do not overlap" in far_rate.note
    flat = bd_rate(FAU_RATE_A, FAU_PSNR_A, [100, 200], [35.0, 35.0])
    assert flat.value is None and "distinct quality" in flat.note
    with pytest.raises(ValueError, match="1-D of one length"):
        bd_rate([1, 2], [30], [1, 2], [30, 31])


def test_msssim_db_spreads_values_near_one():
    assert msssim_db(0.9) == pytest.approx(10.0)
    assert msssim_db(0.99) == pytest.approx(20.0)
    assert msssim_db(1.0) == math.inf
