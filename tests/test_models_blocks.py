"""Shared model layers: positional encoding, up-sampling blocks, flow warping, resolution checks."""
import math

import pytest
import torch

from nvrloader.models.blocks import (NeRVBlock, PositionalEncoding, UpgradedNeRVBlock, initial_grid,
                                     instance_norm, make_activation, mlp, stage_channels, to_unit_range, warp)


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_positional_encoding_matches_closed_form():
    pe = PositionalEncoding(2.0, 3)
    t = torch.tensor([[0.0, 0.25], [0.5, 1.0]])
    out = pe(t)
    assert out.shape == (2, 2, 6)
    for i in range(3):
        angle = (2.0 ** i) * math.pi * t
        torch.testing.assert_close(out[..., 2 * i], torch.sin(angle))
        torch.testing.assert_close(out[..., 2 * i + 1], torch.cos(angle))
    assert pe.dim == 6
    assert "freqs" not in pe.state_dict()          # config, not weights


def test_positional_encoding_rejects_zero_levels():
    with pytest.raises(ValueError, match="levels"):
        PositionalEncoding(1.25, 0)


def test_nerv_block_shape_and_size():
    block = NeRVBlock(8, 5, stride=3)
    assert block(torch.randn(2, 8, 4, 5)).shape == (2, 5, 12, 15)
    assert n_params(block) == 8 * 5 * 9 * 9 + 5 * 9          # conv 3x3 to out * s^2 (+ bias)
    assert NeRVBlock(4, 4, stride=1, kernel_size=5)(torch.randn(1, 4, 6, 6)).shape == (1, 4, 6, 6)


def test_upgraded_block_follows_the_paper_formula():
    c1, c2, s = 16, 48, 5
    block = UpgradedNeRVBlock(c1, c2, stride=s)
    c0 = min(c1, c2) // 4
    # E-NeRV eq. 6: 3 * 3 * C0 * (C1 * s^2 + C2) weights, plus biases
    assert n_params(block) == 9 * c0 * (c1 * s * s + c2) + c0 * s * s + c2
    assert block(torch.randn(1, c1, 3, 4)).shape == (1, c2, 15, 20)


def test_warp_identity_and_integer_shift():
    feats = torch.randn(2, 3, 6, 7)
    torch.testing.assert_close(warp(feats, torch.zeros(2, 2, 6, 7)), feats)
    flow = torch.zeros(2, 2, 6, 7)
    flow[:, 0] = 2.0                                      # sample two pixels to the right
    flow[:, 1] = -1.0                                     # and one row up
    out = warp(feats, flow)
    rows = torch.clamp(torch.arange(6) - 1, 0, 5)        # border padding repeats the edge
    cols = torch.clamp(torch.arange(7) + 2, 0, 6)
    expected = feats[:, :, rows][:, :, :, cols]
    torch.testing.assert_close(out, expected)


def test_warp_half_pixel_is_bilinear():
    feats = torch.arange(12.0).view(1, 1, 3, 4)
    flow = torch.zeros(1, 2, 3, 4)
    flow[:, 0] = 0.5
    out = warp(feats, flow)
    torch.testing.assert_close(out[0, 0, :, :3], (feats[0, 0, :, :3] + feats[0, 0, :, 1:]) / 2)


def test_stage_channels_rules():
    assert stage_channels(112, [5, 2, 2, 2, 2], 1.0, 2, 96) == [112, 96, 96, 96, 96]       # NeRV-L
    assert stage_channels(196, [5, 2, 2, 2, 2], 3.0, 2, 96) == [588, 294, 147, 96, 96]     # E-NeRV
    assert stage_channels(198, [4, 2, 2, 2, 2], 2.0, "stride", 32) == [396, 198, 99, 50, 32]  # D-NeRV S
    assert stage_channels(100, [5, 4, 1, 2], 1.0, 1.2, 12) == [100, 83, 83, 69]            # HNeRV-style


def test_initial_grid_and_errors():
    assert initial_grid("m", (720, 1280), [5, 2, 2, 2, 2]) == (9, 16)
    assert initial_grid("m", (256, 320), [4, 2, 2, 2, 2]) == (4, 5)
    with pytest.raises(ValueError, match=r"m: resolution 250x320 .* 64 .* 192x320, 256x320"):
        initial_grid("m", (250, 320), [4, 2, 2, 2, 2])
    with pytest.raises(ValueError, match="height, width"):
        initial_grid("m", (256,), [4])


def test_small_helpers():
    assert isinstance(make_activation("GELU"), torch.nn.GELU)
    with pytest.raises(ValueError, match="unknown activation"):
        make_activation("mish?")
    net = mlp([4, 8, 3], act="relu", act_last=False)
    assert [type(m).__name__ for m in net] == ["Linear", "ReLU", "Linear"]
    x = torch.tensor([-100.0, 0.0, 100.0])
    torch.testing.assert_close(to_unit_range(x, "tanh"), torch.tensor([0.0, 0.5, 1.0]))
    torch.testing.assert_close(to_unit_range(x, "sigmoid"), torch.tensor([0.0, 0.5, 1.0]))
    with pytest.raises(ValueError, match="output activation"):
        to_unit_range(x, "relu")


def test_warp_grid_stays_exact_under_bf16_autocast():
    """At 256x320 a bf16 grid rounds x = 257..319 to even numbers (up to 1.6 px off); the grid must be fp32."""
    h, w = 256, 320
    ramp = torch.arange(w, dtype=torch.float32).expand(1, 1, h, w).contiguous()   # feature = its x coordinate
    flow = torch.zeros(1, 2, h, w)
    flow[:, 0] = 0.25                                     # exactly representable in bf16
    conv = torch.nn.Conv2d(2, 2, 1)                       # an fp32 op that autocast turns bf16
    with torch.no_grad():
        conv.weight.copy_(torch.eye(2).view(2, 2, 1, 1))
        conv.bias.zero_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16_flow = conv(flow)
        assert bf16_flow.dtype == torch.bfloat16
        out = warp(ramp, bf16_flow)
    expected = (torch.arange(w) + 0.25).clamp(max=w - 1).expand(1, 1, h, w)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected, atol=1e-3, rtol=0)
    torch.testing.assert_close(out, warp(ramp, flow), atol=1e-4, rtol=0)
    # a bf16 flow outside autocast as well: same fp32 grid, output in the features' dtype
    torch.testing.assert_close(warp(ramp, flow.bfloat16()), expected, atol=1e-3, rtol=0)
    assert warp(ramp.bfloat16(), flow).dtype == torch.bfloat16


def test_positional_encoding_keeps_fp32_frequencies_in_half_models():
    """``model.half()`` must not cast the frequencies: 1.25^i pi overflows fp16 from i ~ 45 (NeRV uses 80)."""
    pe = PositionalEncoding(1.25, 80)
    t = torch.tensor([0.0, 0.125, 0.5])
    reference = pe(t)
    pe.half()
    assert pe.freqs.dtype == torch.float32
    out = pe(t.half())
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    low = slice(0, 2 * 40)                       # levels whose angles are meaningful in fp32
    torch.testing.assert_close(out[:, low].float(), reference[:, low], atol=2e-3, rtol=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(PositionalEncoding(1.25, 80)(t), reference)


def test_positional_encoding_of_a_half_model_takes_the_time_in_fp32():
    """Decoders keep the time fp32 for fp16 models: only the encoding is rounded, not the time."""
    t = torch.tensor([7 / 13, 11 / 12])                  # frames of 14- and 13-frame videos, not fp16 numbers
    exact = PositionalEncoding(1.25, 27)(t)
    half = PositionalEncoding(1.25, 27).half()
    out = half(t)
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.float(), exact, atol=1e-3, rtol=0)
    assert (half(t.half()).float() - exact).abs().max() > 0.05   # an fp16 time is off at the high levels


def test_instance_norm_statistics_are_fp32():
    """bf16 statistics of an offset input are off by ~0.1 std; fp32 statistics only round the output."""
    torch.manual_seed(0)
    x = (torch.randn(2, 8, 16, 20) * 3 + 100).bfloat16()
    out = instance_norm(x)
    assert out.dtype == torch.bfloat16
    expected = torch.nn.functional.instance_norm(x.float())
    torch.testing.assert_close(out.float(), expected, atol=2e-2, rtol=0)
