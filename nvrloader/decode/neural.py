"""Neural archives: dequantised weights, the family's time layout and its side information
(D-NeRV keyframes, HNeRV/SNeRV embeddings), one forward pass per DataLoader batch."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from nvrloader.archive import Archive
from nvrloader.compress import images, quant
from nvrloader.decode.base import DecodeOptions, Decoder, register_decoder, video_key
from nvrloader.decode.cache import ByteLRU
from nvrloader.decode.fastpath import for_cpu_inference
from nvrloader.decode.layouts import LAYOUTS, ClipLayout, FrameTable, TimeLayout, keyframe_indices, param_dtype
from nvrloader.decode.runtime import host_to_device
from nvrloader.decode.stats import DecodeStats
from nvrloader.models import list_models, model_family


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


# what each family's decode layout calls on the model (`layouts`): only these are compiled
DECODE_METHODS = ("forward", "decode_clips")


def compile_decoding(model: nn.Module, backend: str) -> nn.Module:
    """Replace, on this instance, the model's decode methods by `torch.compile`d ones (shapes vary with
    the batch, so dynamic); returns ``model``. Parameters and state dict stay those of the module."""
    for name in DECODE_METHODS:
        if hasattr(model, name):
            setattr(model, name, torch.compile(getattr(model, name), backend=backend, dynamic=True))
    return model


@register_decoder(*list_models())
class NeuralDecoder(Decoder):
    """Weights dequantised onto the device once; each DataLoader batch is one forward pass on CUDA and
    a few cache-sized ones on CPU (``options.chunk_pixels``), for the distinct frames it asks.

    D-NeRV keyframes are decoded and put through the content encoder once per video, and the pyramids
    kept (``options.cache_mb`` per process) for later requests of the same video."""

    def __init__(self, archive: Archive, device: torch.device, options: DecodeOptions | None = None,
                 stats: DecodeStats | None = None) -> None:
        super().__init__(archive, device, options, stats)
        cfg = self.config
        family = model_family(cfg["model"])
        with archive.decoding("model/weights"):  # shapes from a meta-device model bound the payload
            with torch.device("meta"):
                probe = family.model(**cfg["model_config"])
            shapes = {k: v.shape for k, v in stored_state(probe).items()}
            state = quant.unpack(archive.get("model", "weights"), shapes=shapes)
            self.model = family.model(**cfg["model_config"]).to(device).eval()
            load_stored_state(self.model, {k: v.to(device) for k, v in state.items()})
        if self.half:
            self.model.half()
        if device.type == "cpu":
            for_cpu_inference(self.model)
        self.memory_format = (torch.channels_last if self.options.use_channels_last(device)
                              else torch.contiguous_format)
        self.model.to(memory_format=self.memory_format)
        if self.options.compile is not None:
            compile_decoding(self.model, self.options.compile)
        table = FrameTable(tuple(int(v["num_frames"]) for v in self.meta["videos"]))
        self.layout: TimeLayout = LAYOUTS[family.layout](table, cfg.get("clip_len", 8))
        if isinstance(self.layout, ClipLayout):
            stored = bool((cfg.get("keyframes") or {}).get("as_frames", False))   # the schema checked its type
            self.layout.keyframes_as_frames = self.options.use_keyframes_as_frames(stored)
        self.chunk_frames = self.options.chunk_frames(device, int(self.meta["height"]), int(self.meta["width"]))
        self._embeddings: list[torch.Tensor] | None = None
        # per video: ("pixels", v) its decoded keyframes (uint8), ("pyramid", v) them through the encoder
        self._side_cache: ByteLRU[Any] = ByteLRU(int(self.options.cache_mb * 2 ** 20))

    def embeddings(self, video: int) -> torch.Tensor:
        if self._embeddings is None:
            with self.archive.decoding("embeddings/all"):
                shape = (self.layout.table.total, *self.model.embedding_shape)
                allemb = quant.unpack(self.archive.get("embeddings", "all"),
                                      shapes={"embeddings": shape})["embeddings"].to(self.device)
            self._embeddings = list(allemb.split(list(self.layout.table.num_frames)))
        return self._embeddings[video]

    def keyframe_pixels(self, video: int) -> torch.Tensor:
        """A video's decoded keyframes, uint8 [K, 3, H, W] on the device, decoded once while the cache allows."""
        return self._side_cache.get(("pixels", video), lambda: self._decode_keyframes(video))

    def _decode_keyframes(self, video: int) -> torch.Tensor:
        codec = self.config["keyframes"]["codec"]
        with self.archive.decoding(f"keyframes/{video_key(video)}"):
            count = len(keyframe_indices(self.layout.table.num_frames[video], self.layout.clip_len))
            frames = images.decode_keyframes(self.archive.get("keyframes", video_key(video)), codec, count,
                                             (int(self.meta["height"]), int(self.meta["width"])))
        self.stats.add(keyframes_decoded=len(frames))
        return host_to_device(frames, self.device).permute(0, 3, 1, 2)

    def keyframes(self, video: int) -> torch.Tensor:
        """A video's decoded keyframes, float [K, 3, H, W] in [0, 1] in the model's precision."""
        pixels = self.keyframe_pixels(video).float().div_(255)
        return pixels.to(param_dtype(self.model), memory_format=self.memory_format)

    def pyramid(self, video: int) -> list[torch.Tensor]:
        """A video's keyframes through D-NeRV's content encoder, made once and kept while the cache allows."""
        return self._side_cache.get(("pyramid", video), lambda: self._encode(video))

    def _encode(self, video: int) -> list[torch.Tensor]:
        keyframes = self.keyframes(video)
        self.stats.add(keyframes_encoded=len(keyframes))
        return self.model.encode_keyframes(keyframes)

    @torch.inference_mode()
    def decode(self, requests: Sequence[tuple[int, np.ndarray]]) -> list[torch.Tensor]:
        with self.archive.decoding("model/weights (forward pass)"):
            return self.layout.decode(self.model, requests, self.device, self, self.stats.add, self.chunk_frames)
