"""D-NeRV specifics: ablation switches, GTMLP, keyframe blending, clip length, saved statistics."""
import pytest
import torch

from nvrloader.models import create_model, model_config, model_family
from nvrloader.models.dnerv import DNeRV, GTMLP
from nvrloader.models.registry import count_params
from sgd_steps import sgd_steps


def build(**overrides) -> DNeRV:
    torch.manual_seed(0)
    return create_model("dnerv", "tiny", **overrides)


def clip_batch(model: DNeRV, frames: int = 8) -> dict[str, torch.Tensor]:
    h, w = model.resolution
    return {"t": torch.linspace(0, 1, frames).unsqueeze(0), "keyframes": torch.rand(1, 2, 3, h, w),
            "offset": torch.arange(frames, dtype=torch.float32).unsqueeze(0), "span": torch.tensor([float(frames)])}


def names(model: torch.nn.Module) -> list[str]:
    return [n for n, _ in model.named_parameters()]


def test_full_model_has_every_part():
    model = build()
    assert model_family(model.MODEL_NAME).side_info == "keyframes"
    assert len(model.flow_heads) == len(model.stages) + 1          # every stage input + the output
    assert all(stage.saf is not None and stage.gtmlp is not None for stage in model.stages)


def test_concat_fusion_has_no_saf_and_wider_convs():
    saf, concat = build(), build(fusion="concat")
    assert not any(".saf." in n for n in names(concat))
    content = model_config("dnerv", "tiny")["content_dim"]
    for a, b in zip(saf.stages, concat.stages):
        assert b.up.conv.in_channels == a.up.conv.in_channels + content
    with pytest.raises(ValueError, match="fusion"):
        build(fusion="add")


def test_gtmlp_off_removes_exactly_the_temporal_mlps():
    cfg = model_config("dnerv", "S")
    full, off = count_params("dnerv", **cfg), count_params("dnerv", **cfg, gtmlp=False)
    t = 8
    channels = [396, 198, 99, 50, 32]          # D-NeRV S: 2 * fc_dim, then / stride, floor 32
    assert full - off == sum(c * t * t + c * t for c in channels)
    assert not any("gtmlp" in n for n in names(build(gtmlp=False)))


def test_flow_off_and_single_scale_flow():
    assert len(build(flow=False, flow_prior=False).flow_heads) == 0
    assert not any("flow" in n for n in names(build(flow=False, flow_prior=False)))
    assert len(build(multiscale_flow=False).flow_heads) == 1


@pytest.mark.parametrize("overrides", [dict(fusion="concat"), dict(gtmlp=False), dict(flow=False, flow_prior=False),
                                       dict(multiscale_flow=False)])
def test_ablations_run_and_train(overrides):
    model = build(**overrides)
    batch = clip_batch(model)
    target = torch.rand(1, 8, 3, 64, 80)

    def in_range(out: torch.Tensor) -> None:
        assert out.shape == (1, 8, 3, 64, 80) and 0 <= out.min() and out.max() <= 1

    sgd_steps(model, batch, target, check=in_range)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_gtmlp_equals_grouped_conv():
    torch.manual_seed(0)
    c, t = 5, 8
    mlp = GTMLP(c, t)
    conv = torch.nn.Conv2d(c * t, c * t, 1, groups=c)
    with torch.no_grad():
        conv.weight.copy_(mlp.weight.reshape(c * t, t, 1, 1))
        conv.bias.copy_(mlp.bias.reshape(c * t))
    x = torch.randn(2, t, c, 3, 4)
    expected = x + conv(x.transpose(1, 2).reshape(2, c * t, 3, 4)).view(2, c, t, 3, 4).transpose(1, 2)
    torch.testing.assert_close(mlp(x), expected)


def test_gtmlp_of_kept_frames_equals_the_rows_of_the_whole_clip():
    torch.manual_seed(0)
    mlp = GTMLP(5, 8)
    x = torch.randn(3, 8, 5, 4, 6)
    keep = torch.tensor([0, 5, 8, 9, 15, 23])
    torch.testing.assert_close(mlp(x, keep), mlp(x).flatten(0, 1)[keep])


VARIANTS = [{}, dict(multiscale_flow=False), dict(flow=False, flow_prior=False), dict(fusion="concat"), dict(gtmlp=False),
            dict(flow_prior=False)]


@pytest.mark.parametrize("overrides", VARIANTS)
def test_kept_frames_and_chunks_give_the_frames_of_whole_clips(overrides):
    """Decoding some frames, in chunks split at any scale, gives those frames of the whole-clip pass."""
    model = build(**overrides).eval()
    b, n = 3, 8
    batch = {"t": torch.rand(b, n), "offset": torch.arange(n, dtype=torch.float32).repeat(b, 1),
             "span": torch.full((b,), 8.0)}
    sparse, dense = torch.tensor([0, 3, 7, 9, 10, 23]), torch.tensor([i for i in range(24) if i % 6])
    with torch.no_grad():
        pyramid = model.encode_keyframes(torch.rand(2 * b, 3, 64, 80))
        whole = model.decode_clips(batch, pyramid)
        # rows x pixels per scale (4x5, 16x20, 32x40, 64x80): these budgets split at each of them
        for chunk in (None, 400, 5000, 20000, 40000):
            torch.testing.assert_close(model.decode_clips(batch, pyramid, None, chunk), whole, atol=1e-4, rtol=0)
            for keep in (sparse, dense):
                torch.testing.assert_close(model.decode_clips(batch, pyramid, keep, chunk), whole.flatten(0, 1)[keep],
                                           atol=1e-4, rtol=0)


def test_fuse_blends_by_temporal_distance():
    feats = torch.stack([torch.zeros(2, 3, 4), torch.ones(2, 3, 4)]).unsqueeze(0)   # [B=1 * 2, C, h, w]
    feats = feats.flatten(0, 1)
    weight = torch.tensor([0.0, 0.25, 1.0]).view(3, 1, 1, 1)
    fused = DNeRV._fuse(feats, None, weight, b=1, n=3)
    torch.testing.assert_close(fused[:, 0, 0, 0], torch.tensor([0.0, 0.25, 1.0]))
    zero_flow = torch.zeros(3, 4, 3, 4)
    torch.testing.assert_close(DNeRV._fuse(feats, zero_flow, weight, b=1, n=3), fused)


def test_single_scale_flow_is_rescaled():
    flow = torch.ones(1, 4, 2, 3)
    up = DNeRV._upsample_flow(flow, (8, 12))
    assert up.shape == (1, 4, 8, 12)
    torch.testing.assert_close(up, torch.full_like(up, 4.0))     # one coarse pixel = four fine pixels


def test_clip_length_is_checked_and_configurable():
    model = build()
    with pytest.raises(ValueError, match="8 frames"):
        model(clip_batch(model, frames=4))
    short = build(clip_len=4)
    assert short(clip_batch(short, frames=4)).shape == (1, 4, 3, 64, 80)
    free = build(gtmlp=False)
    assert free(clip_batch(free, frames=5)).shape == (1, 5, 3, 64, 80)


def test_dataset_statistics_are_saved():
    model = build(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    state = model.state_dict()
    torch.testing.assert_close(state["mean"].flatten(), torch.full((3,), 0.5))
    torch.testing.assert_close(state["std"].flatten(), torch.full((3,), 0.25))


def test_an_untrained_model_is_keyframe_interpolation():
    """Flow and RGB heads start at zero, so before any fitting the output is (1 - w) * start + w * end
    keyframe: a tiny model fitted for minutes starts from the blend, not from noise (measured on the real
    clips at 4 fps: 24.32 dB between keyframes against 23.71 with random heads, README)."""
    torch.manual_seed(0)
    model = create_model("dnerv", "tiny", (64, 80), flow_prior=False)
    keyframes = torch.rand(1, 2, 3, 64, 80)
    offset = torch.arange(8.0)[None]
    batch = {"t": torch.rand(1, 8), "offset": offset, "span": torch.tensor([8.0]), "keyframes": keyframes}
    w = (offset / 8).view(1, 8, 1, 1, 1)
    expected = (1 - w) * keyframes[:, :1] + w * keyframes[:, 1:]
    torch.testing.assert_close(model(batch), expected, atol=1e-4, rtol=0)
    plain = create_model("dnerv", "tiny", (64, 80), rgb_residual=False, flow_prior=False)   # the paper's head
    assert all(torch.count_nonzero(head[-1].weight) == 0 for head in plain.flow_heads)
    assert torch.count_nonzero(plain.rgb_head[-1].weight) > 0
    assert not torch.allclose(plain(batch), expected, atol=1e-2)


def test_single_scale_flow_is_rescaled_in_fp32():
    flow = torch.full((1, 4, 2, 3), 1.3).bfloat16()
    up = DNeRV._upsample_flow(flow, (8, 12))
    assert up.dtype == torch.float32
    torch.testing.assert_close(up, torch.full((1, 4, 8, 12), 4 * float(flow[0, 0, 0, 0])))


def test_forward_under_bf16_autocast_is_close_to_fp32():
    """Coordinates, angles and statistics in fp32: autocast only costs bf16 rounding of activations."""
    torch.manual_seed(0)
    model = create_model("dnerv", "tiny128").eval()
    batch = clip_batch(model)
    with torch.no_grad():
        reference = model(batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(batch)
    assert (out.float() - reference).abs().mean() < 2e-2


def xavier_bound(conv: torch.nn.Conv2d) -> float:
    fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(conv.weight)
    return (6 / (fan_in + fan_out)) ** 0.5


@pytest.mark.parametrize("fusion", ["saf", "concat"])
def test_official_init_of_up_sampling_and_saf_convs(fusion):
    """The authors' DNeRVBlock: xavier-uniform weights, zero biases (SAF and up-sampling conv only)."""
    model = build(fusion=fusion)
    convs = [stage.up.conv for stage in model.stages] + [stage.saf for stage in model.stages if stage.saf is not None]
    assert len(convs) == len(model.stages) * (2 if fusion == "saf" else 1)
    for conv in convs:
        bound, w = xavier_bound(conv), conv.weight.abs().max().item()
        assert 0.9 * bound < w <= bound, (conv, w, bound)
        assert torch.count_nonzero(conv.bias) == 0
    # the heads and the content encoder keep PyTorch's defaults (as in the authors' code)
    assert all(torch.count_nonzero(head[0].bias) > 0 for head in model.flow_heads)
    assert torch.count_nonzero(model.encoder.stem[0].bias) > 0
