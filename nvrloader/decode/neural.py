"""Neural archives: dequantised weights, the family's time layout and its side information
(D-NeRV keyframes, HNeRV/SNeRV embeddings), one forward pass per DataLoader batch."""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import numpy as np
import torch
from torch import nn

from nvrloader.archive import Archive
from nvrloader.compress import images, quant
from nvrloader.decode.base import Decoder, register_decoder, video_key
from nvrloader.decode.layouts import LAYOUTS, FrameTable, TimeLayout, keyframe_indices, to_float
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


@register_decoder(*list_models())
class NeuralDecoder(Decoder):
    """Weights dequantised onto the device once; each DataLoader batch is one forward pass."""

    keyframe_cache = 64

    def __init__(self, archive: Archive, device: torch.device, half: bool = False) -> None:
        super().__init__(archive, device, half)
        cfg = self.config
        family = model_family(cfg["model"])
        with archive.decoding("model/weights"):  # shapes from a meta-device model bound the payload
            with torch.device("meta"):
                probe = family.model(**cfg["model_config"])
            shapes = {k: v.shape for k, v in stored_state(probe).items()}
            state = quant.unpack(archive.get("model", "weights"), shapes=shapes)
            self.model = family.model(**cfg["model_config"]).to(device).eval()
            load_stored_state(self.model, {k: v.to(device) for k, v in state.items()})
        if half:
            self.model.half()
        table = FrameTable(tuple(int(v["num_frames"]) for v in self.meta["videos"]))
        self.layout: TimeLayout = LAYOUTS[family.layout](table, cfg.get("clip_len", 8))
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
                streams = images.unpack_images(self.archive.get("keyframes", video_key(video)), count)
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
