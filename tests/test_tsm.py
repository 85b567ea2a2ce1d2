"""TSM model: the shift op against its definition, where it sits in a block, shapes, partial BN, weight loading."""
from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import nn

from recognition.tsm import TSM, TemporalShift, load_backbone, temporal_shift

torch.set_num_threads(1)


def expected_shift(x: torch.Tensor, t: int, div: int) -> torch.Tensor:
    """The definition, element by element: channel c of frame i reads frame i+1 / i-1 / i."""
    nt, c = x.shape[:2]
    fold = c // div
    out = torch.empty_like(x)
    for row in range(nt):
        n, i = divmod(row, t)
        for ch in range(c):
            src = i + 1 if ch < fold else i - 1 if ch < 2 * fold else i
            out[row, ch] = x[n * t + src, ch] if 0 <= src < t else 0
    return out


@pytest.mark.parametrize("t,c,div", [(4, 16, 8), (3, 8, 4), (5, 10, 8)])
def test_shift_matches_definition(t: int, c: int, div: int) -> None:
    n = 2
    # every element unique and nonzero, so a misplaced or dropped value cannot go unnoticed
    x = torch.arange(1, n * t * c * 2 * 3 + 1, dtype=torch.float32).view(n * t, c, 2, 3)
    out = temporal_shift(x, t, div)
    assert torch.equal(out, expected_shift(x, t, div))


def test_shift_hand_made() -> None:
    # 1 clip, 3 frames, 8 channels, shift_div 4 -> channels 0-1 back, 2-3 forward, 4-7 untouched
    x = torch.zeros(3, 8, 1, 1)
    for f in range(3):
        x[f, :, 0, 0] = 10 * (f + 1) + torch.arange(8)
    out = temporal_shift(x, 3, 4)[:, :, 0, 0]
    assert out[0].tolist() == [20, 21, 0, 0, 14, 15, 16, 17]
    assert out[1].tolist() == [30, 31, 12, 13, 24, 25, 26, 27]
    assert out[2].tolist() == [0, 0, 22, 23, 34, 35, 36, 37]
    assert torch.equal(x[0, :, 0, 0], torch.tensor([10., 11, 12, 13, 14, 15, 16, 17]))  # input not modified


def test_shift_refuses_partial_clips() -> None:
    with pytest.raises(ValueError, match="whole number"):
        temporal_shift(torch.zeros(7, 8, 1, 1), 4)


@pytest.mark.parametrize("backbone,blocks", [("resnet18", 8), ("resnet50", 16)])
def test_every_block_shifted_forward_shapes(backbone: str, blocks: int) -> None:
    torch.manual_seed(0)
    model = TSM(num_classes=5, num_segments=8, backbone=backbone).eval()
    shifts = [m for m in model.modules() if isinstance(m, TemporalShift)]
    assert len(shifts) == blocks
    assert all(s.num_segments == 8 and s.shift_div == 8 for s in shifts)
    with torch.no_grad():
        out = model(torch.randn(2, 8, 3, 32, 32))
    assert out.shape == (2, 5)
    assert torch.isfinite(out).all()


def test_shift_before_conv1_and_identity_untouched() -> None:
    torch.manual_seed(0)
    model = TSM(num_classes=3, num_segments=4, backbone="resnet18").eval()
    block = model.backbone.layer1[0]
    x = torch.randn(8, 64, 5, 5)  # 2 clips x 4 frames
    seen = {}
    block.conv1.net.register_forward_hook(lambda mod, inp, out: seen.setdefault("in", inp[0]))
    # zero the residual branch's output: the block is then relu(shortcut(x)) with an untouched shortcut
    nn.init.zeros_(block.bn2.weight)
    nn.init.zeros_(block.bn2.bias)
    with torch.no_grad():
        out = block(x)
    assert torch.equal(seen["in"], expected_shift(x, 4, 8))
    assert torch.equal(out, torch.relu(x))
    assert not torch.equal(out, torch.relu(seen["in"]))


def test_untrained_model_sees_temporal_order() -> None:
    """Residual branches start live, so even an untrained TSM scores a clip and its time reversal apart.

    With timm's default zero-init of each branch's last BN only the (unshifted) shortcuts carry
    signal at first, the output ignores frame order, and training from scratch stalled at chance.
    """
    torch.manual_seed(0)
    model = TSM(num_classes=4, num_segments=8, backbone="resnet18", dropout=0.0, width_mult=0.25).eval()
    assert all(bool(block.bn2.weight.ne(0).all()) for block in model.backbone.layer1)
    clips = torch.randn(2, 8, 3, 32, 32)
    with torch.no_grad():
        forward, backward = model(clips), model(clips.flip(1))
    assert (forward - backward).abs().max() > 1e-3 * forward.abs().max()


def test_average_consensus() -> None:
    torch.manual_seed(0)
    model = TSM(num_classes=4, num_segments=8, backbone="resnet18", dropout=0.0).eval()
    per_frame = {}
    model.fc.register_forward_hook(lambda mod, inp, out: per_frame.setdefault("out", out))
    with torch.no_grad():
        out = model(torch.randn(3, 8, 3, 32, 32))
    assert torch.allclose(out, per_frame["out"].view(3, 8, 4).mean(1), atol=1e-6)


def test_wrong_segment_count_refused() -> None:
    model = TSM(num_classes=4, num_segments=8, backbone="resnet18")
    with pytest.raises(ValueError, match="8 segments"):
        model(torch.randn(1, 4, 3, 32, 32))


def test_partial_bn() -> None:
    torch.manual_seed(0)
    model = TSM(num_classes=4, num_segments=2, backbone="resnet18", partial_bn=True).train()
    bns = [m for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns[0].training and bns[0].weight.requires_grad
    assert not any(b.training or b.weight.requires_grad or b.bias.requires_grad for b in bns[1:])
    before = [b.running_mean.clone() for b in bns]
    model(torch.randn(2, 2, 3, 32, 32))
    assert not torch.equal(before[0], bns[0].running_mean)
    assert all(torch.equal(a, b.running_mean) for a, b in zip(before[1:], bns[1:]))
    grouped = {id(p) for g in model.param_groups(0.1, 5e-4) for p in g["params"]}
    assert grouped == {id(p) for p in model.parameters() if p.requires_grad}
    assert not any(id(b.weight) in grouped for b in bns[1:])


def test_param_groups_tsm_policy() -> None:
    model = TSM(num_classes=4, num_segments=2, backbone="resnet18")
    groups = {g["name"]: g for g in model.param_groups(0.01, 5e-4, fc_lr_mult=5)}
    assert groups["fc_weight"]["lr"] == pytest.approx(0.05) and groups["fc_weight"]["weight_decay"] == 5e-4
    assert groups["fc_bias"]["lr"] == pytest.approx(0.1) and groups["fc_bias"]["weight_decay"] == 0
    assert groups["bn"]["weight_decay"] == 0 and groups["weight"]["weight_decay"] == 5e-4
    counted = sum(len(g["params"]) for g in groups.values())
    assert counted == len(list(model.parameters()))


@pytest.mark.parametrize("fmt", ["pt", "safetensors", "tsm-checkpoint"])
def test_load_backbone(tmp_path, fmt: str) -> None:
    torch.manual_seed(1)
    donor = timm.create_model("resnet18", pretrained=False, num_classes=1000)
    state = donor.state_dict()
    if fmt == "safetensors":
        path = tmp_path / "w.safetensors"
        save_file(state, str(path))
    elif fmt == "pt":
        path = tmp_path / "w.pth"
        torch.save({**state, "extra.weight": torch.zeros(1)}, path)
    else:  # the TSM authors' layout: DataParallel + base_model + shifted conv1.net, nested in "state_dict"
        tsm_keys = {"module.base_model." + k.replace(".conv1.", ".conv1.net."): v for k, v in state.items()
                    if not k.startswith("fc.")}
        path = tmp_path / "w.pth.tar"
        torch.save({"epoch": 3, "state_dict": {**tsm_keys, "module.new_fc.weight": torch.zeros(101, 512)}}, path)
    model = TSM(num_classes=6, num_segments=8, backbone="resnet18")
    fc_before = model.fc.weight.clone()
    missing, unexpected = load_backbone(model, path)
    assert missing == []
    assert unexpected == (["extra.weight"] if fmt == "pt" else [])
    assert torch.equal(model.backbone.layer2[1].conv1.net.weight, state["layer2.1.conv1.weight"])
    assert torch.equal(model.backbone.bn1.running_var, state["bn1.running_var"])
    assert torch.equal(model.fc.weight, fc_before)


def test_load_backbone_reports_missing_and_bad_shapes(tmp_path) -> None:
    donor = timm.create_model("resnet18", pretrained=False, num_classes=0).state_dict()
    path = tmp_path / "partial.pth"
    torch.save({k: v for k, v in donor.items() if not k.startswith("layer4.")}, path)
    missing, unexpected = load_backbone(TSM(num_classes=2, num_segments=8, backbone="resnet18"), path)
    assert "layer4.1.conv1.weight" in missing and unexpected == []
    with pytest.raises(ValueError, match="partial.pth: weights do not fit"):
        load_backbone(TSM(num_classes=2, num_segments=8, backbone="resnet18", width_mult=0.5), path)
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        load_backbone(TSM(num_classes=2, num_segments=8, backbone="resnet18"), tmp_path / "nowhere.pth")


def test_training_model_is_channels_last_and_computes_the_same() -> None:
    """make_tsm lays weights out NHWC (faster on CPU and CUDA); the logits and the shifts must not change."""
    from recognition.config import TrainConfig
    from recognition.engine import make_tsm

    cfg = TrainConfig.from_recipe("synthetic", num_segments=4)
    torch.manual_seed(0)
    nhwc = make_tsm(cfg, 3).eval()
    plain = TSM(3, 4, cfg.backbone, cfg.shift_div, cfg.dropout, cfg.partial_bn, cfg.width_mult, cfg.fc_init_std)
    plain.load_state_dict(nhwc.state_dict())
    plain.eval()
    convs = [m.weight for m in nhwc.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    clips = torch.randn(2, 4, 3, 32, 40)
    with torch.no_grad():
        torch.testing.assert_close(nhwc(clips), plain(clips), rtol=1e-4, atol=1e-5)
