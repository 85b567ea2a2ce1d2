"""Where a model's weights are: stored parameters counted per part (time embedding, decoder stages, ...).

A model class names its parts in ``PARTS``: ``(part, regex)`` pairs matched in order against parameter
names (first match wins); unmatched parameters count under their top-level module's name. Only the
parameters the papers count (``counted_parameters()``, e.g. without HNeRV's encoder) are included, so
the parts sum to ``count_model_params(model)``.
"""
from __future__ import annotations

import re

from torch import nn


def weights_per_part(model: nn.Module) -> dict[str, int]:
    """``{part: number of weights}`` in ``PARTS`` order, then any other top-level modules."""
    rules = [(part, re.compile(pattern)) for part, pattern in getattr(model, "PARTS", ())]
    counted = {id(p) for p in (model.counted_parameters() if hasattr(model, "counted_parameters")
                               else model.parameters())}
    out = {part: 0 for part, _ in rules}
    for name, param in model.named_parameters():
        if id(param) not in counted:
            continue
        part = next((p for p, rx in rules if rx.search(name)), name.split(".")[0])
        out[part] = out.get(part, 0) + param.numel()
    return out


def decoder_share(model: nn.Module) -> float:
    """Share of the weights in the decoder proper: the "stages" and "heads" parts."""
    parts = weights_per_part(model)
    return (parts.get("stages", 0) + parts.get("heads", 0)) / sum(parts.values())
