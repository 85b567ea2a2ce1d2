"""One registry for every model family, timm-style: presets are plain data, `create_model` builds them.

A model class registers itself with `@register_model("name", layout=..., recipe=...)`: that one
entry is the whole family (model class, presets, training recipe, time layout and side information),
and the codec of the same name derives from it. The class carries:
  - ``PRESETS``: ``{size: {kwarg: value}}``, plain data (``resolution`` may be part of a preset);
  - ``WIDTH_KEY``: the constructor argument that sets the width (``fc_dim`` or equivalent), solved
    for when a parameter budget is asked for;
  - optionally ``FINE_WIDTH_KEY``: a second, finer-grained width (e.g. the stem MLP's hidden size)
    used to close the gap when one step of ``WIDTH_KEY`` is coarser than the tolerance, as happens
    for small budgets (``solve_width``, the fallback sizing);
  - optionally ``SCALING`` (``models.sizing.Scaling``): how every width follows a parameter budget,
    used by ``create_model(..., params=...)``; and ``PARTS`` (``models.parts``): which parameters
    make up which part, for ``weights_per_part``.
Each class validates its own resolution (a ValueError naming the valid ones).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping

import torch
from torch import nn

# Peak lr of the CPU presets ("tiny*": 10k-300k weights fitted for minutes) in every family, in place of
# the papers' GPU recipes (hundreds of epochs of millions of weights): measured with 120 s (60 s) fits at
# 0.3 bpp, 5e-3 beat each family's paper lr by 0.5 to 9.6 dB (README, *Learning rate of the tiny presets*).
TINY_LR = 5e-3
# How a family sees time, and what its decoder reads besides the weights.
LAYOUT_SIDE_INFO = {"time": "none", "embedding": "embeddings", "subband": "embeddings", "clip": "keyframes"}


@dataclass(frozen=True)
class ModelFamily:
    """Everything the codec, the fit and the decoder need to know about one model family."""

    name: str
    model: type[nn.Module]
    layout: str                      # a key of LAYOUT_SIDE_INFO
    recipe: Mapping[str, Any] = field(default_factory=dict)  # FitConfig values from the family's paper

    @property
    def presets(self) -> Mapping[str, dict[str, Any]]:
        return self.model.PRESETS

    @property
    def side_info(self) -> str:
        return LAYOUT_SIDE_INFO[self.layout]


_FAMILIES: dict[str, ModelFamily] = {}


def register_model(name: str, *, layout: str,
                   recipe: Mapping[str, Any]) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator adding a model family to the registry under ``name``."""
    if layout not in LAYOUT_SIDE_INFO:
        raise ValueError(f"model {name!r}: layout must be one of {', '.join(LAYOUT_SIDE_INFO)}, got {layout!r}")

    def wrap(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _FAMILIES:
            raise ValueError(f"model {name!r} is registered twice")
        cls.MODEL_NAME = name
        by_size = {size: dict(values) for size, values in recipe.get("by_size", {}).items()}
        for size in cls.PRESETS:
            if size.startswith("tiny"):
                by_size.setdefault(size, {}).setdefault("lr", TINY_LR)
        _FAMILIES[name] = ModelFamily(name, cls, layout, MappingProxyType({**recipe, "by_size": by_size}))
        return cls

    return wrap


def list_models() -> list[str]:
    return sorted(_FAMILIES)


def model_family(name: str) -> ModelFamily:
    try:
        return _FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(list_models())}") from None


def model_class(name: str) -> type[nn.Module]:
    return model_family(name).model


def model_config(name: str, size: str | None = None, resolution: tuple[int, int] | None = None,
                 **overrides: Any) -> dict[str, Any]:
    """The constructor kwargs of a preset, with ``resolution`` and overrides applied (plain data)."""
    cls = model_class(name)
    presets: dict[str, dict[str, Any]] = cls.PRESETS
    size = size or "tiny"
    if size not in presets:
        raise ValueError(f"model {name!r} has no size {size!r}; known: {', '.join(presets)}")
    cfg = dict(presets[size])
    if resolution is not None:
        cfg["resolution"] = tuple(int(v) for v in resolution)
    cfg.update(overrides)
    return cfg


def count_params(name: str, **cfg: Any) -> int:
    """Parameter count of a configuration, built on the meta device (no memory, no init cost)."""
    with torch.device("meta"):
        model = model_class(name)(**cfg)
    return count_model_params(model)


def count_model_params(model: nn.Module) -> int:
    """Parameters as the papers count them (a model may exclude e.g. an encoder via ``counted_parameters``)."""
    params = model.counted_parameters() if hasattr(model, "counted_parameters") else model.parameters()
    return sum(p.numel() for p in params)


def _closest_width(name: str, key: str, params: int, cfg: dict[str, Any]) -> tuple[int, int]:
    """Binary search (counts grow with width): the largest width under budget and the closest one."""
    lo, hi = 1, 8
    while count_params(name, **{**cfg, key: hi}) < params:
        lo, hi = hi, hi * 2
        if hi > 1 << 16:
            raise ValueError(f"{name}: no {key} reaches {params} parameters")
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if count_params(name, **{**cfg, key: mid}) < params:
            lo = mid
        else:
            hi = mid
    best = min((lo, hi), key=lambda w: abs(count_params(name, **{**cfg, key: w}) - params))
    return lo, best


def solve_width(name: str, params: int, tolerance: float = 0.03, **cfg: Any) -> dict[str, Any]:
    """Find the width (``WIDTH_KEY``) whose parameter count is closest to ``params``.

    If even the closest width misses by more than ``tolerance`` and the class names a
    ``FINE_WIDTH_KEY``, the largest width under budget is kept and the fine width fills the rest.
    """
    cls = model_class(name)
    key = cls.WIDTH_KEY
    under, best = _closest_width(name, key, params, cfg)
    solved = {**cfg, key: best}
    got = count_params(name, **solved)
    fine = getattr(cls, "FINE_WIDTH_KEY", None)
    if abs(got - params) > tolerance * params and fine is not None:
        try:
            _, fine_best = _closest_width(name, fine, params, {**cfg, key: under})
        except ValueError:
            fine_best = None
        if fine_best is not None:
            candidate = {**cfg, key: under, fine: fine_best}
            if abs(count_params(name, **candidate) - params) < abs(got - params):
                solved, got = candidate, count_params(name, **candidate)
    if abs(got - params) > tolerance * params:
        widths = ", ".join(f"{k}={solved[k]}" for k in (key, fine) if k in solved)
        raise ValueError(f"{name}: closest widths {widths} give {got} parameters, "
                         f"more than {tolerance:.0%} away from the budget {params}")
    return solved


def create_model(name: str, size: str | None = None, resolution: tuple[int, int] | None = None,
                 params: int | None = None, **overrides: Any) -> nn.Module:
    """Build a registered model from a preset, optionally re-sized to a parameter budget.

    With ``params``, the preset gives the structure (fusion, expansion, clip length, ...) and the
    family's compound-scaling rule (``models.sizing``) every width and the strides; explicit
    ``overrides`` stay as given.

    The model keeps the exact constructor kwargs in ``model.config`` (plain data), so an archive can
    store them and a decoder rebuild the same architecture.
    """
    cfg = model_config(name, size, resolution, **overrides)
    if params is not None:
        from nvrloader.models.sizing import fit_budget  # sizing builds on this module (count_params)
        cfg = fit_budget(name, params, cfg, pinned=overrides)
    model = model_class(name)(**cfg)
    model.config = cfg
    return model
