"""HNeRV and SNeRV: paper sizes, shapes, side information, resolution checks, budgets, a short fit."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nvrloader.models.hnerv import auto_strides
from nvrloader.models.registry import count_model_params, count_params, create_model, model_config, model_family
from nvrloader.models.wavelet import dwt2, idwt2
from realframes import load_frames, psnr

BUNNY_FRAMES = 132  # both papers count decoder + embeddings of the 132-frame Bunny clip
NAMES = ["hnerv", "snerv"]


@pytest.mark.parametrize("name, total", [("hnerv", 1.5e6), ("snerv", 3.0e6)])
def test_paper_preset_counts_decoder_plus_embeddings(name, total):
    cfg = model_config(name, "paper")
    with torch.device("meta"):
        model = create_model(name, "paper")
    assert model.embedding_shape == (16, 2, 4)
    counted = count_params(name, **cfg) + BUNNY_FRAMES * math.prod(model.embedding_shape)
    assert abs(counted - total) <= 0.02 * total, counted


def stage_widths(model) -> list[int]:
    trunk = model.decoder
    return [trunk.stem[0].out_channels] + [
        blk.conv.out_channels // blk.shuffle.upscale_factor ** 2 for blk in trunk.stages]


def test_paper_architectures_match_the_authors_configs():
    h = create_model("hnerv", "paper")
    assert h.strides == (5, 4, 4, 2, 2)
    assert stage_widths(h) == [68, 57, 48, 40, 33, 28]   # 1.2 reduction, rounded stage by stage
    assert [blk.conv.kernel_size[0] for blk in h.decoder.stages] == [1, 3, 5, 5, 5]
    s = create_model("snerv", "paper")
    assert s.strides == (5, 4, 2, 2, 2)
    assert stage_widths(s) == [111, 92, 77, 64, 53, 44]   # SNeRV supplementary, 3M model
    # decoder by hand: stem, five NeRV blocks, two MFU blocks with 6 residual blocks, LL head, 3 HFR blocks
    c, st = [111, 92, 77, 64, 53, 44], [5, 4, 2, 2, 2]
    expected = 16 * 111 + 111
    for i in range(5):
        k = min(1 + 2 * i, 5)
        expected += c[i] * c[i + 1] * st[i] ** 2 * k * k + c[i + 1] * st[i] ** 2
    for coarse, fine, stride in ((64, 53, 2), (53, 44, 2)):
        expected += coarse * coarse * stride ** 2 + coarse + (coarse + fine) * fine * 9 + fine
        expected += 6 * 2 * (fine * fine * 9 + fine)
    expected += 44 * 3 * 9 + 3 + 3 * (44 * 44 + 44 + 44 * 3 * 9 + 3)
    assert count_model_params(s) == expected


@pytest.mark.parametrize("size, strides", [((640, 1280), (5, 4, 4, 2, 2)), ((960, 1920), (5, 4, 4, 3, 2)),
                                           ((320, 640), (5, 4, 2, 2, 2)), ((240, 480), (5, 3, 2, 2, 2)),
                                           ((480, 960), (5, 4, 3, 2, 2)), ((64, 80), (2, 2, 2, 2))])
def test_auto_strides_reproduce_the_papers_tables(size, strides):
    assert auto_strides("test", size) == strides


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size", ["tiny", "tiny128"])
def test_tiny_presets_shapes_range_and_side_info(name, size):
    torch.manual_seed(0)
    model = create_model(name, size).eval()
    h, w = model.resolution
    assert count_model_params(model) < 1_000_000
    assert model_family(model.MODEL_NAME).side_info == "embeddings"
    frames = torch.rand(3, 3, h, w)
    with torch.no_grad():
        emb = model.encode(frames)
        assert emb.shape == (3, *model.embedding_shape)
        out = model({"embedding": emb.reshape(1, 3, *emb.shape[1:])})
    assert out.shape == (1, 3, 3, h, w)
    assert out.min() >= 0 and out.max() <= 1
    encoder = sum(p.numel() for p in model.encoder.parameters())
    assert encoder > 0 and count_model_params(model) == sum(p.numel() for p in model.parameters()) - encoder


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_parameter(name):
    torch.manual_seed(0)
    model = create_model(name, "tiny")
    frames = torch.rand(2, 3, *model.resolution)
    out = model({"embedding": model.encode(frames).unsqueeze(0)})
    F.mse_loss(out[0], frames).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_snerv_subbands_are_what_the_frame_is_built_from():
    torch.manual_seed(0)
    model = create_model("snerv", "tiny").eval()
    h, w = model.resolution
    with torch.no_grad():
        out = model({"embedding": torch.randn(2, 3, *model.embedding_shape)}, return_subbands=True)
    assert out.frames.shape == (2, 3, 3, h, w)
    assert out.ll.shape == (2, 3, 3, h // 2, w // 2) and out.highs.shape == (2, 3, 3, 3, h // 2, w // 2)
    torch.testing.assert_close(out.frames, idwt2(out.ll, out.highs).clamp(0, 1))
    assert out.ll.min() >= 0 and out.ll.max() <= 2
    # the encoder sees only the LL band: changing the detail bands leaves the embedding alone
    frames = torch.rand(1, 3, h, w)
    ll, highs = dwt2(frames)
    other = idwt2(ll, highs + 0.05 * torch.randn_like(highs))
    with torch.no_grad():
        torch.testing.assert_close(model.encode(frames), model.encode(other))


@pytest.mark.parametrize("name", NAMES)
def test_bad_resolutions_and_inputs_are_refused(name):
    with pytest.raises(ValueError, match="640x1280"):
        create_model(name, "paper", resolution=(600, 1280))
    with pytest.raises(ValueError, match="128x160"):
        create_model(name, "tiny", resolution=(61, 80))
    model = create_model(name, "tiny")
    with pytest.raises(ValueError, match="embedding"):
        model({"embedding": torch.zeros(1, 1, 8, 5, 5)})
    with pytest.raises(ValueError, match="frames"):
        model.encode(torch.zeros(1, 3, 32, 40))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("budget", [50_000, 75_000, 1_500_000])
def test_parameter_budget_within_3_percent(name, budget):
    with torch.device("meta"):
        model = create_model(name, "tiny", params=budget)
    assert abs(count_model_params(model) - budget) <= 0.03 * budget


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size", ["tiny", "tiny128", "paper"])
def test_parameter_budget_sweep(name, size):
    for budget in np.geomspace(120_000, 5_000_000, 8).astype(int):
        with torch.device("meta"):
            model = create_model(name, size, params=int(budget))
        assert abs(count_model_params(model) - budget) <= 0.03 * budget, (size, budget)


def fit(name: str, steps: int) -> tuple[float, float]:
    """Encoder and decoder trained together on 8 frames (SNeRV also with its sub-band losses)."""
    torch.manual_seed(0)
    model = create_model(name, "tiny")
    frames = load_frames(8, model.resolution)
    ll, highs = dwt2(frames)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def reconstruct(subbands: bool = False):
        return model({"embedding": model.encode(frames).unsqueeze(0)}, **({"return_subbands": True} if subbands else {}))

    with torch.no_grad():
        before = psnr(reconstruct()[0], frames)
    for _ in range(steps):
        if name == "snerv":
            out = reconstruct(subbands=True)
            loss = F.mse_loss(out.frames[0], frames) + F.mse_loss(out.ll[0], ll) + F.mse_loss(out.highs[0], highs)
        else:
            loss = F.mse_loss(reconstruct()[0], frames)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = psnr(reconstruct()[0], frames)
    return before, after


@pytest.mark.parametrize("name", NAMES)
def test_short_fit_improves_psnr(name):
    before, after = fit(name, steps=20)
    assert after > before + 3.0, f"{name}: PSNR {before:.2f} -> {after:.2f}"


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_200_step_fit_reaches_useful_quality(name):
    before, after = fit(name, steps=200)
    assert after > max(before + 10.0, 22.0), f"{name}: PSNR {before:.2f} -> {after:.2f}"
