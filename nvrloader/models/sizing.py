"""Compound scaling: one parameter budget sets every part of a model together.

Asked for ``params`` weights, a family does not just widen or narrow its decoder (``fc_dim``) with
everything else fixed: at small budgets that leaves a paper-sized time embedding (240 positional
levels x a 512-wide stem) holding most of the weights while the decoder collapses to one channel.
Instead every auxiliary width follows the budget on a :class:`Ramp` (log-linear in the budget,
reaching the paper's value at the family's ``top`` budget and never exceeding it), the strides follow
the resolution, and the decoder width is solved last. The time embedding ramps fall fastest, so
small budgets shrink it first. A linear "fine" width (the stem's) absorbs the decoder width's
rounding so the model lands within 1% of the budget; an "alternate" width may move by up to 25% when that
keeps the fine width closer to its ramp. Below the smallest model of the family at that resolution
a ValueError says how many parameters it needs.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from nvrloader.models.blocks import auto_strides
from nvrloader.models.registry import count_params, model_class, solve_width

# Every ramp is anchored at this budget (a 64x80 CPU build at ~0.3 bpp on ~1000 frames) ...
LOW_BUDGET = 40_000
# ... and the alternate width may move by these factors around its ramp (nearest first), tried only
# while the fine width has to move by more than GOOD_ENOUGH (log ratio) to land.
ALTERNATE_FACTORS = (1.0, 0.9, 1.1, 0.8, 1.25)
GOOD_ENOUGH = 0.1
# The fine width moves only as far as needed to land within this share of the budget.
LANDING = 0.01


@dataclass(frozen=True)
class Ramp:
    """A width that follows the budget: ``low`` at ``LOW_BUDGET``, ``high`` from ``top`` on, log-linear in
    between (and below, down to ``floor``)."""

    low: int
    high: int
    top: float
    floor: int = 1

    def __call__(self, params: float) -> int:
        if params >= self.top:
            return self.high
        slope = math.log(self.high / self.low) / math.log(self.top / LOW_BUDGET)
        return int(max(self.floor, min(self.high, round(self.high * (params / self.top) ** slope))))


@dataclass(frozen=True)
class Scaling:
    """How a family follows a budget (a model class's ``SCALING``).

    ``width`` is solved last; ``fine`` must enter the parameter count linearly (a stem width) and
    absorbs the width's rounding (its target is its ramp, else the solved width); ``alternate`` is a
    ramped width tried within ``ALTERNATE_FACTORS``; ``strides(model, resolution)`` picks the strides.
    """

    ramps: dict[str, Ramp] = field(default_factory=dict)
    width: str = "fc_dim"
    fine: str | None = "stem_dim"
    fine_floor: int = 4
    alternate: str | None = None
    strides: Callable[[str, Sequence[int]], tuple[int, ...]] | None = None


def grid_strides(model: str, resolution: Sequence[int]) -> tuple[int, ...]:
    """NeRV / D-NeRV strides for any resolution: HNeRV's total-stride rule (the largest total stride
    that leaves at least 8 grid cells), with the first stage taking a 4 where the others are 2s
    (256x320 -> 4,2,2,2,2 as D-NeRV; 128x160 -> 4,2,2,2; 64x80 -> 4,2,2; 720x1280 -> 5,2,2,2,2 as NeRV)."""
    strides = list(auto_strides(model, resolution))
    if len(strides) >= 2 and strides[0] == strides[1] == 2:
        strides = [4, *strides[2:]]
    return tuple(strides)


def fit_budget(name: str, params: int, cfg: dict[str, Any], pinned: Iterable[str] = (),
               tolerance: float = 0.03) -> dict[str, Any]:
    """``cfg`` with every scaled width chosen for a ``params`` budget (see the module docstring).

    Keys in ``pinned`` (the caller's explicit overrides) are kept. Families without a ``SCALING`` fall
    back to :func:`solve_width`. Raises ValueError below the family's floor or if the landing misses
    ``tolerance``.
    """
    cls = model_class(name)
    scaling: Scaling | None = getattr(cls, "SCALING", None)
    if scaling is None:
        return solve_width(name, params, tolerance, **cfg)
    pinned = frozenset(pinned)
    best = _best_config(name, params, scaling, _ramped(name, params, scaling, cfg, pinned), pinned)
    if best is None:
        floor = minimum_params(name, cfg, pinned, start=params)
        res = "x".join(str(v) for v in cfg.get("resolution", ()))
        raise ValueError(f"{name}: {params} parameters is below the smallest {name} model at {res}: it needs "
                         f"at least {floor} parameters (the smallest model its sizing rule builds there)")
    got = _count(name, **best)
    if abs(got - params) > tolerance * params:
        raise ValueError(f"{name}: the closest sizing gives {got} parameters, more than {tolerance:.0%} away "
                         f"from the budget {params} (pinned: {', '.join(sorted(pinned)) or 'none'})")
    return best


def minimum_params(name: str, cfg: dict[str, Any], pinned: Iterable[str] = (), start: int = 1000) -> int:
    """The smallest budget :func:`fit_budget` can build at ``cfg``'s resolution (to ~1%): a feasible budget
    is found by doubling from ``start``, then bisected on a log scale."""
    scaling: Scaling = model_class(name).SCALING
    pinned = frozenset(pinned)

    smallest = {} if scaling.width in pinned else {scaling.width: 1}

    def feasible(p: int) -> bool:  # as fit_budget, but only width 1 needs to fit (two counts per candidate)
        ramped = _ramped(name, p, scaling, cfg, pinned)
        return any(_land(name, p, scaling, {**cand, **smallest}, pinned | {scaling.width}) is not None
                   for cand in _alternates(scaling, ramped, pinned)[1])

    hi = max(int(start), 1000)
    while not feasible(hi):
        hi *= 2
        if hi > 1 << 40:
            raise ValueError(f"{name}: no budget builds this configuration")
    lo = hi // 2
    while feasible(lo) and lo > 1:
        hi, lo = lo, lo // 2
    while hi > lo * 1.01:
        mid = int(math.sqrt(lo * hi))
        lo, hi = (lo, mid) if feasible(mid) else (mid, hi)
    return hi


def _ramped(name: str, params: int, scaling: Scaling, cfg: dict[str, Any], pinned: frozenset[str]) -> dict[str, Any]:
    out = dict(cfg)
    if scaling.strides is not None and "strides" not in pinned:
        out["strides"] = scaling.strides(name, out["resolution"])
    out.update({key: ramp(params) for key, ramp in scaling.ramps.items() if key not in pinned})
    return out


def _best_config(name: str, params: int, scaling: Scaling, cfg: dict[str, Any],
                 pinned: frozenset[str]) -> dict[str, Any] | None:
    """Over the alternate width's candidates, the landing that moves the fine and alternate widths least."""
    alt, candidates = _alternates(scaling, cfg, pinned)
    best: tuple[float, dict[str, Any]] | None = None
    hint = 1
    for cand in candidates:
        landed = _land(name, params, scaling, cand, pinned, hint)
        if landed is None:
            continue
        hint = landed[1][scaling.width]
        cost = landed[0] + (abs(math.log(cand[alt] / cfg[alt])) if alt is not None else 0.0)
        if best is None or cost < best[0]:
            best = (cost, landed[1])
        if best[0] < GOOD_ENOUGH:
            break
    return None if best is None else best[1]


def _alternates(scaling: Scaling, cfg: dict[str, Any], pinned: frozenset[str]) -> tuple[str | None, list[dict]]:
    """The alternate width's key (None if pinned or absent) and the configurations to try, nearest first."""
    alt = scaling.alternate if scaling.alternate not in pinned else None
    if alt is None:
        return None, [cfg]
    ramp = scaling.ramps[alt]
    values = dict.fromkeys(max(ramp.floor, min(ramp.high, round(cfg[alt] * f))) for f in ALTERNATE_FACTORS)
    return alt, [{**cfg, alt: v} for v in values]


def _land(name: str, params: int, scaling: Scaling, cfg: dict[str, Any], pinned: frozenset[str],
          hint: int = 1) -> tuple[float, dict[str, Any]] | None:
    """Solve the width, then move the fine width (linear in the count) just enough to land within
    ``LANDING`` of the budget; returns (cost, config).

    The cost is how far the fine width moved from its target (log ratio), or the relative miss when
    there is no free fine width; None when even width 1 cannot be built."""
    key, fine = scaling.width, scaling.fine if scaling.fine not in pinned else None
    if key in pinned:
        widths = [cfg[key]]
    else:
        under = _largest_under(name, key, params, cfg, hint)
        widths = [w for w in (under, under + 1) if w >= 1]
    best: tuple[float, dict[str, Any]] | None = None
    for w in widths:
        trial = {**cfg, key: w}
        if fine is None:
            cost, solved = abs(_count(name, **trial) - params) / params, trial
        else:
            target = cfg.get(fine) if fine in scaling.ramps else w
            base = _count(name, **{**trial, fine: target})
            miss = params - base
            value = target
            if abs(miss) > LANDING * params:
                slope = max(1, _count(name, **{**trial, fine: target + 1}) - base)
                value += int(math.copysign(math.ceil((abs(miss) - LANDING * params) / slope), miss))
            if value < scaling.fine_floor:
                continue
            cost, solved = abs(math.log(value / target)), {**trial, fine: value}
        if best is None or cost < best[0]:
            best = (cost, solved)
    return best


def _largest_under(name: str, key: str, params: int, cfg: dict[str, Any], hint: int = 1) -> int:
    """The largest ``key`` whose model (fine width at its target) stays within ``params``; 0 if none.

    Galloping search from ``hint`` (counts grow with the width), then bisection."""
    def fits(w: int) -> bool:
        return _count(name, **{**cfg, key: w}) <= params

    hint = max(1, int(hint))
    if fits(hint):
        lo, step = hint, 1
        while fits(lo + step):
            lo, step = lo + step, step * 2
            if lo > 1 << 16:
                raise ValueError(f"{name}: no {key} reaches {params} parameters")
        hi = lo + step
    else:
        hi, step = hint, 1
        while hi - step >= 1 and not fits(hi - step):
            hi, step = hi - step, step * 2
        if hi - step < 1 and not fits(1):
            return 0
        lo = max(1, hi - step)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if _count(name, **{**cfg, key: mid}) <= params else (lo, mid)
    return lo


def _count(name: str, **cfg: Any) -> int:
    """:func:`count_params`, memoised: a solve re-counts the same configurations (a build takes ~10 ms)."""
    key = tuple(sorted((k, _freeze(v)) for k, v in cfg.items()))
    try:
        return _count_frozen(name, key)
    except TypeError:  # an unhashable setting: count without the cache
        return count_params(name, **cfg)


@functools.lru_cache(maxsize=8192)
def _count_frozen(name: str, items: tuple[tuple[str, Any], ...]) -> int:
    return count_params(name, **dict(items))


def _freeze(value: Any) -> Any:
    return tuple(_freeze(v) for v in value) if isinstance(value, (list, tuple)) else value
