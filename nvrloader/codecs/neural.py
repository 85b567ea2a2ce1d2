"""Neural codecs: one network fitted to the whole dataset, stored as entropy-coded quantised weights
plus the side information its decoder needs (D-NeRV keyframes, HNeRV/SNeRV embeddings).

At a target bpp the keyframe quality (D-NeRV) and the model width are chosen before fitting, and
the weight quantisation step is tuned after fitting so the archive lands on the target.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
from collections import OrderedDict
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from nvrloader.archive import Archive, ArchiveWriter
from nvrloader.codecs.base import Codec, CodecError, Decoder, register_codec
from nvrloader.codecs.classical import search_rate
from nvrloader.codecs.layouts import LAYOUTS, ClipLayout, FrameTable, TimeLayout, keyframe_indices, to_float
from nvrloader.codecs.raw import video_key
from nvrloader.compress import images, quant
from nvrloader.compress.images import pack_images, unpack_images
from nvrloader.fit import FitConfig, fit
from nvrloader.framestore import FrameStore
from nvrloader.metrics import psnr
from nvrloader.models import create_model, model_class, model_config
from nvrloader.models.registry import count_model_params

# Per-family training recipe (REFERENCE.md); every value can be overridden on the command line.
RECIPES: dict[str, dict[str, Any]] = {
    "dnerv": {"loss": "mse_ssim", "optimizer": "adamw", "betas": (0.9, 0.999), "lr": 5e-4, "batch_size": 8},
    "nerv": {"loss": "l1_ssim", "optimizer": "adam", "betas": (0.5, 0.999), "lr": 5e-4, "batch_size": 16},
    "enerv": {"loss": "l1_ssim", "optimizer": "adam", "betas": (0.5, 0.999), "lr": 5e-4, "batch_size": 16},
    "hnerv": {"loss": "l1_ssim", "optimizer": "adam", "betas": (0.9, 0.999), "lr": 1e-3, "batch_size": 16},
    "snerv": {"loss": "l1_ssim", "optimizer": "adam", "betas": (0.9, 0.999), "lr": 1e-3, "batch_size": 16},
}
# Coded bits per weight after 8-bit quantisation and entropy coding, used only to pick a width before
# fitting; the quantisation step is tuned afterwards on the real bytes.
BITS_PER_WEIGHT_GUESS = 6.5
WEIGHT_BITS_RANGE = (4.0, 12.0)


def jsonable(cfg: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(cfg, default=list))


def stored_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """What the decoder needs: the state dict without the parameters a paper does not count
    (HNeRV/SNeRV's encoder, which only made the embeddings)."""
    counted = {id(p) for p in (model.counted_parameters() if hasattr(model, "counted_parameters")
                               else model.parameters())}
    skip = {n for n, p in model.named_parameters() if id(p) not in counted}
    return {n: t.detach() for n, t in model.state_dict().items() if n not in skip}


def load_stored_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    missing, unexpected = model.load_state_dict(state, strict=False)
    needed = set(stored_state(model))
    if unexpected or needed & set(missing):
        raise ValueError(f"stored weights do not fit the model: missing {sorted(needed & set(missing))[:5]}, "
                         f"unexpected {unexpected[:5]}")


def pack_weights(state: dict[str, torch.Tensor], bits: float) -> bytes:
    return quant.pack(quant.quantize_state_dict(state, bits=bits))


class Keyframes:
    """D-NeRV's keyframes: coded with an image codec before fitting, so training sees what a decoder will."""

    def __init__(self, codec: str, quality: int) -> None:
        self.codec, self.quality = codec, quality

    def encode(self, store: FrameStore, video_ids: Sequence[int], clip_len: int, progress: bool = True
               ) -> tuple[list[bytes], dict[int, np.ndarray]]:
        payloads, decoded = [], {}
        for i, vid in enumerate(tqdm(video_ids, desc=f"keyframes {self.codec} q{self.quality}", unit="video",
                                     leave=False, disable=not progress)):
            frames = store.frames(vid, keyframe_indices(store.num_frames(vid), clip_len))
            streams = [images.encode_image(f, self.codec, self.quality) for f in frames]
            payloads.append(pack_images(streams))
            decoded[i] = np.stack([images.decode_image(s, self.codec) for s in streams])
        return payloads, decoded


class NeuralDecoder(Decoder):
    """Weights dequantised onto the device once; each DataLoader batch is one forward pass."""

    keyframe_cache = 64

    def __init__(self, archive: Archive, device: torch.device, half: bool = False) -> None:
        super().__init__(archive, device, half)
        cfg = self.config
        with archive.decoding("model/weights"):  # shapes from a meta-device model bound the payload
            with torch.device("meta"):
                probe = model_class(cfg["model"])(**cfg["model_config"])
            shapes = {k: v.shape for k, v in stored_state(probe).items()}
            state = quant.unpack(archive.get("model", "weights"), shapes=shapes)
            self.model = model_class(cfg["model"])(**cfg["model_config"]).to(device).eval()
            load_stored_state(self.model, {k: v.to(device) for k, v in state.items()})
        if half:
            self.model.half()
        table = FrameTable(tuple(int(v["num_frames"]) for v in self.meta["videos"]))
        self.layout: TimeLayout = LAYOUTS[cfg["model"]](table, cfg.get("clip_len", 8))
        self._size = (self.meta["height"], self.meta["width"])
        self._embeddings: list[torch.Tensor] | None = None
        self._keyframes: OrderedDict[int, torch.Tensor] = OrderedDict()

    def embeddings(self, video: int) -> torch.Tensor:
        if self._embeddings is None:
            with self.archive.decoding("embeddings/all"):
                shape = (self.layout.table.total, *self.model.embedding_shape)
                allemb = quant.unpack(self.archive.get("embeddings", "all"),
                                      shapes={"embeddings": shape})["embeddings"].to(self.device)
            self._embeddings = list(allemb.split(list(self.layout.table.num_frames)))
        return self._embeddings[video]

    def keyframes(self, video: int) -> torch.Tensor:
        if video not in self._keyframes:
            codec = self.config["keyframes"]["codec"]
            with self.archive.decoding(f"keyframes/{video_key(video)}"):
                count = len(keyframe_indices(self.layout.table.num_frames[video], self.layout.clip_len))
                streams = unpack_images(self.archive.get("keyframes", video_key(video)), count)
                frames = images.decode_images(streams, codec, self._size)
                self._keyframes[video] = to_float(frames).to(self.device)
            if len(self._keyframes) > self.keyframe_cache:
                self._keyframes.popitem(last=False)
        self._keyframes.move_to_end(video)
        return self._keyframes[video]

    @torch.no_grad()
    def decode(self, requests: Sequence[tuple[int, np.ndarray]]) -> list[torch.Tensor]:
        with self.archive.decoding("model/weights (forward pass)"):
            return self.layout.decode(self.model, requests, self.device, self)


class _FloatSide:
    """Side information before it is stored: lossy keyframes as trained on, float embeddings."""

    def __init__(self, keyframes: dict[int, np.ndarray], embeddings: list[torch.Tensor] | None,
                 device: torch.device) -> None:
        self._kf, self._emb, self.device = keyframes, embeddings, device

    def keyframes(self, video: int) -> torch.Tensor:
        return to_float(self._kf[video]).to(self.device)

    def embeddings(self, video: int) -> torch.Tensor:
        return self._emb[video]


@register_codec
class NeuralCodec(Codec):
    names = tuple(RECIPES)
    decoder = NeuralDecoder
    distributed = True

    @classmethod
    def add_arguments(cls, group: argparse._ArgumentGroup) -> None:
        group.add_argument("--size", help="model preset: tiny | S | M | L (default tiny; ignored with --target-bpp "
                           "except for the architecture)")
        group.add_argument("--params", type=int, help="size the model to this many parameters")
        group.add_argument("--epochs", type=int, help="training epochs (default 100)")
        group.add_argument("--batch-size", type=int, help="clips (D-NeRV) or frames per step")
        group.add_argument("--lr", type=float, help="peak learning rate")
        group.add_argument("--loss", choices=("l1_ssim", "mse_ssim", "mse", "l1"), help="training loss")
        group.add_argument("--time-budget", type=float, help="stop fitting after this many seconds, still "
                           "writing an archive")
        group.add_argument("--checkpoint-every", type=float, help="seconds between fit checkpoints (default 600)")
        group.add_argument("--num-workers", type=int, help="DataLoader workers feeding the fit")
        group.add_argument("--weight-bits", type=float, help="weight quantisation bits (default 8)")
        group.add_argument("--embedding-bits", type=int, help="HNeRV/SNeRV embedding bits (default 6)")
        group.add_argument("--prune", type=float, help="global magnitude pruning ratio before quantisation (NeRV)")
        group.add_argument("--keyframe-codec", choices=images.CODECS, help="D-NeRV keyframe codec (default avif)")
        group.add_argument("--keyframe-quality", type=int, help="D-NeRV keyframe quality (default 50)")
        group.add_argument("--keyframe-share", type=float, help="share of a --target-bpp budget given to "
                           "D-NeRV keyframes (default 0.75, as in the paper)")
        group.add_argument("--clip-len", type=int, help="D-NeRV clip length (default 8)")

    def _fit_config(self, options: dict[str, Any]) -> FitConfig:
        recipe = dict(RECIPES[self.name])
        for key in ("epochs", "batch_size", "lr", "loss", "time_budget", "checkpoint_every", "num_workers"):
            if options.get(key) is not None:
                recipe[key] = options[key]
        return FitConfig(**recipe, checkpoint_dir=options.get("checkpoint_dir"),
                         resume=bool(options.get("resume")), progress=options.get("progress", True))

    def encode(self, store: FrameStore, video_ids: list[int], writer: ArchiveWriter | None,
               options: dict[str, Any], device: torch.device, meta_bytes: int) -> dict[str, Any]:
        clip_len = options.get("clip_len") or 8
        table = FrameTable(tuple(store.num_frames(v) for v in video_ids))
        layout = LAYOUTS[self.name](table, clip_len)
        pixels = table.total * store.height * store.width
        target_bytes = options["target_bpp"] * pixels / 8 if options.get("target_bpp") else None
        resolution = (store.height, store.width)
        extra = {"clip_len": clip_len} if self.name == "dnerv" else {}
        arch = model_config(self.name, options.get("size"), resolution, **extra)

        # 1. keyframes first: their decoded (lossy) pixels are the D-NeRV model's training input
        keyframe_payloads: list[bytes] = []
        lossy: dict[int, np.ndarray] = {}
        kf_cfg: dict[str, Any] = {}
        if isinstance(layout, ClipLayout):
            kf_codec = options.get("keyframe_codec") or "avif"
            quality = options.get("keyframe_quality")
            if target_bytes is not None and quality is None:
                quality = self._keyframe_quality(store, video_ids, clip_len, kf_codec,
                                                 (options.get("keyframe_share") or 0.75) * target_bytes)
            keyframes = Keyframes(kf_codec, quality if quality is not None else 50)
            keyframe_payloads, lossy = keyframes.encode(store, video_ids, clip_len)
            kf_cfg = {"codec": kf_codec, "quality": keyframes.quality}
        side_bytes = sum(map(len, keyframe_payloads))

        # 2. the model, sized to what the budget leaves
        emb_bits = options.get("embedding_bits") or 6
        params = options.get("params")
        if target_bytes is not None and params is None:
            budget = target_bytes - side_bytes - meta_bytes - 1024  # 1 KiB for the codec config in meta
            if layout.side_info == "embeddings":
                with torch.device("meta"):
                    probe = model_class(self.name)(**arch)
                budget -= table.total * math.prod(probe.embedding_shape) * emb_bits * 0.9 / 8
            if budget <= 0:
                raise CodecError(f"target {options['target_bpp']:.4g} bpp leaves no room for a model: side "
                                 f"information alone takes {8 * (side_bytes + meta_bytes) / pixels:.4g} bpp")
            params = int(budget * 8 / BITS_PER_WEIGHT_GUESS)
        torch.manual_seed(options.get("seed") or 0)
        try:
            model = create_model(self.name, options.get("size"), resolution, params=params, **extra)
        except ValueError as err:
            if target_bytes is None:
                raise
            raise CodecError(f"target {options['target_bpp']:.4g} bpp leaves room for about {params} weights, "
                             f"and {err}; raise --target-bpp"
                             + (" or lower --keyframe-share" if isinstance(layout, ClipLayout) else "")) from None
        cfg = jsonable(model.config)

        # 3. fit
        fit_cfg = self._fit_config(options)
        fingerprint = {"codec": self.name, "videos": self._dataset_id(store, video_ids), "model": cfg,
                       "keyframes": kf_cfg, "fit": {k: str(v) for k, v in vars(fit_cfg).items()
                                                    if k not in ("resume", "progress", "time_budget",
                                                                 "checkpoint_dir", "num_workers")}}
        result = fit(layout.trainable(model), layout.train_items(store, video_ids, lossy), layout.forward,
                     fit_cfg, device, fingerprint)
        model = layout.fitted(result.model).eval()
        if writer is None:  # a DDP rank other than 0: the fit was the shared work
            return {}

        # 4. side information and weights, as the decoder will read them
        embeddings = None
        if layout.side_info == "embeddings":
            embeddings, emb_payload = self._embeddings(model, store, video_ids, emb_bits, device)
            writer.put("embeddings", "all", emb_payload)
            side_bytes += len(emb_payload)
        for i, payload in enumerate(keyframe_payloads):
            writer.put("keyframes", video_key(i), payload)
        float_psnr = self._psnr(model, layout, store, video_ids, _FloatSide(lossy, embeddings, device), device)
        if options.get("prune"):
            quant.prune_(model, options["prune"])
        state = stored_state(model)
        bits = options.get("weight_bits") or 8.0
        if target_bytes is not None and options.get("weight_bits") is None:
            def measure(b: float) -> float:
                return (len(pack_weights(state, b)) + side_bytes + meta_bytes) * 8 / pixels
            try:
                bits, _ = search_rate(measure, options["target_bpp"], *WEIGHT_BITS_RANGE, tolerance=0.02)
            except CodecError as err:
                raise CodecError(f"{self.name}: after fitting, {err}; adjust --keyframe-share or --params") from None
        weights = pack_weights(state, bits)
        writer.put("model", "weights", weights)
        return {"model": self.name, "model_config": cfg, "clip_len": clip_len,
                "weights": {"bits": round(bits, 3), "prune": options.get("prune") or 0.0},
                "embeddings": {"bits": emb_bits} if embeddings is not None else None,
                "keyframes": kf_cfg or None,
                "report": {"params": count_model_params(model), "train_seconds": round(result.seconds, 1),
                           "epochs": result.epochs_done, "stopped_early": result.stopped_early,
                           "psnr_before_quantisation": float_psnr, "fit_psnr": result.psnr,
                           "fit": {k: str(v) for k, v in vars(fit_cfg).items()}}}

    @staticmethod
    def _dataset_id(store: FrameStore, video_ids: Sequence[int]) -> str:
        names = [f"{store.records[v].name}:{store.num_frames(v)}" for v in video_ids]
        key = f"{store.height}x{store.width}@{store.fps}|" + "|".join(names)
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    def _keyframe_quality(self, store: FrameStore, video_ids: Sequence[int], clip_len: int, codec: str,
                          budget: float) -> int:
        """Highest keyframe quality whose bytes fit ``budget`` (bisection; quality is monotone in size)."""
        lo, hi = images.QUALITY_RANGE[codec]

        def size(q: int) -> int:
            return sum(map(len, Keyframes(codec, q).encode(store, video_ids, clip_len, progress=False)[0]))

        if size(lo) > budget:
            raise CodecError(f"even the lowest {codec} keyframe quality ({lo}) exceeds the keyframe budget of "
                             f"{budget:.0f} bytes; raise --target-bpp or --keyframe-share")
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if size(mid) <= budget else (lo, mid)
        return hi if size(hi) <= budget else lo

    @torch.no_grad()
    def _embeddings(self, model: nn.Module, store: FrameStore, video_ids: Sequence[int], bits: int,
                    device: torch.device) -> tuple[list[torch.Tensor], bytes]:
        """Every frame's embedding from the trained encoder, quantised as stored; returns what the decoder sees."""
        emb = torch.cat([torch.cat([model.encode(to_float(store.frames(v, np.arange(s, min(s + 32, store.num_frames(v)))))
                                                 .to(device)) for s in range(0, store.num_frames(v), 32)])
                         for v in video_ids])
        payload = quant.pack(quant.quantize_embeddings(emb.cpu(), bits=bits))
        deq = quant.unpack(payload)["embeddings"].to(device)
        return list(deq.split([store.num_frames(v) for v in video_ids])), payload

    @torch.no_grad()
    def _psnr(self, model: nn.Module, layout: TimeLayout, store: FrameStore, video_ids: Sequence[int],
              side: Any, device: torch.device) -> float:
        """Mean per-frame PSNR of the float (unquantised) model, for the report."""
        values = []
        for i, v in enumerate(video_ids):
            n = store.num_frames(v)
            out = layout.decode(model, [(i, np.arange(n))], device, side)[0].cpu()
            values.append(psnr(out, torch.from_numpy(store.frames(v)).permute(0, 3, 1, 2)))
        return float(torch.cat(values).mean())
