"""TSM (Lin et al., ICCV 2019): a 2D ResNet that mixes time by shifting channels between frames.

The shift sits in every residual block's branch, before its first conv ("blockres"), so the
shortcut still carries each frame's own features; it adds no parameters and no FLOPs. Segment
scores are averaged (TSN's consensus). The backbone is any timm ResNet built without weights;
ImageNet or Kinetics weights come from a local file (`load_backbone`), since nothing is downloaded.
"""
from __future__ import annotations

import os
from pathlib import Path

import timm
import torch
from timm.models.resnet import BasicBlock, Bottleneck
from torch import nn

RESNET_CHANNELS = (64, 128, 256, 512)


def temporal_shift(x: torch.Tensor, num_segments: int, shift_div: int = 8) -> torch.Tensor:
    """Shift C/shift_div channels one frame back and C/shift_div one frame forward, zero-padded.

    ``x`` is [N * T, C, H, W] with the T frames of a clip contiguous. Channels [0, f) of frame t take
    the values of frame t + 1 (the last frame gets zeros); channels [f, 2f) take those of frame t - 1
    (the first frame gets zeros); channels [2f, C) are untouched; f = C // shift_div.
    """
    nt, c, h, w = x.shape
    if nt % num_segments:
        raise ValueError(f"temporal_shift: {nt} frames is not a whole number of {num_segments}-segment clips")
    x = x.view(nt // num_segments, num_segments, c, h, w)
    fold = c // shift_div
    out = torch.zeros_like(x)
    out[:, :-1, :fold] = x[:, 1:, :fold]
    out[:, 1:, fold:2 * fold] = x[:, :-1, fold:2 * fold]
    out[:, :, 2 * fold:] = x[:, :, 2 * fold:]
    return out.view(nt, c, h, w)


class TemporalShift(nn.Module):
    """Wraps a block's first conv so its input is time-shifted; the block's shortcut never sees it."""

    def __init__(self, net: nn.Module, num_segments: int, shift_div: int = 8) -> None:
        super().__init__()
        self.net = net
        self.num_segments = num_segments
        self.shift_div = shift_div

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(temporal_shift(x, self.num_segments, self.shift_div))

    def extra_repr(self) -> str:
        return f"num_segments={self.num_segments}, shift_div={self.shift_div}"


def insert_shifts(backbone: nn.Module, num_segments: int, shift_div: int) -> int:
    """Put a TemporalShift before conv1 of every residual block; returns how many were placed."""
    blocks = [m for m in backbone.modules() if isinstance(m, (BasicBlock, Bottleneck))]
    for block in blocks:
        block.conv1 = TemporalShift(block.conv1, num_segments, shift_div)
    return len(blocks)


def plain_key(key: str) -> str:
    """A parameter name as a plain ResNet (timm/torchvision) spells it.

    Strips the wrappers of DataParallel, of the TSM authors' checkpoints (``base_model.``) and of this
    module (``backbone.``), and the ``.net`` a TemporalShift adds, so all of them load into one model.
    """
    for prefix in ("module.", "base_model.", "backbone."):
        if key.startswith(prefix):
            key = key[len(prefix):]
    return key.replace(".conv1.net.", ".conv1.")


CLASSIFIER_PREFIXES = ("fc.", "new_fc.", "classifier.", "head.", "last_linear.")


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from a torch file (never unpickled: weights_only) or a timm .safetensors file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: pretrained weights file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise ValueError(f"{path}: not a torch state dict that loads with weights_only=True ({err})") from None
    for wrapper in ("state_dict", "model"):  # training checkpoints nest the weights
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a mapping of parameter names to tensors")
    return state


class TSM(nn.Module):
    """[B, T, 3, H, W] normalised frames -> [B, num_classes] logits, T = num_segments."""

    def __init__(self, num_classes: int, num_segments: int = 8, backbone: str = "resnet50",
                 shift_div: int = 8, dropout: float = 0.8, partial_bn: bool = False,
                 width_mult: float = 1.0, fc_init_std: float | None = 0.001) -> None:
        super().__init__()
        # Residual branches start live (torchvision's init, which TSM used): timm's default zero-init of
        # each branch's last BN leaves only the shortcuts, which never see the shift, so a network
        # trained from scratch starts blind to time and measurably never left chance on motion classes.
        kwargs: dict = {"zero_init_last": False}
        if width_mult != 1.0:  # thinner ResNet for CPU-sized experiments (no pretrained weights fit it)
            kwargs |= {"channels": tuple(max(8, round(c * width_mult)) for c in RESNET_CHANNELS),
                       "stem_width": max(8, round(64 * width_mult))}
        try:
            self.backbone = timm.create_model(backbone, pretrained=False, num_classes=0, **kwargs)
        except (RuntimeError, TypeError) as err:
            raise ValueError(f"cannot build backbone {backbone!r} (width_mult={width_mult}): {err}") from None
        if insert_shifts(self.backbone, num_segments, shift_div) == 0:
            raise ValueError(f"backbone {backbone!r} has no ResNet BasicBlock/Bottleneck to put a temporal shift in")
        self.num_classes, self.num_segments, self.shift_div = num_classes, num_segments, shift_div
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.backbone.num_features, num_classes)
        # TSN's near-zero init suits a classifier on pretrained features; from random weights it starves
        # the backbone of gradient, so None keeps PyTorch's default (measured: chance 300 steps longer)
        if fc_init_std is not None:
            nn.init.normal_(self.fc.weight, 0.0, fc_init_std)
            nn.init.zeros_(self.fc.bias)
        self.partial_bn = partial_bn
        for bn in self.frozen_bns():
            bn.requires_grad_(False)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        b, t = clips.shape[:2]
        if t != self.num_segments:
            raise ValueError(f"TSM was built for {self.num_segments} segments, got clips of {t} frames")
        features = self.backbone(clips.flatten(0, 1))
        logits = self.fc(self.dropout(features))
        return logits.view(b, t, -1).mean(dim=1)

    def train(self, mode: bool = True) -> "TSM":
        """Partial BN (TSN): when fine-tuning, only the first BN layer keeps adapting its statistics.

        The others keep the pretrained statistics and affine parameters, which small video batches
        would otherwise pull away from what the pretrained convolutions expect.
        """
        super().train(mode)
        if mode and self.partial_bn:
            for bn in self.frozen_bns():
                bn.eval()
        return self

    def frozen_bns(self) -> list[nn.BatchNorm2d]:
        """The BN layers partial BN freezes: all of the backbone's but the first."""
        if not self.partial_bn:
            return []
        return [m for m in self.backbone.modules() if isinstance(m, nn.BatchNorm2d)][1:]

    def param_groups(self, lr: float, weight_decay: float, fc_lr_mult: float = 1.0) -> list[dict]:
        """TSM's optimiser policy: biases at 2x lr without decay, BN affine without decay,
        the new classifier at ``fc_lr_mult`` x lr (5 when fine-tuning), frozen BN left out."""
        bn_params = {id(p) for m in self.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()}
        groups: dict[str, dict] = {
            "weight": {"params": [], "lr": lr, "weight_decay": weight_decay},
            "bias": {"params": [], "lr": 2 * lr, "weight_decay": 0.0},
            "bn": {"params": [], "lr": lr, "weight_decay": 0.0},
            "fc_weight": {"params": [self.fc.weight], "lr": fc_lr_mult * lr, "weight_decay": weight_decay},
            "fc_bias": {"params": [self.fc.bias], "lr": 2 * fc_lr_mult * lr, "weight_decay": 0.0},
        }
        for p in self.backbone.parameters():
            if not p.requires_grad:
                continue
            if id(p) in bn_params:
                groups["bn"]["params"].append(p)
            else:
                groups["bias" if p.ndim == 1 else "weight"]["params"].append(p)
        return [dict(g, name=name) for name, g in groups.items() if g["params"]]


def load_backbone(model: TSM, path: str | os.PathLike) -> tuple[list[str], list[str]]:
    """Load ResNet weights (ImageNet, or a Kinetics TSM's backbone) into ``model``; keep its classifier.

    Returns (missing, unexpected) backbone keys in plain ResNet spelling, so the caller can say what
    did not load. A shape mismatch (e.g. a width_mult model) is an error that names the file.
    """
    own = {plain_key(k): k for k in model.backbone.state_dict()}
    source = {plain_key(k): v for k, v in read_state_dict(path).items()}
    source = {k: v for k, v in source.items() if not k.startswith(CLASSIFIER_PREFIXES)}
    unexpected = sorted(k for k in source if k not in own)
    missing = sorted(k for k in own if k not in source and not k.endswith("num_batches_tracked"))
    shapes = model.backbone.state_dict()
    wrong = [f"{k}: file {tuple(v.shape)} vs model {tuple(shapes[own[k]].shape)}"
             for k, v in source.items() if k in own and v.shape != shapes[own[k]].shape]
    if wrong:
        raise ValueError(f"{path}: weights do not fit backbone; " + "; ".join(wrong[:5])
                         + (f" (+{len(wrong) - 5} more)" if len(wrong) > 5 else ""))
    model.backbone.load_state_dict({own[k]: v for k, v in source.items() if k in own}, strict=False)
    return missing, unexpected
