"""E-NeRV (Li et al., ECCV 2022): NeRV with the spatial and temporal context disentangled.

A fixed coordinate grid (h0 x w0), positionally encoded and mixed by a single-head transformer, is
the spatial context S; a temporal MLP of gamma(t) gives a vector that multiplies S at every
location; an 8-head transformer fuses the product and a linear layer projects it to fc_dim.
Before every up-sampling block the features are instance-normalised and re-styled from t:
IN(x) * sigma_i(t) + mu_i(t). The first block is the cheaper upgraded block.
Layer details (GELU after every linear layer, including the sigma/mu layers; no layer norm in the
transformers) follow the authors' code, so the paper configuration lands on its 12.49M parameters.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nvrloader.models.blocks import (NeRVBlock, PositionalEncoding, UpgradedNeRVBlock, initial_grid, instance_norm,
                                     make_activation, mlp, stage_channels, to_unit_range)
from nvrloader.models.registry import register_model
from nvrloader.models.sizing import Ramp, Scaling, grid_strides


class TransformerBlock(nn.Module):
    """Residual multi-head self-attention + residual feed-forward, without normalisation layers."""

    def __init__(self, dim: int, heads: int, dim_head: int, mlp_dim: int, act: str = "gelu"):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * inner, bias=False)
        # a single head as wide as the input needs no output projection (as in the reference code)
        self.proj = nn.Identity() if heads == 1 and dim_head == dim else nn.Linear(inner, dim)
        self.ffn = nn.Sequential(nn.Linear(dim, mlp_dim), make_activation(act), nn.Linear(mlp_dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, _ = x.shape
        q, k, v = self.qkv(x).view(n, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, length, -1)
        x = x + self.proj(attn)
        return x + self.ffn(x)


@register_model("enerv", layout="time",
                recipe=dict(loss="l1_ssim", optimizer="adam", betas=(0.5, 0.999), lr=5e-4, batch_size=16,
                            warmup_start=0.1))  # NeRV-family code: lr_mult = 0.1 + 0.9 * epoch / warmup
class ENeRV(nn.Module):
    # "L" is the paper's 12.49M model for 720p (the size class of NeRV-L); "S"/"M" sit on the same
    # ladder as NeRV's presets (3.2M / 6.3M) at 256x320.
    _TINY = dict(fc_dim=32, expansion=2.0, reduction=2, lower_width=8, block_dim=32, mlp_dim=32, stem_dim=64,
                 norm_dim=16, dim_head=8)
    _PAPER = dict(expansion=3.0, reduction=2, lower_width=32, strides=(4, 2, 2, 2, 2), resolution=(256, 320))
    PRESETS = {
        "tiny": dict(_TINY, resolution=(64, 80), strides=(4, 2, 2)),
        "tiny128": dict(_TINY, resolution=(128, 160), strides=(4, 2, 2, 2)),
        "S": dict(_PAPER, fc_dim=87),
        "M": dict(_PAPER, fc_dim=139),
        "L": dict(_PAPER, fc_dim=196, resolution=(720, 1280), strides=(5, 2, 2, 2, 2), lower_width=96),
    }
    WIDTH_KEY = "fc_dim"
    FINE_WIDTH_KEY = "stem_dim"
    # Budget sizing: the paper's context widths from 3M weights on (the size of E-NeRV S), the time
    # embedding and the transformers shrinking with the budget below.
    SCALING = Scaling(ramps={"pe_levels": Ramp(16, 80, 3e6, floor=4), "stem_dim": Ramp(48, 512, 3e6, floor=16),
                             "block_dim": Ramp(24, 256, 3e6, floor=8), "mlp_dim": Ramp(24, 128, 3e6, floor=8),
                             "norm_dim": Ramp(16, 128, 3e6, floor=4), "dim_head": Ramp(4, 64, 3e6, floor=2),
                             "lower_width": Ramp(6, 32, 3e6, floor=4)},
                      fine="stem_dim", fine_floor=8, strides=grid_strides)
    PARTS = (("time_embedding", r"^stem_t\."), ("spatial_context", r"^(stem_xy|spatial)\."),
             ("fusion", r"^(fusion|to_conv)\."), ("temporal_norm", r"^(norm_t|styles)\."), ("stages", r"^blocks\."),
             ("heads", r"^head\."))

    def __init__(self, resolution: Sequence[int] = (64, 80), fc_dim: int = 32, strides: Sequence[int] = (4, 2, 2),
                 expansion: float = 3.0, reduction: float | str = 2, lower_width: int = 16, block_dim: int = 256,
                 mlp_dim: int = 128, stem_dim: int = 512, norm_dim: int = 128, heads: int = 8, dim_head: int = 64,
                 pe_base: float = 1.25, pe_levels: int = 80, act: str = "gelu", output: str = "sigmoid"):
        super().__init__()
        self.resolution = (int(resolution[0]), int(resolution[1]))
        self.grid = initial_grid("enerv", self.resolution, strides)
        self.fc_dim = int(fc_dim)
        self.output = output
        h0, w0 = self.grid
        self.pe = PositionalEncoding(pe_base, pe_levels)
        # temporal context: a block_dim vector per frame
        self.stem_t = mlp([self.pe.dim, stem_dim, block_dim], act)
        # spatial context: normalised (row, column) coordinates of the h0 x w0 grid
        rows, cols = torch.meshgrid(torch.arange(h0) / h0, torch.arange(w0) / w0, indexing="ij")
        self.register_buffer("coords", torch.stack((rows, cols), -1).view(-1, 2).float(), persistent=False)
        self.stem_xy = mlp([2 * self.pe.dim, block_dim], act)
        self.spatial = TransformerBlock(block_dim, 1, dim_head, mlp_dim, act)
        self.fusion = TransformerBlock(block_dim, heads, dim_head, mlp_dim, act)
        self.to_conv = nn.Identity() if block_dim == self.fc_dim else mlp([block_dim, self.fc_dim], act)
        # temporal instance normalisation: one small MLP of gamma(t), one (sigma, mu) layer per block
        self.norm_t = mlp([self.pe.dim, norm_dim, norm_dim], act)
        channels = stage_channels(self.fc_dim, strides, expansion, reduction, lower_width)
        ins = [self.fc_dim] + channels[:-1]
        self.styles = nn.ModuleList(mlp([norm_dim, 2 * c], act) for c in ins)
        self.blocks = nn.ModuleList(
            (UpgradedNeRVBlock if i == 0 else NeRVBlock)(c_in, c_out, s, act=act)
            for i, (c_in, c_out, s) in enumerate(zip(ins, channels, strides)))
        self.head = nn.Conv2d(channels[-1], 3, 1)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        t = batch["t"]
        b, n = t.shape
        gamma_t = self.pe(t.reshape(-1))                                    # [N, 2l]
        xy = self.pe(self.coords).flatten(1)                                # [h0*w0, 4l]
        spatial = self.spatial(self.stem_xy(xy).unsqueeze(0))               # [1, h0*w0, d]
        x = self.fusion(spatial * self.stem_t(gamma_t).unsqueeze(1))        # [N, h0*w0, d]
        x = self.to_conv(x).transpose(1, 2).reshape(b * n, self.fc_dim, *self.grid)
        style_t = self.norm_t(gamma_t)
        for style, block in zip(self.styles, self.blocks):
            sigma, mu = style(style_t)[..., None, None].chunk(2, dim=1)
            x = block(instance_norm(x) * sigma + mu)
        return to_unit_range(self.head(x), self.output).view(b, n, 3, *self.resolution)
