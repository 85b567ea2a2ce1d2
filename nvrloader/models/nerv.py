"""NeRV (Chen et al., NeurIPS 2021): a frame index in, a whole frame out.

t -> gamma(t) -> MLP -> fc_dim x h0 x w0 -> NeRV blocks (conv -> PixelShuffle -> GELU) -> conv -> RGB.
For a dataset the time input is the global frame index over all videos concatenated, which is
how the D-NeRV paper runs its NeRV baseline.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from nvrloader.models.blocks import (NeRVBlock, PositionalEncoding, initial_grid, mlp, stage_channels,
                                     to_unit_range)
from nvrloader.models.registry import register_model
from nvrloader.models.sizing import Ramp, Scaling, grid_strides


@register_model("nerv", layout="time",
                recipe=dict(loss="l1_ssim", optimizer="adam", betas=(0.5, 0.999), lr=5e-4, batch_size=16,
                            warmup_start=0.1))  # NeRV-family code: lr_mult = 0.1 + 0.9 * epoch / warmup
class NeRV(nn.Module):
    # Paper ladder: NeRV-S/M/L are 3.2M / 6.3M / 12.57M; "L" is NeRV-L on 720p Bunny exactly
    # (the E-NeRV authors' config). "ucf-*" are the D-NeRV paper's UCF101 NeRV baselines
    # (88M / 105M / 127M). "S"/"M" keep the ladder's sizes at D-NeRV's 256x320 layout.
    PRESETS = {
        "tiny": dict(resolution=(64, 80), fc_dim=32, strides=(4, 2, 2), expansion=1.0, reduction=2,
                     lower_width=8, stem_dim=64),
        "tiny128": dict(resolution=(128, 160), fc_dim=32, strides=(4, 2, 2, 2), expansion=1.0, reduction=2,
                        lower_width=8, stem_dim=64),
        "S": dict(resolution=(256, 320), fc_dim=108, strides=(4, 2, 2, 2, 2), expansion=1.0, reduction=2,
                  lower_width=32),
        "M": dict(resolution=(256, 320), fc_dim=164, strides=(4, 2, 2, 2, 2), expansion=1.0, reduction=2,
                  lower_width=32),
        "L": dict(resolution=(720, 1280), fc_dim=112, strides=(5, 2, 2, 2, 2), expansion=1.0, reduction=2,
                  lower_width=96),
        "ucf-S": dict(resolution=(256, 320), fc_dim=465, strides=(4, 2, 2, 2, 2), expansion=2.0,
                      reduction="stride", lower_width=32, pe_levels=240, head_kernel=3),
        "ucf-M": dict(resolution=(256, 320), fc_dim=510, strides=(4, 2, 2, 2, 2), expansion=2.0,
                      reduction="stride", lower_width=32, pe_levels=240, head_kernel=3),
        "ucf-L": dict(resolution=(256, 320), fc_dim=562, strides=(4, 2, 2, 2, 2), expansion=2.0,
                      reduction="stride", lower_width=32, pe_levels=240, head_kernel=3),
    }
    WIDTH_KEY = "fc_dim"
    FINE_WIDTH_KEY = "stem_dim"
    # Budget sizing: the paper's 80 levels / 512-wide stem / floor 32 from NeRV-S's 3M weights on.
    SCALING = Scaling(ramps={"pe_levels": Ramp(16, 80, 3e6, floor=4), "stem_dim": Ramp(48, 512, 3e6, floor=16),
                             "lower_width": Ramp(6, 32, 3e6, floor=4)},
                      fine="stem_dim", fine_floor=8, strides=grid_strides)
    PARTS = (("time_embedding", r"^stem\."), ("stages", r"^blocks\."), ("heads", r"^head\."))

    def __init__(self, resolution: Sequence[int] = (64, 80), fc_dim: int = 32, strides: Sequence[int] = (4, 2, 2),
                 expansion: float = 1.0, reduction: float | str = 2, lower_width: int = 16, stem_dim: int = 512,
                 pe_base: float = 1.25, pe_levels: int = 80, head_kernel: int = 1, act: str = "gelu",
                 output: str = "tanh"):
        super().__init__()
        self.resolution = (int(resolution[0]), int(resolution[1]))
        self.grid = initial_grid("nerv", self.resolution, strides)
        self.fc_dim = int(fc_dim)
        self.output = output
        self.pe = PositionalEncoding(pe_base, pe_levels)
        self.stem = mlp([self.pe.dim, stem_dim, self.fc_dim * self.grid[0] * self.grid[1]], act)
        channels = stage_channels(self.fc_dim, strides, expansion, reduction, lower_width)
        ins = [self.fc_dim] + channels[:-1]
        self.blocks = nn.ModuleList(NeRVBlock(i, o, s, act=act) for i, o, s in zip(ins, channels, strides))
        self.head = nn.Conv2d(channels[-1], 3, head_kernel, padding=head_kernel // 2)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        t = batch["t"]
        b, n = t.shape
        x = self.stem(self.pe(t.reshape(-1))).view(b * n, self.fc_dim, *self.grid)
        for block in self.blocks:
            x = block(x)
        return to_unit_range(self.head(x), self.output).view(b, n, 3, *self.resolution)
