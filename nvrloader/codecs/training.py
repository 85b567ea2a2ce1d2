"""The training half of each time layout: the items a fit iterates over and its forward function.

Batches are built with the decode layouts' own methods (`nvrloader.decode.layouts`), so what was
fitted is exactly what a decoder computes.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from nvrloader.decode.layouts import LAYOUTS, ClipLayout, FrameTable, TimeLayout, to_float
from nvrloader.fit import FitOutput
from nvrloader.framestore import FrameStore
from nvrloader.models.snerv import LL_SCALE
from nvrloader.models.wavelet import dwt2


class FrameItems(Dataset):
    """Every frame of the dataset, one training item each (time and embedding layouts)."""

    def __init__(self, store: FrameStore, video_ids: Sequence[int], table: FrameTable) -> None:
        self.store, self.video_ids, self.table = store, list(video_ids), table

    def __len__(self) -> int:
        return self.table.total

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        video, frame = self.table.locate(index)
        pixels = self.store.frames(self.video_ids[video], np.array([frame]))
        return {"t": self.table.global_time(video, np.array([frame])), "frames": to_float(pixels)}


class ClipItems(Dataset):
    """Every clip of the dataset with its (lossy, as decoded) keyframes: D-NeRV's training items."""

    def __init__(self, layout: ClipLayout, store: FrameStore, video_ids: Sequence[int],
                 keyframes: dict[int, np.ndarray]) -> None:
        self.layout, self.store, self.video_ids, self.keyframes = layout, store, list(video_ids), keyframes
        # a decoder that delivers keyframes as decoded never shows the network's frames there: no loss on
        # them, and a clip of keyframes alone is no item
        self.fit_keyframes = not layout.keyframes_as_frames
        self.clips = [(v, k) for v, n in enumerate(layout.table.num_frames) for k in range(layout.num_clips(n))
                      if self._mask(v, k).any()]
        if not self.clips:
            raise ValueError("every frame is a keyframe: there is nothing for the network to fit")

    def _mask(self, video: int, clip: int) -> np.ndarray:
        """The frames of a clip the loss counts: real ones (not padding), keyframes only when fitted."""
        frames, mask = self.layout.clip_frames(self.layout.table.num_frames[video], clip)
        if not self.fit_keyframes:
            mask = mask & ~self.layout.is_keyframe(np.stack([np.full(len(frames), video), frames], 1))
        return mask

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        video, clip = self.clips[index]
        n = self.layout.table.num_frames[video]
        frames, _ = self.layout.clip_frames(n, clip)
        item = self.layout.clip_inputs(video, clip, to_float(self.keyframes[video]))
        item["frames"] = to_float(self.store.frames(self.video_ids[video], frames))
        item["mask"] = torch.as_tensor(self._mask(video, clip))
        return item


class Autoencoder(nn.Module):
    """HNeRV/SNeRV's encoder and decoder as one module, so DDP sees (and syncs) both in one forward."""

    def __init__(self, model: nn.Module, subbands: bool) -> None:
        super().__init__()
        self.model, self.subbands = model, subbands

    def forward(self, frames: torch.Tensor) -> Any:
        emb = self.model.encode(frames.flatten(0, 1)).unflatten(0, frames.shape[:2])
        return self.model({"embedding": emb}, **({"return_subbands": True} if self.subbands else {}))


class TimeTraining:
    """NeRV / E-NeRV: every frame is an item; the model maps its global time to the frame."""

    def __init__(self, layout: TimeLayout) -> None:
        self.layout = layout

    def items(self, store: FrameStore, video_ids: Sequence[int], keyframes: dict[int, np.ndarray]) -> Dataset:
        return FrameItems(store, video_ids, self.layout.table)

    def trainable(self, model: nn.Module) -> nn.Module:
        """The module the fit loop optimises (and DDP wraps)."""
        return model

    def fitted(self, trained: nn.Module) -> nn.Module:
        """The decoder model inside what :meth:`trainable` returned."""
        return trained

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> FitOutput:
        return FitOutput(model({"t": batch["t"]}), batch["frames"])


class EmbeddingTraining(TimeTraining):
    """HNeRV: the encoder runs inside training; the decoder later reads the stored embeddings."""

    subbands = False

    def trainable(self, model: nn.Module) -> nn.Module:
        return Autoencoder(model, self.subbands)

    def fitted(self, trained: nn.Module) -> nn.Module:
        return trained.model

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> FitOutput:
        return FitOutput(model(batch["frames"]), batch["frames"])


class SubbandTraining(EmbeddingTraining):
    """SNeRV: as HNeRV, with the paper's extra losses on the LL and high-frequency sub-bands."""

    subbands = True

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> FitOutput:
        frames = batch["frames"]
        out = model(frames)
        ll, highs = dwt2(frames)
        return FitOutput(out.frames, frames, aux=[(out.ll / LL_SCALE, ll / LL_SCALE), (out.highs, highs)])


class ClipTraining(TimeTraining):
    """D-NeRV: every clip is an item, with its lossy keyframes as the decoder will see them."""

    def items(self, store: FrameStore, video_ids: Sequence[int], keyframes: dict[int, np.ndarray]) -> Dataset:
        return ClipItems(self.layout, store, video_ids, keyframes)

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> FitOutput:
        inputs = {k: batch[k] for k in ("t", "offset", "span", "keyframes")}
        return FitOutput(model(inputs), batch["frames"], mask=batch["mask"])


TRAINING: dict[str, type[TimeTraining]] = {"time": TimeTraining, "embedding": EmbeddingTraining,
                                           "subband": SubbandTraining, "clip": ClipTraining}


def training_for(layout_name: str, table: FrameTable, clip_len: int, keyframe_loss: bool = True) -> TimeTraining:
    """The decode layout of a family and its training half, built together; without ``keyframe_loss``
    D-NeRV's layout delivers keyframes as decoded, and its fit leaves their positions out."""
    layout = LAYOUTS[layout_name](table, clip_len)
    if isinstance(layout, ClipLayout):
        layout.keyframes_as_frames = not keyframe_loss
    return TRAINING[layout_name](layout)
