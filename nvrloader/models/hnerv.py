"""HNeRV (Chen et al., CVPR 2023): a ConvNeXt encoder gives each frame a tiny embedding, a NeRV decoder
turns it back into the frame.

Only the decoder and the (quantised) embeddings are stored; the encoder is used at build time and is
left out of ``counted_parameters()``. Facts from the authors' code (haochen-rye/HNeRV): encoder and
decoder strides mirror each other (5,4,4,2,2 for 640x1280 -> 16x2x4 embedding); the decoder is a 1x1
conv to ``fc_dim`` + GELU, then one conv -> PixelShuffle -> GELU block per stride with kernel
min(1 + 2i, 5) and channels round(C / 1.2) floored at 12, then a 3x3 head and (tanh + 1) / 2.
The 1.5M Bunny model (132 frames) solves to fc_dim 68.

``stem_dim`` (default ``fc_dim``) sets the stem's output width on its own. It only feeds the 1x1-kernel
first stage, so one channel of it is a small step in the parameter count: ``solve_width`` uses it to
land on a budget that one step of ``fc_dim`` (all stage widths at once) would overshoot.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from nvrloader.models.blocks import NeRVBlock, auto_strides, initial_grid, make_activation, to_unit_range
from nvrloader.models.registry import register_model
from nvrloader.models.sizing import Ramp, Scaling

def decoder_channels(fc_dim: int, num_stages: int, reduce: float, lower_width: int,
                     stem_dim: int | None = None) -> list[int]:
    """Channels entering each stage and leaving the last: C_{i+1} = max(round(C_i / reduce), lower_width)
    from C_0 = fc_dim (the authors' rule, rounding stage by stage); the stem's width is then replaced by
    ``stem_dim`` when given."""
    channels = [int(fc_dim)]
    for _ in range(num_stages):
        channels.append(int(max(round(channels[-1] / reduce), lower_width)))
    if stem_dim is not None:
        channels[0] = int(stem_dim)
    return channels


class ConvNeXtEncoder(nn.Module):
    """Patchify-downsample + ConvNeXt blocks per stage (HNeRV's encoder): dims ``width`` until the last
    stage, which outputs ``out_ch`` channels (the embedding)."""

    def __init__(self, in_ch: int, strides: Sequence[int], width: int, out_ch: int, blocks: int = 1):
        # timm (and torchvision behind it) loads only when an encoder is built: decoders never need it
        from timm.layers import LayerNorm2d
        from timm.models.convnext import ConvNeXtBlock

        super().__init__()
        dims = [width] * (len(strides) - 1) + [out_ch]
        layers: list[nn.Module] = []
        prev = in_ch
        for i, (s, d) in enumerate(zip(strides, dims)):
            if i == 0:
                layers += [nn.Conv2d(prev, d, s, stride=s), LayerNorm2d(d)]
            else:
                layers += [LayerNorm2d(prev), nn.Conv2d(prev, d, s, stride=s)]
            layers += [ConvNeXtBlock(d) for _ in range(blocks)]
            prev = d
        self.layers = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class NeRVDecoderTrunk(nn.Module):
    """1x1 conv (embedding -> fc_dim) + activation, then one NeRV block per stride; keeps every stage's
    output because SNeRV's fusion unit needs the last three."""

    def __init__(self, embed_ch: int, channels: Sequence[int], strides: Sequence[int], kernel_min: int,
                 kernel_max: int, act: str):
        super().__init__()
        if len(channels) != len(strides) + 1:
            raise ValueError(f"decoder: {len(strides)} strides need {len(strides) + 1} channel widths, got {list(channels)}")
        self.stem = nn.Sequential(nn.Conv2d(embed_ch, channels[0], 1), make_activation(act))
        self.stages = nn.ModuleList(
            NeRVBlock(c_in, c_out, s, kernel_size=min(kernel_min + 2 * i, kernel_max), act=act)
            for i, (c_in, c_out, s) in enumerate(zip(channels[:-1], channels[1:], strides)))

    def forward(self, embedding: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(embedding)
        outputs = []
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        return outputs


def check_tensor(model: str, what: str, x: torch.Tensor, shape: Sequence[int | None]) -> None:
    """A ValueError naming the expected shape (None = any size) when ``x`` does not match."""
    ok = x.dim() == len(shape) and all(e is None or e == g for e, g in zip(shape, x.shape))
    if not ok:
        expected = "[" + ", ".join("*" if e is None else str(e) for e in shape) + "]"
        raise ValueError(f"{model}: {what} must have shape {expected}, got {list(x.shape)}")


@register_model("hnerv", layout="embedding",
                recipe=dict(loss="l1_ssim", optimizer="adam", betas=(0.9, 0.999), lr=1e-3, batch_size=16,
                            warmup_start=0.1))  # NeRV-family code: lr_mult = 0.1 + 0.9 * epoch / warmup
class HNeRV(nn.Module):
    """HNeRV: ``encode(frames [N,3,H,W]) -> [N,C,h,w]``; ``model({"embedding": [B,T,C,h,w]}) -> [B,T,3,H,W]``.

    ``strides=None`` picks them from the resolution with :func:`auto_strides`; the chosen ones are in
    ``model.strides`` and the per-frame side information's shape in ``model.embedding_shape``.
    """

    PRESETS = {
        # CPU sizes: strides follow the resolution (auto_strides), e.g. 64x80 -> 2,2,2,2 (4x5 embedding),
        # 128x160 -> 2,2,2,2,2 (4x5 embedding).
        "tiny": {"resolution": (64, 80), "fc_dim": 32, "embed_ch": 8, "enc_dim": 16},
        "tiny128": {"resolution": (128, 160), "fc_dim": 64, "embed_ch": 8, "enc_dim": 32},
        # Bunny 1.5M of the paper: 16x2x4 embeddings, decoder ~1.48M + 132 frames x 128 embedding values.
        "paper": {"resolution": (640, 1280), "strides": (5, 4, 4, 2, 2), "fc_dim": 68, "embed_ch": 16,
                  "enc_dim": 64},
    }
    WIDTH_KEY = "fc_dim"
    FINE_WIDTH_KEY = "stem_dim"
    # Budget sizing: stage widths by fc_dim; the stem's width (target fc_dim, at least 16 so an embedding
    # of up to 16 channels is never squeezed) absorbs the rounding; the channel floor (12 in the paper)
    # only binds small models, so it ramps down below 400k weights; the (unstored) encoder reaches the
    # paper's width 64 at the paper's 1.5M.
    SCALING = Scaling(ramps={"lower_width": Ramp(6, 12, 400e3, floor=4), "enc_dim": Ramp(16, 64, 1.5e6, floor=8)},
                      fine="stem_dim", fine_floor=16)
    PARTS = (("embedding_stem", r"^decoder\.stem\."), ("stages", r"^decoder\.stages\."), ("heads", r"^head\."))

    def __init__(self, resolution: Sequence[int] = (640, 1280), fc_dim: int = 68,
                 strides: Sequence[int] | None = None, embed_ch: int = 16, enc_dim: int = 64,
                 enc_blocks: int = 1, reduce: float = 1.2, lower_width: int = 12, kernel_min: int = 1,
                 kernel_max: int = 5, act: str = "gelu", out_act: str = "tanh", stem_dim: int | None = None):
        super().__init__()
        self.resolution = tuple(int(v) for v in resolution)
        self.strides = tuple(int(s) for s in strides) if strides is not None else auto_strides("hnerv", self.resolution)
        grid = initial_grid("hnerv", self.resolution, self.strides)
        self.embedding_shape = (int(embed_ch), *grid)
        self.out_act = out_act
        self.encoder = ConvNeXtEncoder(3, self.strides, enc_dim, embed_ch, enc_blocks)
        channels = decoder_channels(fc_dim, len(self.strides), reduce, lower_width, stem_dim)
        self.decoder = NeRVDecoderTrunk(embed_ch, channels, self.strides, kernel_min, kernel_max, act)
        self.head = nn.Conv2d(channels[-1], 3, 3, padding=1)

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """Per-frame embeddings ``[N, C, h, w]`` of frames ``[N, 3, H, W]`` in [0, 1] (differentiable)."""
        check_tensor("hnerv", "frames", frames, (None, 3, *self.resolution))
        return self.encoder(frames)

    def decode(self, embedding: torch.Tensor) -> torch.Tensor:
        """Frames ``[N, 3, H, W]`` in [0, 1] from embeddings ``[N, C, h, w]``."""
        check_tensor("hnerv", "embedding", embedding, (None, *self.embedding_shape))
        return to_unit_range(self.head(self.decoder(embedding)[-1]), self.out_act)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        emb = batch["embedding"]
        check_tensor("hnerv", 'batch["embedding"]', emb, (None, None, *self.embedding_shape))
        return self.decode(emb.flatten(0, 1)).unflatten(0, emb.shape[:2])

    def counted_parameters(self) -> Iterator[nn.Parameter]:
        """Decoder parameters only: the encoder is not stored (the papers add the embeddings' values)."""
        return (p for name, p in self.named_parameters() if not name.startswith("encoder."))
