"""D-NeRV (He et al., CVPR 2023): one shared model for many videos, conditioned on keyframes.

Each 8-frame clip comes with its start and end keyframes (stored by an image codec). A content
encoder turns them into feature pyramids; the decoder, driven by gamma(t) of the per-video time,
predicts a flow at every scale, warps both keyframes' features towards each frame, blends them by
temporal distance, injects them by spatially-adaptive fusion (SAF), up-samples, and mixes the
frames of the clip with a global temporal MLP (GTMLP). The last stage warps the keyframe RGB and a
small head predicts the frame in normalised colour space.

Switches reproduce the paper's ablations: ``fusion="concat"`` (U-Net-style concatenation instead
of SAF), ``gtmlp=False``, ``flow=False`` (content blended without warping) and
``multiscale_flow=False`` (one flow at the coarsest scale, up-sampled for every stage).
``flow_prior=True`` (this project's presets; the paper has none) adds to every flow the optical flow
between the clip's decoded keyframes (`flow_prior`), so the heads learn a correction to
motion-compensated interpolation instead of the whole motion.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from nvrloader.models.blocks import (NeRVBlock, PositionalEncoding, compute_dtype, initial_grid, instance_norm,
                                     make_activation, mlp, stage_channels, warp, xavier_init_)
from nvrloader.models.flow_prior import frame_flows, next_keyframe_flows
from nvrloader.models.registry import register_model
from nvrloader.models.sizing import Ramp, Scaling, grid_strides

# RGB statistics of UCF101 used by the authors to normalise keyframes and de-normalise outputs.
UCF101_MEAN = (0.3986, 0.3829, 0.3546)
UCF101_STD = (0.2805, 0.2747, 0.2787)
FUSIONS = ("saf", "concat")


class _Rows(NamedTuple):
    """What the decoder carries from scale to scale, one row per frame: features, blend weight between
    the clip's keyframes, the clip of the row, and the coarse flow of single-scale models."""

    x: torch.Tensor
    weight: torch.Tensor
    owner: torch.Tensor
    coarse: torch.Tensor | None

    def select(self, keep: torch.Tensor) -> "_Rows":
        return _Rows(self.x[keep], self.weight[keep], self.owner[keep],
                     None if self.coarse is None else self.coarse[keep])

    def of_clips(self, a: int, c: int) -> "_Rows":
        """The rows of clips a..c-1 (rows are ordered by clip), their clips renumbered from 0."""
        lo, hi = torch.searchsorted(self.owner, torch.tensor([a, c], device=self.owner.device)).tolist()
        return _Rows(self.x[lo:hi], self.weight[lo:hi], self.owner[lo:hi] - a,
                     None if self.coarse is None else self.coarse[lo:hi])


def _keep_of_clips(keep: torch.Tensor | None, a: int, c: int, n: int) -> torch.Tensor | None:
    """The kept flat indices (clip * n + frame, ascending) of clips a..c-1, renumbered from clip a."""
    if keep is None:
        return None
    lo, hi = torch.searchsorted(keep, torch.tensor([a * n, c * n], device=keep.device)).tolist()
    return keep[lo:hi] - a * n


def _head(in_ch: int, out_ch: int, act: str) -> nn.Sequential:
    """1x1 conv to C/4 -> activation -> 3x3 conv: the flow and RGB heads.

    The hidden width has a floor of 8 so that tiny models do not squeeze RGB through 2 channels."""
    mid = max(8, in_ch // 4)
    return nn.Sequential(nn.Conv2d(in_ch, mid, 1), make_activation(act), nn.Conv2d(mid, out_ch, 3, padding=1))


class ContentEncoder(nn.Module):
    """Keyframe features at every decoder scale: conv 3x3, then patchify convs (kernel = stride).

    Returns the pyramid coarsest first, ending with the (normalised) keyframe itself, so entry i
    has the resolution of decoder stage i's input and the last entry that of the output.
    """

    def __init__(self, dim: int, strides: Sequence[int], act: str = "gelu"):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, dim, 3, padding=1), make_activation(act))
        self.stages = nn.ModuleList(nn.Sequential(nn.Conv2d(dim, dim, s, stride=s), make_activation(act))
                                    for s in reversed(strides))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = [x]
        y = self.stem(x)
        for stage in self.stages:
            y = stage(y)
            feats.append(y)
        return feats[::-1]


class GTMLP(nn.Module):
    """Global temporal MLP: a learned T x T matrix per channel mixes the frames of a clip, residually.

    The same map as a 1x1 conv over (C * T) channels with groups = C (the paper's formulation),
    written as one einsum because grouped convs are slow on CPU.
    """

    def __init__(self, channels: int, clip_len: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(channels, clip_len, clip_len))
        self.bias = nn.Parameter(torch.empty(channels, clip_len))
        bound = 1 / math.sqrt(clip_len)   # nn.Conv2d's default init for fan_in = T
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """x: [B, T, C, H, W] -> same shape; with ``keep`` (flat indices clip * T + frame) only those
        frames, [K, C, H, W]: the rows of (W + I) they need, as one batched matmul over channels."""
        if keep is None:
            return x + torch.einsum("cst,btchw->bschw", self.weight, x) + self.bias.t()[None, :, :, None, None]
        b, t, c, h, w = x.shape
        clip, frame = keep // t, keep % t
        eye = torch.eye(t, dtype=x.dtype, device=x.device)
        mix = self.weight[:, frame] + eye[frame]                                     # [C, K, T]
        cols = (clip * t).unsqueeze(1) + torch.arange(t, device=x.device)            # [K, T]: its clip's rows
        select = x.new_zeros(c, len(keep), b * t).scatter_(2, cols.expand(c, -1, -1), mix)
        frames = x.permute(2, 0, 1, 3, 4).reshape(c, b * t, h * w)
        out = torch.baddbmm(self.bias[:, frame].unsqueeze(2), select, frames)       # [C, K, H * W]
        return out.transpose(0, 1).reshape(len(keep), c, h, w)


class DNeRVStage(nn.Module):
    """Fuse the warped content (SAF or concat) -> conv -> PixelShuffle -> GELU -> GTMLP residual.

    The SAF and up-sampling convs start xavier-uniform with zero biases, as in the authors' code
    (their ``DNeRVBlock._init_weights``); the GTMLP keeps the grouped conv's default init.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int, content_ch: int, clip_len: int,
                 fusion: str = "saf", gtmlp: bool = True, act: str = "gelu"):
        super().__init__()
        self.fusion = fusion
        self.clip_len = clip_len
        self.saf = xavier_init_(nn.Conv2d(content_ch, 2 * in_ch, 1)) if fusion == "saf" else None
        conv_in = in_ch if fusion == "saf" else in_ch + content_ch
        self.up = xavier_init_(NeRVBlock(conv_in, out_ch, stride, act=act))
        self.gtmlp = GTMLP(out_ch, clip_len) if gtmlp else None

    def forward(self, x: torch.Tensor, content: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Rows of whole clips in; with ``keep`` (and a GTMLP) only those rows out."""
        if self.saf is not None:
            gamma, beta = self.saf(content).chunk(2, dim=1)
            x = x * (1 + gamma) + beta
        else:
            x = torch.cat((x, content), dim=1)
        x = self.up(x)
        if self.gtmlp is not None:
            bt, c, h, w = x.shape
            x = self.gtmlp(x.view(bt // self.clip_len, self.clip_len, c, h, w), keep)
            return x.view(bt, c, h, w) if keep is None else x
        return x


@register_model("dnerv", layout="clip",
                # The authors' recipe: warm-up from 0.1 lr, 32 clips a batch at S/M/L. CPU presets keep 8 clips; the
                # warm-up start was measured on them (sample set, 64x80, 0.3 bpp, 20 epochs: 0.1 gave 27.35 dB,
                # 0 gave 27.32 dB), so 0.1 everywhere.
                recipe=dict(loss="mse_ssim", optimizer="adamw", betas=(0.9, 0.999), lr=5e-4, batch_size=8,
                            warmup_start=0.1, by_size={size: {"batch_size": 32} for size in ("S", "M", "L")}))
class DNeRV(nn.Module):
    # S/M/L: the paper's UCF101 models (21.4M / 38.9M / 61.3M); tiny*: CPU-sized.
    PRESETS = {
        "tiny": dict(resolution=(64, 80), fc_dim=16, strides=(4, 2, 2), lower_width=8, stem_dim=64,
                     content_dim=16, flow_prior=True),
        "tiny128": dict(resolution=(128, 160), fc_dim=16, strides=(4, 2, 2, 2), lower_width=8, stem_dim=64,
                        content_dim=16, flow_prior=True),
        "S": dict(resolution=(256, 320), fc_dim=198, strides=(4, 2, 2, 2, 2), flow_prior=True),
        "M": dict(resolution=(256, 320), fc_dim=280, strides=(4, 2, 2, 2, 2), flow_prior=True),
        "L": dict(resolution=(256, 320), fc_dim=361, strides=(4, 2, 2, 2, 2), flow_prior=True),
    }
    WIDTH_KEY = "fc_dim"
    FINE_WIDTH_KEY = "stem_dim"
    # Budget sizing: paper widths from 16M weights on (S/M/L are above), the time embedding (positional
    # levels, stem) shrinking fastest below; 40k weights -> 24 levels, stem 48, content 12, floor 6.
    SCALING = Scaling(ramps={"pe_levels": Ramp(24, 240, 16e6, floor=8), "stem_dim": Ramp(48, 512, 16e6, floor=16),
                             "content_dim": Ramp(12, 64, 16e6, floor=4), "lower_width": Ramp(6, 32, 16e6, floor=4)},
                      fine="stem_dim", fine_floor=8, alternate="content_dim", strides=grid_strides)
    PARTS = (("gtmlp", r"\.gtmlp\."), ("time_embedding", r"^stem\."), ("content_encoder", r"^encoder\."),
             ("stages", r"^stages\."), ("heads", r"^(flow_heads|rgb_head)\."))

    def __init__(self, resolution: Sequence[int] = (256, 320), fc_dim: int = 198,
                 strides: Sequence[int] = (4, 2, 2, 2, 2), expansion: float = 2.0, lower_width: int = 32,
                 stem_dim: int = 512, content_dim: int = 64, pe_base: float = 1.25, pe_levels: int = 240,
                 clip_len: int = 8, fusion: str = "saf", gtmlp: bool = True, flow: bool = True,
                 multiscale_flow: bool = True, mean: Sequence[float] = UCF101_MEAN,
                 std: Sequence[float] = UCF101_STD, act: str = "gelu", rgb_residual: bool = True,
                 flow_prior: bool = False):
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"dnerv: fusion must be one of {FUSIONS}, got {fusion!r}")
        if flow_prior and not flow:
            raise ValueError("dnerv: flow_prior needs flow=True (the prior is added to the flow heads' output)")
        self.resolution = (int(resolution[0]), int(resolution[1]))
        self.grid = initial_grid("dnerv", self.resolution, strides)
        self.fc_dim = int(fc_dim)
        self.clip_len = int(clip_len)
        self.uses_gtmlp = bool(gtmlp)
        self.multiscale_flow = bool(multiscale_flow)
        self.flow_prior = bool(flow_prior)
        # The RGB head predicts a correction to the blended, warped keyframes (no parameters; off gives
        # the paper's plain head). Small models start from keyframe interpolation instead of grey.
        self.rgb_residual = bool(rgb_residual)
        self.pe = PositionalEncoding(pe_base, pe_levels)
        self.stem = mlp([self.pe.dim, stem_dim, self.fc_dim * self.grid[0] * self.grid[1]], act)
        self.encoder = ContentEncoder(content_dim, strides, act)
        channels = stage_channels(self.fc_dim, strides, expansion, "stride", lower_width)
        ins = [self.fc_dim + content_dim] + channels[:-1]
        self.stages = nn.ModuleList(DNeRVStage(c_in, c_out, s, content_dim, self.clip_len, fusion, gtmlp, act)
                                    for c_in, c_out, s in zip(ins, channels, strides))
        # one flow head per scale (every stage input and the output), one at the coarsest, or none
        flow_ins = (ins + channels[-1:]) if multiscale_flow else ins[:1]
        self.flow_heads = nn.ModuleList(_head(c, 4, act) for c in flow_ins) if flow else nn.ModuleList()
        self.rgb_head = _head(channels[-1] + 3, 3, act)
        # Heads that output a correction start at zero: no flow (the keyframes' features blended in place)
        # and, with the RGB residual, no correction, so an untrained model is linear keyframe interpolation.
        for head in [*self.flow_heads, *([self.rgb_head] if self.rgb_residual else [])]:
            nn.init.zeros_(head[-1].weight)
            nn.init.zeros_(head[-1].bias)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.decode_clips(batch, self.encode_keyframes(batch["keyframes"].flatten(0, 1), pairs=True))

    def encode_keyframes(self, keyframes: torch.Tensor, pairs: bool = False) -> list[torch.Tensor]:
        """Content pyramid of keyframes [K, 3, H, W] in [0, 1], coarsest level first; with ``flow_prior``
        one more entry, each keyframe's flows to and from the next row (`flow_prior.next_keyframe_flows`),
        so rows come in order: a video's keyframes, or (``pairs``) each clip's start then end keyframe.

        Apart from `decode_clips` so that a decoder runs the encoder once per keyframe and caches
        the result: neighbouring clips share a keyframe, and requests come back to the same video."""
        pyramid = self.encoder((keyframes - self.mean) / self.std)
        if self.flow_prior:
            pyramid.append(next_keyframe_flows(keyframes, pairs).to(compute_dtype(keyframes.dtype)))
        return pyramid

    def decode_clips(self, batch: dict[str, torch.Tensor], pyramid: Sequence[torch.Tensor],
                     keep: torch.Tensor | None = None, chunk_pixels: int | None = None) -> torch.Tensor:
        """Frames [B, n, 3, H, W] of B clips from their inputs (t, offset, span) and the pyramid of their
        keyframes (each level [2B, C, h, w]: start and end keyframe of clip 0, then of clip 1, ...).

        ``keep`` (flat indices clip * n + frame, ascending) returns only those frames, [len(keep), 3, H, W]:
        they leave the clip where frames stop depending on each other (in the last GTMLP, or after the
        stem's instance norm without GTMLP), so a request for a few frames skips the rest.
        ``chunk_pixels`` bounds the activations of a pass: the coarse scales run for every clip at once,
        and from the first scale with more pixels on, a few clips at a time (CPU caches)."""
        t = batch["t"]
        b, n = t.shape
        if self.uses_gtmlp and n != self.clip_len:
            raise ValueError(f"dnerv: clips must have {self.clip_len} frames (the GTMLP's clip_len), got {n}; "
                             "pad short clips with their last frame")
        weight = (batch["offset"] / batch["span"].clamp(min=1).unsqueeze(1)).reshape(b * n, 1, 1, 1)
        owner = torch.arange(b, device=t.device).repeat_interleave(n)   # the clip of every frame row

        x = self.stem(self.pe(t.reshape(-1))).view(b, n, self.fc_dim, *self.grid)
        content = F.interpolate(pyramid[0].view(b, 2, -1, *self.grid).transpose(1, 2), size=(n, *self.grid),
                                mode="trilinear", align_corners=False).transpose(1, 2)
        x = torch.cat((x, content), dim=2).transpose(1, 2)            # [B, C, T, h0, w0]
        x = instance_norm(x).transpose(1, 2).reshape(b * n, -1, *self.grid)
        frames = self._scales(0, _Rows(x, weight, owner, None), pyramid, keep, n, chunk_pixels)
        frames = (frames * self.std + self.mean).clamp(0, 1)
        return frames.view(b, n, 3, *self.resolution) if keep is None else frames

    def _scales(self, start: int, rows: "_Rows", pyramid: Sequence[torch.Tensor], keep: torch.Tensor | None,
                n: int, chunk_pixels: int | None) -> torch.Tensor:
        """Scales ``start``.. of the decoder for ``rows`` (normalised output rows): split into groups of
        clips at the first scale whose activations pass ``chunk_pixels``."""
        split = len(self.stages) if self.uses_gtmlp else 0   # first scale at which frames are independent
        clips = len(pyramid[0]) // 2
        h, w = self.resolution
        scales = len(self.stages) + 1   # a flow prior is the pyramid's entry after the scales
        for i in range(start, scales):
            feats = pyramid[i]
            if chunk_pixels is not None and clips > 1 and len(rows.x) * feats[0, 0].numel() > chunk_pixels:
                per = max(1, chunk_pixels // (n * h * w))
                return torch.cat([self._scales(i, rows.of_clips(a, min(a + per, clips)),
                                               [p[2 * a:2 * (a + per)] for p in pyramid],
                                               _keep_of_clips(keep, a, min(a + per, clips), n), n, None)
                                  for a in range(0, clips, per)])
            if keep is not None and i == split == 0:
                rows = rows.select(keep)
            x, weight, owner, coarse = rows
            if self.flow_heads and self.multiscale_flow:
                flow = self.flow_heads[i](x)
            elif self.flow_heads:   # single scale: predicted once at the coarsest scale, resized per stage
                coarse = self.flow_heads[0](x) if coarse is None else coarse
                flow = self._upsample_flow(coarse, feats.shape[-2:])
            else:
                flow = None
            if self.flow_prior:
                # in (at least) fp32, as the warp samples: bf16 holds a 10-pixel flow to 1/16 px
                flow = flow.to(compute_dtype(flow.dtype)) + self._prior(pyramid[scales], owner, weight, feats.shape[-2:])
            fused = self._fuse(feats, flow, weight, clips, n, owner)
            if i < len(self.stages):
                last_mix = keep is not None and i + 1 == split   # this stage's GTMLP gives only the kept rows
                x = self.stages[i](x, fused, keep if last_mix else None)
                if last_mix:
                    weight, owner = weight[keep], owner[keep]
                    coarse = None if coarse is None else coarse[keep]
            else:
                x = self.rgb_head(torch.cat((x, fused), 1)) + (fused if self.rgb_residual else 0)
            rows = _Rows(x, weight, owner, coarse)
        return rows.x

    def _prior(self, pairs: torch.Tensor, owner: torch.Tensor, weight: torch.Tensor,
               size: Sequence[int]) -> torch.Tensor:
        """Each row's flows to its clip's start and end keyframe at ``size``, from the keyframe flows
        ``pairs`` (rows: start, end keyframe of each clip; a clip's pair flows are its start's row)."""
        return frame_flows(self._upsample_flow(pairs[0::2], size).index_select(0, owner), weight)

    @staticmethod
    def _upsample_flow(flow: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        """A pixel-unit flow resized to ``size`` (up or down): displacements scale with the resolution.

        Resized in (at least) fp32, like the warp that consumes it: a bf16 flow times the scale
        would round displacements of a few pixels by up to 1/32 px."""
        if tuple(size) == tuple(flow.shape[-2:]):
            return flow
        scale = size[0] / flow.shape[-2]
        flow = flow.to(compute_dtype(flow.dtype))
        return F.interpolate(flow, size=tuple(size), mode="bilinear", align_corners=False) * scale

    @staticmethod
    def _fuse(feats: torch.Tensor, flow: torch.Tensor | None, weight: torch.Tensor, b: int,
              n: int, owner: torch.Tensor | None = None) -> torch.Tensor:
        """(1 - w) * start warped forward + w * end warped backward, per frame of the clip.

        ``owner`` names the clip of each frame row (default: n rows per clip, all B clips)."""
        if owner is None:
            owner = torch.arange(b, device=feats.device).repeat_interleave(n)
        both = feats.index_select(0, torch.cat((2 * owner, 2 * owner + 1)))      # starts, then ends
        if flow is not None:   # one sampling pass for both directions
            both = warp(both, torch.cat((flow[:, :2], flow[:, 2:])))
        start, end = both.chunk(2)
        return torch.lerp(start, end, weight.to(start.dtype))
