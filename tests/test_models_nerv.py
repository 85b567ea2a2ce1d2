"""NeRV, E-NeRV and D-NeRV through the registry: paper sizes, forward passes, gradients, budgets."""
import pytest
import torch

from nvrloader.models import create_model, list_models, model_class, model_config, model_family
from nvrloader.models.registry import count_model_params, count_params, solve_width
from sgd_steps import sgd_steps

FAMILY = ["nerv", "enerv", "dnerv"]


def make_batch(model: torch.nn.Module, batch: int = 2, frames: int = 8) -> dict[str, torch.Tensor]:
    """A batch following the calling convention, with the side information the model declares."""
    h, w = model.resolution
    out = {"t": torch.rand(batch, frames)}
    if model_family(model.MODEL_NAME).side_info == "keyframes":
        out["keyframes"] = torch.rand(batch, 2, 3, h, w)
        out["offset"] = torch.arange(frames, dtype=torch.float32).expand(batch, frames)
        out["span"] = torch.tensor([float(frames), 3.0] * batch)[:batch]
    return out


# Paper counts: NeRV-L and E-NeRV (E-NeRV paper, 720p Bunny), D-NeRV UCF101 S/M/L and the
# D-NeRV paper's NeRV baselines on UCF101 (REFERENCE.md).
PAPER = [
    ("nerv", "L", 12.57e6), ("enerv", "L", 12.49e6),
    ("dnerv", "S", 21.4e6), ("dnerv", "M", 38.9e6), ("dnerv", "L", 61.3e6),
    ("nerv", "ucf-S", 88e6), ("nerv", "ucf-M", 105e6), ("nerv", "ucf-L", 127e6),
]


@pytest.mark.parametrize("name,size,expected", PAPER)
def test_paper_parameter_counts(name, size, expected):
    got = count_params(name, **model_config(name, size))
    assert abs(got - expected) <= 0.02 * expected, f"{name} {size}: {got} vs {expected}"


def test_nerv_l_count_by_hand():
    # gamma(t) 160 -> 512 -> 112*9*16; blocks 112->112 (s5), 112->96, then 96->96 x3 (s2); 1x1 head
    mlp = (160 * 512 + 512) + (512 * 16128 + 16128)
    convs = (112 * 112 * 25 * 9 + 112 * 25) + (112 * 96 * 4 * 9 + 96 * 4) + 3 * (96 * 96 * 4 * 9 + 96 * 4)
    assert count_params("nerv", **model_config("nerv", "L")) == mlp + convs + 96 * 3 + 3


def test_enerv_l_channels():
    with torch.device("meta"):
        model = create_model("enerv", "L")
    assert model.grid == (9, 16)
    outs = [model.blocks[0].conv2.out_channels] + [b.conv.out_channels // 4 for b in model.blocks[1:]]
    assert outs == [588, 294, 147, 96, 96]
    assert model.blocks[0].conv1.out_channels == (196 // 4) * 25     # C0 = min(C1, C2) / 4


def test_registry_lists_and_rejects():
    assert set(FAMILY) <= set(list_models())
    with pytest.raises(ValueError, match="unknown model"):
        model_class("nope")
    with pytest.raises(ValueError, match="no size"):
        model_config("nerv", "XXL")


@pytest.mark.parametrize("name", FAMILY)
@pytest.mark.parametrize("size", ["tiny", "tiny128"])
def test_tiny_forward_shape_and_range(name, size):
    torch.manual_seed(0)
    model = create_model(name, size)
    assert count_model_params(model) < 1_000_000
    with torch.no_grad():
        out = model(make_batch(model))
    assert out.shape == (2, 8, 3, *model.resolution)
    assert out.min() >= 0 and out.max() <= 1
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", FAMILY)
def test_gradients_reach_every_parameter(name):
    torch.manual_seed(0)
    model = create_model(name, "tiny")
    batch = make_batch(model, batch=1)
    target = torch.rand(1, 8, 3, *model.resolution)
    sgd_steps(model, batch, target)
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: no gradient for {pname}"
        assert p.grad.abs().sum() > 0, f"{name}: zero gradient for {pname}"


@pytest.mark.parametrize("name", FAMILY)
def test_bad_resolution_is_a_clear_error(name):
    with pytest.raises(ValueError, match=rf"{name}: resolution 60x80 .* nearest valid: 48x80, 64x80"):
        create_model(name, "tiny", resolution=(60, 80))


@pytest.mark.parametrize("name", FAMILY)
def test_any_divisible_resolution_works(name):
    model = create_model(name, "tiny", resolution=(32, 48))
    assert model.grid == (2, 3)
    with torch.no_grad():
        assert model(make_batch(model, batch=1)).shape == (1, 8, 3, 32, 48)


@pytest.mark.parametrize("name", FAMILY)
@pytest.mark.parametrize("resolution", [(64, 80), (128, 160)])
@pytest.mark.parametrize("budget", [60_000, 400_000, 3_000_000])
def test_parameter_budget(name, resolution, budget):
    model = create_model(name, "tiny", resolution=resolution, params=budget)
    assert abs(count_model_params(model) - budget) <= 0.03 * budget


def test_budget_out_of_reach_says_so():
    with pytest.raises(ValueError, match="away from the budget"):
        solve_width("dnerv", 1_000, **model_config("dnerv", "tiny"))


@pytest.mark.parametrize("name", FAMILY)
def test_state_dict_round_trip_rebuilds_the_same_decoder(name):
    torch.manual_seed(0)
    model = create_model(name, "tiny")
    torch.manual_seed(1)
    twin = create_model(name, "tiny")
    twin.load_state_dict(model.state_dict())
    batch = make_batch(model, batch=1)
    with torch.no_grad():
        torch.testing.assert_close(twin(batch), model(batch))


@pytest.mark.parametrize("name", ["nerv", "enerv", "hnerv", "snerv"])
def test_other_families_keep_pytorch_default_init(name):
    """The NeRV, E-NeRV, HNeRV and SNeRV authors' decoders use PyTorch's default (kaiming-uniform, a=sqrt 5)
    init: bound 1 / sqrt(fan_in), non-zero biases. Only D-NeRV's authors re-initialise (xavier)."""
    torch.manual_seed(0)
    model = create_model(name, "tiny")
    blocks = model.decoder.stages if hasattr(model, "decoder") else model.blocks
    conv = blocks[-1].conv
    fan_in, _ = torch.nn.init._calculate_fan_in_and_fan_out(conv.weight)
    bound = fan_in ** -0.5
    assert 0.9 * bound < conv.weight.abs().max().item() <= bound
    assert torch.count_nonzero(conv.bias) > 0


@pytest.mark.parametrize("name", FAMILY)
def test_half_precision_model_decodes_like_fp32(name):
    """``--half`` decoding casts the model and its inputs to fp16: the PE must keep fp32 frequencies
    (1.25^i pi overflows fp16) and hand the stem an fp16 input."""
    torch.manual_seed(0)
    model = create_model(name, "tiny").eval()
    batch = make_batch(model, batch=1)
    if "keyframes" in batch:   # 8-bit, as decoded: the same in fp16, so D-NeRV's flow prior sees the same images
        batch["keyframes"] = batch["keyframes"].mul(255).round().div(255)
    with torch.no_grad():
        reference = model(batch)
        out = model.half()({k: v.half() for k, v in batch.items()})
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    assert (out.float() - reference).abs().max() < 0.05
