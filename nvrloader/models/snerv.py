"""SNeRV (Kim et al., ECCV 2024): HNeRV in the Haar wavelet domain.

The encoder embeds only the LL band of the frame; the decoder rebuilds LL with up-sampling blocks
(UBs) refined by a multi-resolution fusion unit (MFU), a high-frequency restorer (HFR) predicts the
three detail bands from the same features, and an inverse DWT gives the frame. Facts from the paper
and the authors' code (qwertja/SNeRV): NeRV blocks as in HNeRV (kernel min(1 + 2i, 5), channels /1.2,
floor 12); each MFU block is a stride-s transposed conv of UB[-3] (then of the previous MFU output),
concatenated with the next UB output, then a 3x3 conv and ``num_res_blocks`` residual blocks
(conv3x3, LeakyReLU 0.1, conv3x3); each HFR block is conv1x1, LeakyReLU 0.1, conv3x3 -> 3 channels.
3M Bunny config: strides 5,4,2,2,2 on the 320x640 LL, fc_dim 111 (111 -> 92 -> 77 -> 64 -> 53 -> 44),
6 residual blocks: 2.99M decoder + 132 x 16x2x4 embedding values.

Deviation: the authors normalise each frame's LL by its own min/max and store those two numbers per
frame; here LL (in [0, 2] for frames in [0, 1]) is scaled by the fixed 1/2 instead, so the embedding
is the only side information.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import NamedTuple

import torch
from torch import nn

from nvrloader.models.blocks import initial_grid, to_unit_range
from nvrloader.models.hnerv import (ConvNeXtEncoder, NeRVDecoderTrunk, auto_strides, check_tensor,
                                    decoder_channels)
from nvrloader.models.registry import register_model
from nvrloader.models.sizing import Ramp, Scaling
from nvrloader.models.wavelet import dwt2, idwt2

LL_SCALE = 2.0  # Haar LL of a [0, 1] image lies in [0, 2]


class SNeRVOutput(NamedTuple):
    """Frames plus the sub-bands they were built from, for the paper's per-band losses.

    frames [B, T, 3, H, W] in [0, 1]; ll [B, T, 3, H/2, W/2]; highs [B, T, 3, 3, H/2, W/2] with the band
    axis third-last in H, V, D order, i.e. exactly what ``wavelet.dwt2(target_frames)`` returns."""

    frames: torch.Tensor
    ll: torch.Tensor
    highs: torch.Tensor


class ResidualBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(ch, ch, 3, padding=1), nn.LeakyReLU(0.1),
                                  nn.Conv2d(ch, ch, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class FusionBlock(nn.Module):
    """One MFU block: up-sample the coarser feature, concatenate the finer UB output, refine."""

    def __init__(self, coarse_ch: int, fine_ch: int, stride: int, num_res_blocks: int):
        super().__init__()
        self.up = nn.ConvTranspose2d(coarse_ch, coarse_ch, stride, stride=stride)
        self.refine = nn.Sequential(nn.Conv2d(coarse_ch + fine_ch, fine_ch, 3, padding=1),
                                    *(ResidualBlock(fine_ch) for _ in range(num_res_blocks)))

    def forward(self, coarse: torch.Tensor, fine: torch.Tensor) -> torch.Tensor:
        return self.refine(torch.cat([self.up(coarse), fine], dim=1))


def hf_block(ch: int) -> nn.Sequential:
    """One HFR block: predicts one detail band (3 colour channels)."""
    return nn.Sequential(nn.Conv2d(ch, ch, 1), nn.LeakyReLU(0.1), nn.Conv2d(ch, 3, 3, padding=1))


@register_model("snerv", layout="subband",
                recipe=dict(loss="l1_ssim", optimizer="adam", betas=(0.9, 0.999), lr=1e-3, batch_size=16,
                            warmup_start=0.1))  # NeRV-family code: lr_mult = 0.1 + 0.9 * epoch / warmup
class SNeRV(nn.Module):
    """SNeRV: ``encode(frames [N,3,H,W]) -> [N,C,h,w]`` (from LL); ``model({"embedding": [B,T,C,h,w]})
    -> [B,T,3,H,W]``; ``model(batch, return_subbands=True) -> SNeRVOutput``."""

    PRESETS = {
        # CPU sizes; strides follow the LL resolution (auto_strides): 64x80 -> LL 32x40 -> 2,2,2;
        # 128x160 -> LL 64x80 -> 2,2,2,2. Both give a 4x5 embedding.
        "tiny": {"resolution": (64, 80), "fc_dim": 32, "embed_ch": 8, "enc_dim": 16, "num_res_blocks": 2},
        "tiny128": {"resolution": (128, 160), "fc_dim": 64, "embed_ch": 8, "enc_dim": 32, "num_res_blocks": 2},
        # Bunny 3M of the paper (Tab. 6 / README of the authors' code).
        "paper": {"resolution": (640, 1280), "strides": (5, 4, 2, 2, 2), "fc_dim": 111, "embed_ch": 16,
                  "enc_dim": 64, "num_res_blocks": 6},
    }
    WIDTH_KEY = "fc_dim"
    FINE_WIDTH_KEY = "stem_dim"  # see hnerv.py
    # Budget sizing as HNeRV's, plus the fusion unit's residual blocks (6 in the 3M paper model).
    SCALING = Scaling(ramps={"lower_width": Ramp(6, 12, 400e3, floor=4), "enc_dim": Ramp(16, 64, 1.5e6, floor=8),
                             "num_res_blocks": Ramp(1, 6, 3e6, floor=1)},
                      fine="stem_dim", fine_floor=16)
    PARTS = (("embedding_stem", r"^decoder\.stem\."), ("stages", r"^decoder\.stages\."), ("fusion", r"^fusion\."),
             ("heads", r"^(ll_head|hf_restorer)\."))

    def __init__(self, resolution: Sequence[int] = (640, 1280), fc_dim: int = 111,
                 strides: Sequence[int] | None = None, embed_ch: int = 16, enc_dim: int = 64,
                 enc_blocks: int = 1, num_res_blocks: int = 6, reduce: float = 1.2, lower_width: int = 12,
                 kernel_min: int = 1, kernel_max: int = 5, act: str = "gelu", out_act: str = "tanh",
                 stem_dim: int | None = None):
        super().__init__()
        self.resolution = tuple(int(v) for v in resolution)
        if len(self.resolution) != 2 or self.resolution[0] % 2 or self.resolution[1] % 2:
            raise ValueError(f"snerv: resolution {'x'.join(map(str, self.resolution))} is not allowed: the Haar "
                             f"DWT needs an even height and width (e.g. 64x80, 128x160, 640x1280)")
        ll_size = (self.resolution[0] // 2, self.resolution[1] // 2)
        if strides is None:
            self.strides = auto_strides("snerv (on the half-size LL band)", ll_size, min_stages=3)
        else:
            self.strides = tuple(int(s) for s in strides)
        if len(self.strides) < 3:
            raise ValueError(f"snerv: needs at least 3 strides (the fusion unit takes the last three "
                             f"up-sampling blocks), got {list(self.strides)}")
        # A full-frame stride of 2 * total stride: the IDWT is the last up-sampling step.
        grid = initial_grid("snerv", self.resolution, (2, *self.strides))
        self.embedding_shape = (int(embed_ch), *grid)
        self.out_act = out_act
        self.encoder = ConvNeXtEncoder(3, self.strides, enc_dim, embed_ch, enc_blocks)
        channels = decoder_channels(fc_dim, len(self.strides), reduce, lower_width, stem_dim)
        self.decoder = NeRVDecoderTrunk(embed_ch, channels, self.strides, kernel_min, kernel_max, act)
        self.fusion = nn.ModuleList([
            FusionBlock(channels[-3], channels[-2], self.strides[-2], num_res_blocks),
            FusionBlock(channels[-2], channels[-1], self.strides[-1], num_res_blocks),
        ])
        self.ll_head = nn.Conv2d(channels[-1], 3, 3, padding=1)
        self.hf_restorer = nn.ModuleList(hf_block(channels[-1]) for _ in range(3))

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """Per-frame embeddings ``[N, C, h, w]`` of the LL band of frames ``[N, 3, H, W]`` in [0, 1]."""
        check_tensor("snerv", "frames", frames, (None, 3, *self.resolution))
        ll, _ = dwt2(frames)
        return self.encoder(ll / LL_SCALE)

    def decode(self, embedding: torch.Tensor) -> SNeRVOutput:
        """Frames ``[N, 3, H, W]`` in [0, 1], LL ``[N, 3, H/2, W/2]`` and highs ``[N, 3, 3, H/2, W/2]``."""
        check_tensor("snerv", "embedding", embedding, (None, *self.embedding_shape))
        ub = self.decoder(embedding)
        x = self.fusion[0](ub[-3], ub[-2])
        x = self.fusion[1](x, ub[-1])
        ll = LL_SCALE * to_unit_range(self.ll_head(x), self.out_act)
        highs = torch.stack([block(x) for block in self.hf_restorer], dim=2)
        return SNeRVOutput(idwt2(ll, highs).clamp(0.0, 1.0), ll, highs)

    def forward(self, batch: dict[str, torch.Tensor], return_subbands: bool = False) -> torch.Tensor | SNeRVOutput:
        emb = batch["embedding"]
        check_tensor("snerv", 'batch["embedding"]', emb, (None, None, *self.embedding_shape))
        out = self.decode(emb.flatten(0, 1))
        out = SNeRVOutput(*(t.unflatten(0, emb.shape[:2]) for t in out))
        return out if return_subbands else out.frames

    def counted_parameters(self) -> Iterator[nn.Parameter]:
        """Decoder parameters only: the encoder is not stored (the papers add the embeddings' values)."""
        return (p for name, p in self.named_parameters() if not name.startswith("encoder."))
