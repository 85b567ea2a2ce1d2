"""Compound scaling: a parameter budget sizes every part of a model together (models.sizing, models.parts)."""
import inspect
import re

import numpy as np
import pytest
import torch

from nvrloader.models import create_model, model_class, model_config, weights_per_part
from nvrloader.models.parts import decoder_share
from nvrloader.models.registry import count_model_params, count_params
from nvrloader.models.sizing import LOW_BUDGET, Ramp, grid_strides

FAMILIES = ["dnerv", "nerv", "enerv", "hnerv", "snerv"]


def sized(name: str, params: int, resolution, size=None, **overrides) -> torch.nn.Module:
    with torch.device("meta"):
        return create_model(name, size, resolution, params=params, **overrides)


@pytest.mark.parametrize("resolution", [(64, 80), (256, 320)])
def test_dnerv_budgets_put_most_weights_in_the_decoder(resolution):
    """20k..20M weights: within 3% of the budget, stages + heads hold the majority, and the time
    embedding never dominates (before compound scaling it held 2/3 of a 57k model at fc_dim 1)."""
    for budget in np.geomspace(20_000, 20_000_000, 9).astype(int):
        model = sized("dnerv", int(budget), resolution)
        got = count_model_params(model)
        assert abs(got - budget) <= 0.03 * budget, (budget, got)
        parts = weights_per_part(model)
        assert sum(parts.values()) == got
        assert decoder_share(model) > 0.5, (budget, parts)
        assert parts["time_embedding"] < 0.25 * got, (budget, parts)


def test_cpu_budget_gives_a_sensible_dnerv():
    """A 64x80 build at ~0.3 bpp leaves 10k-60k weights: a small time embedding, fc_dim chosen last."""
    cfg = sized("dnerv", 40_000, (64, 80)).config
    assert cfg["strides"] == (4, 2, 2)
    assert 16 <= cfg["pe_levels"] <= 32 and 32 <= cfg["stem_dim"] <= 64 and 8 <= cfg["content_dim"] <= 16
    assert cfg["fc_dim"] >= 3


def test_small_budgets_shrink_the_time_embedding_first():
    """From the paper's widths down, the positional levels and the stem fall faster than the content width."""
    big, small = sized("dnerv", 16_000_000, (256, 320)).config, sized("dnerv", 100_000, (256, 320)).config
    shrink = {k: small[k] / big[k] for k in ("pe_levels", "stem_dim", "content_dim")}
    assert max(shrink["pe_levels"], shrink["stem_dim"]) < shrink["content_dim"], shrink


def effective(name: str, cfg: dict, key: str):
    """A constructor argument's value: as configured, else the class default (HNeRV's stem_dim None = fc_dim)."""
    value = cfg[key] if key in cfg else inspect.signature(model_class(name)).parameters[key].default
    return effective(name, cfg, "fc_dim") if key == "stem_dim" and value is None else value


@pytest.mark.parametrize("name, size", [("dnerv", "S"), ("dnerv", "M"), ("dnerv", "L"), ("nerv", "S"),
                                        ("nerv", "M"), ("enerv", "S"), ("hnerv", "paper"), ("snerv", "paper")])
def test_a_paper_preset_is_what_its_budget_gives(name, size):
    """The scaling rule is fitted to the papers: asked for a preset's own count, it rebuilds that preset."""
    preset = model_config(name, size)
    budget = count_params(name, **preset)
    cfg = sized(name, budget, preset["resolution"], size).config
    keys = [*model_class(name).SCALING.ramps, "fc_dim", "stem_dim", "strides"]
    assert {k: effective(name, cfg, k) for k in keys} == {k: effective(name, preset, k) for k in keys}
    assert count_params(name, **cfg) == budget


def test_by_name_the_presets_keep_the_paper_counts():
    for size, expected in (("S", 21.4e6), ("M", 38.9e6), ("L", 61.3e6)):
        with torch.device("meta"):
            got = count_model_params(create_model("dnerv", size))
        assert abs(got - expected) <= 0.02 * expected


@pytest.mark.parametrize("resolution", [(64, 80), (256, 320)])
def test_below_the_floor_the_error_says_what_is_needed(resolution):
    with pytest.raises(ValueError, match=r"needs at least \d+ parameters") as err:
        sized("dnerv", 3_000, resolution)
    floor = int(re.search(r"at least (\d+)", str(err.value)).group(1))
    assert 3_000 < floor < 20_000
    model = sized("dnerv", floor, resolution)                      # the floor itself builds ...
    assert abs(count_model_params(model) - floor) <= 0.03 * floor
    with pytest.raises(ValueError, match="needs at least"):      # ... and 5% below it does not
        sized("dnerv", int(floor * 0.95), resolution)


def test_hnerv_200k_at_128x160_lands_within_3_percent():
    """Stored weights only: the ConvNeXt encoder (~17k at this size) is used to build, never stored."""
    model = sized("hnerv", 200_000, (128, 160))
    assert abs(count_model_params(model) - 200_000) <= 0.03 * 200_000
    assert "encoder" not in weights_per_part(model)


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("budget", [20_000, 150_000, 2_000_000])
def test_every_family_lands_within_3_percent_at_64x80(name, budget):
    model = sized(name, budget, (64, 80))
    assert abs(count_model_params(model) - budget) <= 0.03 * budget
    assert decoder_share(model) > 0.35, weights_per_part(model)


def test_explicit_overrides_are_pinned():
    cfg = sized("dnerv", 100_000, (64, 80), pe_levels=16, content_dim=8, strides=(2, 2, 2, 2)).config
    assert (cfg["pe_levels"], cfg["content_dim"], cfg["strides"]) == (16, 8, (2, 2, 2, 2))
    assert abs(count_params("dnerv", **cfg) - 100_000) <= 0.03 * 100_000


@pytest.mark.parametrize("name, parts", [
    ("dnerv", ["gtmlp", "time_embedding", "content_encoder", "stages", "heads"]),
    ("nerv", ["time_embedding", "stages", "heads"]),
    ("enerv", ["time_embedding", "spatial_context", "fusion", "temporal_norm", "stages", "heads"]),
    ("hnerv", ["embedding_stem", "stages", "heads"]),
    ("snerv", ["embedding_stem", "stages", "fusion", "heads"])])
def test_weights_per_part_covers_the_stored_weights(name, parts):
    model = create_model(name, "tiny")
    counted = weights_per_part(model)
    assert list(counted) == parts and all(v > 0 for v in counted.values())
    assert sum(counted.values()) == count_model_params(model)


def test_ramp_and_strides():
    ramp = Ramp(24, 240, 16e6, floor=8)
    assert ramp(LOW_BUDGET) == 24 and ramp(16e6) == 240 and ramp(1e9) == 240 and ramp(10) == 8
    values = [ramp(p) for p in np.geomspace(1e3, 1e8, 30)]
    assert values == sorted(values)
    assert grid_strides("m", (64, 80)) == (4, 2, 2)
    assert grid_strides("m", (128, 160)) == (4, 2, 2, 2)
    assert grid_strides("m", (256, 320)) == (4, 2, 2, 2, 2)          # D-NeRV on UCF101
    assert grid_strides("m", (720, 1280)) == (5, 2, 2, 2, 2)         # NeRV-L on Bunny
