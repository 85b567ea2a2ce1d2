"""Layers shared by the implicit video representations (NeRV family).

Kept deliberately small: positional encoding, the NeRV up-sampling block and E-NeRV's cheaper
variant of it, an MLP stack, flow warping, and the resolution check every model runs.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

_ACTIVATIONS = {
    "gelu": nn.GELU,
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "leaky": lambda: nn.LeakyReLU(0.01),
    "leaky0.2": lambda: nn.LeakyReLU(0.2),
    "none": nn.Identity,
}


def make_activation(name: str) -> nn.Module:
    """An activation layer by name (the NeRV papers all use GELU; the others are for ablations)."""
    try:
        return _ACTIVATIONS[name.lower()]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; known: {', '.join(_ACTIVATIONS)}") from None


class PositionalEncoding(nn.Module):
    """gamma(t) = (sin(b^0 pi t), cos(b^0 pi t), ..., sin(b^(l-1) pi t), cos(b^(l-1) pi t)).

    Input of any shape [...]; output [..., 2 * levels]. Frequencies are a non-persistent buffer:
    they follow the module across devices but are not stored in checkpoints (they are config).
    They stay fp32 even when the model is cast to fp16/bf16 (b^i pi overflows fp16 beyond i ~ 45
    and rounds to 3 digits in bf16), and the angles are computed in (at least) fp32 from the time as
    given; only the output takes the precision the module was cast to (an empty buffer follows the
    casts), so a half-precision model gets a half-precision input from an fp32 time. Decoders give
    the time in fp32: an fp16 time is off by up to 2.4e-4, a quarter radian at 1.25^26 pi.
    """

    def __init__(self, base: float, levels: int):
        super().__init__()
        if levels < 1:
            raise ValueError(f"PositionalEncoding: levels must be >= 1, got {levels}")
        self.base = float(base)
        self.levels = int(levels)
        self.register_buffer("freqs", self._frequencies(torch.get_default_device()), persistent=False)
        self.register_buffer("cast", torch.zeros(0), persistent=False)   # the output dtype

    def _frequencies(self, device: torch.device) -> torch.Tensor:
        freqs = math.pi * self.base ** torch.arange(self.levels, dtype=torch.float64, device="cpu")
        return freqs.float().to(device)

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        """Follow ``.to(device)`` but never ``.half()``/``.to(dtype)``: rebuild the fp32 frequencies."""
        super()._apply(fn, recurse)
        self.freqs = self._frequencies(self.freqs.device)
        return self

    @property
    def dim(self) -> int:
        return 2 * self.levels

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        wide = compute_dtype(t.dtype)
        angles = t.unsqueeze(-1).to(wide) * self.freqs.to(wide)
        out = torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2)
        return out.to(self.cast.dtype)

    def extra_repr(self) -> str:
        return f"base={self.base}, levels={self.levels}"


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """At least fp32: coordinates, angles and normalisation statistics are never computed in fp16/bf16."""
    return torch.promote_types(dtype, torch.float32) if dtype.is_floating_point else torch.float32


def instance_norm(x: torch.Tensor) -> torch.Tensor:
    """Instance normalisation with fp32 statistics (bf16 means lose ~0.1 std on offset inputs); output in x's dtype."""
    return F.instance_norm(x.to(compute_dtype(x.dtype))).to(x.dtype)


def mlp(dims: Sequence[int], act: str = "gelu", act_last: bool = True) -> nn.Sequential:
    """Linear layers with an activation after each (NeRV's stems also activate the last layer)."""
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(d_in, d_out))
        if act_last or i < len(dims) - 2:
            layers.append(make_activation(act))
    return nn.Sequential(*layers)


class NeRVBlock(nn.Module):
    """conv kxk (in -> out * s^2) -> PixelShuffle(s) -> activation: NeRV's up-sampling block."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, kernel_size: int = 3, act: str = "gelu",
                 bias: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch * stride * stride, kernel_size, padding=kernel_size // 2, bias=bias)
        self.shuffle = nn.PixelShuffle(stride)
        self.act = make_activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.shuffle(self.conv(x)))


def xavier_init_(module: nn.Module) -> nn.Module:
    """Xavier-uniform weights and zero biases for every conv in ``module``: the D-NeRV authors' init of
    their up-sampling and SAF convs (NeRV, E-NeRV, HNeRV and SNeRV keep PyTorch's defaults)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


class UpgradedNeRVBlock(nn.Module):
    """E-NeRV's block: conv(C1 -> C0 s^2) -> PixelShuffle(s) -> conv(C0 -> C2) -> activation.

    C0 = min(C1, C2) / 4 keeps the large-stride first stage from dominating the parameter count.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int, kernel_size: int = 3, act: str = "gelu",
                 bias: bool = True):
        super().__init__()
        mid = max(1, min(in_ch, out_ch) // 4)
        pad = kernel_size // 2
        self.conv1 = nn.Conv2d(in_ch, mid * stride * stride, kernel_size, padding=pad, bias=bias)
        self.shuffle = nn.PixelShuffle(stride)
        self.conv2 = nn.Conv2d(mid, out_ch, kernel_size, padding=pad, bias=bias)
        self.act = make_activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.shuffle(self.conv1(x))))


def warp(features: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward-warp ``features`` [N, C, H, W] by ``flow`` [N, 2, H, W] given in pixels (x, y).

    Output pixel p samples ``features`` at p + flow(p), bilinear, border padding (as D-NeRV does).
    The sampling grid is built and sampled in (at least) fp32 whatever the flow's dtype: in bf16,
    integer coordinates above 256 round to even numbers (up to 1.6 px off at 320 wide). The
    output has the features' dtype.
    """
    n, _, h, w = flow.shape
    wide = compute_dtype(torch.promote_types(features.dtype, flow.dtype))
    xs = torch.arange(w, device=flow.device, dtype=wide)
    ys = torch.arange(h, device=flow.device, dtype=wide)
    base = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)                  # [h, w, (x, y)]
    scale = torch.tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)], device=flow.device, dtype=wide)
    grid = (flow.to(wide).permute(0, 2, 3, 1) + base).mul_(scale).sub_(1.0)
    out = F.grid_sample(features.to(wide), grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out.to(features.dtype)


def to_unit_range(x: torch.Tensor, kind: str) -> torch.Tensor:
    """Map head outputs to [0, 1]: "sigmoid" (E-NeRV) or "tanh" = (tanh + 1) / 2 (NeRV's default)."""
    if kind == "sigmoid":
        return torch.sigmoid(x)
    if kind == "tanh":
        return (torch.tanh(x) + 1) * 0.5
    raise ValueError(f"unknown output activation {kind!r}; known: sigmoid, tanh")


def stage_channels(fc_dim: int, strides: Sequence[int], expansion: float, reduction: float | str,
                   lower_width: int) -> list[int]:
    """Output channels of each up-sampling stage, by the NeRV rule.

    Stage 1 widens to ``fc_dim * expansion``; later stages divide by ``reduction`` (floored, as NeRV
    and HNeRV do) or, with ``reduction="stride"``, by that stage's stride (rounded, as D-NeRV does);
    never below ``lower_width``. Stride-1 stages keep their width.
    """
    channels = [int(fc_dim * expansion)]
    for s in strides[1:]:
        c = channels[-1]
        if s == 1:
            nxt = c
        elif reduction == "stride":
            nxt = round(c / s)
        else:
            nxt = int(c / float(reduction))
        channels.append(max(nxt, lower_width))
    return channels


def total_stride(strides: Sequence[int]) -> int:
    return math.prod(int(s) for s in strides)


# Auto strides aim at an embedding grid of at least this many cells (2x4 in both papers).
MIN_EMBED_CELLS = 8
MAX_STAGES = 5


def auto_strides(model: str, size: Sequence[int], min_stages: int = 1) -> tuple[int, ...]:
    """The papers' stride rule, for any resolution: the largest total stride that divides H and W,
    has prime factors <= 5 and leaves at least ``MIN_EMBED_CELLS`` embedding cells, split into at most
    five strides by merging 2s into 4s (640x1280 -> 5,4,4,2,2; 960x1920 -> 5,4,4,3,2; 320x640 -> 5,4,2,2,2)."""
    h, w = (int(v) for v in size)
    g = math.gcd(h, w)
    for total in sorted((d for d in range(1, g + 1) if g % d == 0), reverse=True):
        factors = _prime_factors(total)
        if max(factors, default=1) > 5 or (h // total) * (w // total) < MIN_EMBED_CELLS:
            continue
        while len(factors) > MAX_STAGES:
            factors = sorted(factors, reverse=True)
            factors = factors[:-2] + [factors[-1] * factors[-2]]
        if len(factors) >= min_stages:
            return tuple(sorted(factors, reverse=True))
    raise ValueError(f"{model}: no stride list fits the resolution {h}x{w}: height and width need a common "
                     f"factor of {2 ** min_stages} or more made of 2s, 3s and 5s (e.g. 64x80, 128x160, 256x320, "
                     f"640x1280); pass strides=... to choose them yourself")


def _prime_factors(n: int) -> list[int]:
    factors, p = [], 2
    while n > 1:
        while n % p == 0:
            factors.append(p)
            n //= p
        p += 1
    return factors


def initial_grid(model: str, resolution: Sequence[int], strides: Sequence[int]) -> tuple[int, int]:
    """The h0 x w0 feature grid a decoder starts from, or a ValueError naming valid resolutions."""
    if len(resolution) != 2:
        raise ValueError(f"{model}: resolution must be (height, width), got {tuple(resolution)}")
    h, w = (int(v) for v in resolution)
    s = total_stride(strides)
    if h > 0 and w > 0 and h % s == 0 and w % s == 0:
        return h // s, w // s

    def near(v: int) -> list[int]:
        lo = max(s, (v // s) * s)
        return sorted({lo, lo + s} if v % s else {lo})

    options = ", ".join(f"{a}x{b}" for a in near(h) for b in near(w))
    raise ValueError(f"{model}: resolution {h}x{w} is not allowed: height and width must be multiples of the "
                     f"total stride {s} (strides {list(strides)}); nearest valid: {options}, or change the strides")
