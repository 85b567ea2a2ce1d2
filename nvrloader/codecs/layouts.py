"""How each neural family sees a dataset: what it trains on, and how a batch of requests is decoded.

Three layouts cover the five models:
  - ``time``: NeRV / E-NeRV map the global frame index (all videos concatenated) to a frame;
  - ``embedding``: HNeRV / SNeRV decode a small per-frame embedding made by their encoder at build time;
  - ``clip``: D-NeRV decodes whole 8-frame clips from per-video time and the clip's two keyframes.
Training and decoding share the same batch construction, so what was fitted is what is decoded.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from nvrloader.fit import FitOutput
from nvrloader.framestore import FrameStore
from nvrloader.models.snerv import LL_SCALE
from nvrloader.models.wavelet import dwt2


def to_float(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [..., H, W, 3] -> float [..., 3, H, W] in [0, 1]."""
    x = torch.as_tensor(frames)
    return x.movedim(-1, -3).float().div_(255)


def param_dtype(model: nn.Module) -> torch.dtype:
    """Inputs follow the model's precision (fp16 decoding on CUDA)."""
    return next(model.parameters()).dtype


def to_uint8(frames: torch.Tensor) -> torch.Tensor:
    return frames.clamp(0, 1).mul(255).round_().to(torch.uint8)


@dataclass(frozen=True)
class FrameTable:
    """Frame counts of the archive's videos and their place in the concatenated dataset."""

    num_frames: tuple[int, ...]

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.num_frames)[:-1]]).astype(np.int64)

    @property
    def total(self) -> int:
        return int(sum(self.num_frames))

    def locate(self, flat: int) -> tuple[int, int]:
        """Global frame number -> (video, frame)."""
        video = int(np.searchsorted(self.offsets, flat, side="right") - 1)
        return video, int(flat - self.offsets[video])

    def global_time(self, video: int, frames: np.ndarray) -> torch.Tensor:
        return torch.as_tensor((self.offsets[video] + np.asarray(frames)) / max(1, self.total - 1),
                               dtype=torch.float32)

    def video_time(self, video: int, frames: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(frames) / max(1, self.num_frames[video] - 1), dtype=torch.float32)


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


class SideInfo(Protocol):
    """What a decoder reads besides the weights (each codec's decoder provides the parts it stores)."""

    def embeddings(self, video: int) -> torch.Tensor:
        """Per-frame embeddings of a video, float [T, C, h, w]."""

    def keyframes(self, video: int) -> torch.Tensor:
        """A video's decoded keyframes, float [K, 3, H, W] in [0, 1], in keyframe_indices order."""


class TimeLayout:
    """NeRV / E-NeRV: the global frame index is the whole input; no side information."""

    side_info = "none"

    def __init__(self, table: FrameTable, clip_len: int = 8) -> None:
        self.table = table
        self.clip_len = clip_len

    def train_items(self, store: FrameStore, video_ids: Sequence[int], keyframes: dict | None = None) -> Dataset:
        return FrameItems(store, video_ids, self.table)

    def trainable(self, model: nn.Module) -> nn.Module:
        """The module the fit loop optimises (and DDP wraps)."""
        return model

    def fitted(self, trained: nn.Module) -> nn.Module:
        """The decoder model inside what :meth:`trainable` returned."""
        return trained

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> FitOutput:
        return FitOutput(model({"t": batch["t"]}), batch["frames"])

    def decode(self, model: nn.Module, requests: Sequence[tuple[int, np.ndarray]], device: torch.device,
               side: SideInfo) -> list[torch.Tensor]:
        t = torch.cat([self.table.global_time(v, idx) for v, idx in requests]).to(device, param_dtype(model))
        frames = to_uint8(model({"t": t[:, None]})[:, 0])
        return list(frames.split([len(idx) for _, idx in requests]))


class Autoencoder(nn.Module):
    """HNeRV/SNeRV's encoder and decoder as one module, so DDP sees (and syncs) both in one forward."""

    def __init__(self, model: nn.Module, subbands: bool) -> None:
        super().__init__()
        self.model, self.subbands = model, subbands

    def forward(self, frames: torch.Tensor) -> Any:
        emb = self.model.encode(frames.flatten(0, 1)).unflatten(0, frames.shape[:2])
        return self.model({"embedding": emb}, **({"return_subbands": True} if self.subbands else {}))


class EmbeddingLayout(TimeLayout):
    """HNeRV / SNeRV: the encoder runs inside training; the decoder reads stored embeddings."""

    side_info = "embeddings"
    subbands = False

    def trainable(self, model: nn.Module) -> nn.Module:
        return Autoencoder(model, self.subbands)

    def fitted(self, trained: nn.Module) -> nn.Module:
        return trained.model

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> FitOutput:
        return FitOutput(model(batch["frames"]), batch["frames"])

    def decode(self, model: nn.Module, requests: Sequence[tuple[int, np.ndarray]], device: torch.device,
               side: SideInfo) -> list[torch.Tensor]:
        emb = torch.cat([side.embeddings(v)[torch.as_tensor(idx, dtype=torch.long)] for v, idx in requests])
        frames = to_uint8(model({"embedding": emb.to(device, param_dtype(model))[:, None]})[:, 0])
        return list(frames.split([len(idx) for _, idx in requests]))


class SubbandLayout(EmbeddingLayout):
    """SNeRV: as HNeRV, with the paper's extra losses on the LL and high-frequency sub-bands."""

    subbands = True

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> FitOutput:
        frames = batch["frames"]
        out = model(frames)
        ll, highs = dwt2(frames)
        return FitOutput(out.frames, frames, aux=[(out.ll / LL_SCALE, ll / LL_SCALE), (out.highs, highs)])


def keyframe_indices(num_frames: int, clip_len: int) -> np.ndarray:
    """Clip k spans frames clip_len*k .. clip_len*k + clip_len - 1; its keyframes are its first frame and
    the next clip's first (capped at the last frame), so neighbouring clips share one."""
    return np.unique(np.append(np.arange(0, num_frames, clip_len), num_frames - 1))


class ClipItems(Dataset):
    """Every clip of the dataset with its (lossy, as decoded) keyframes: D-NeRV's training items."""

    def __init__(self, layout: "ClipLayout", store: FrameStore, video_ids: Sequence[int],
                 keyframes: dict[int, np.ndarray]) -> None:
        self.layout, self.store, self.video_ids, self.keyframes = layout, store, list(video_ids), keyframes
        self.clips = [(v, k) for v, n in enumerate(layout.table.num_frames) for k in range(layout.num_clips(n))]

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        video, clip = self.clips[index]
        n = self.layout.table.num_frames[video]
        frames, mask = self.layout.clip_frames(n, clip)
        item = self.layout.clip_inputs(video, clip, to_float(self.keyframes[video]))
        item["frames"] = to_float(self.store.frames(self.video_ids[video], frames))
        item["mask"] = torch.as_tensor(mask)
        return item


class ClipLayout(TimeLayout):
    """D-NeRV: decodes whole clips, so a request for a few frames decodes the clips that hold them."""

    side_info = "keyframes"

    def num_clips(self, num_frames: int) -> int:
        return -(-num_frames // self.clip_len)

    def clip_frames(self, num_frames: int, clip: int) -> tuple[np.ndarray, np.ndarray]:
        """Frame indices of a clip, a short last clip padded with its final frame, and the mask of real ones."""
        idx = clip * self.clip_len + np.arange(self.clip_len)
        return idx.clip(max=num_frames - 1), idx < num_frames

    def clip_inputs(self, video: int, clip: int, keyframes: torch.Tensor) -> dict[str, torch.Tensor]:
        """Model inputs of one clip; ``keyframes`` are all of the video's keyframes, float [K, 3, H, W]."""
        n = self.table.num_frames[video]
        key_idx = keyframe_indices(n, self.clip_len)
        start = clip * self.clip_len
        end = min(start + self.clip_len, n - 1)
        frames, _ = self.clip_frames(n, clip)
        pick = np.searchsorted(key_idx, [start, end])
        return {"t": self.table.video_time(video, frames),
                "offset": torch.as_tensor(frames - start, dtype=torch.float32),
                "span": torch.tensor(float(max(1, end - start))),
                "keyframes": keyframes[torch.as_tensor(pick)]}

    def train_items(self, store: FrameStore, video_ids: Sequence[int], keyframes: dict | None = None) -> Dataset:
        return ClipItems(self, store, video_ids, keyframes or {})

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> FitOutput:
        inputs = {k: batch[k] for k in ("t", "offset", "span", "keyframes")}
        return FitOutput(model(inputs), batch["frames"], mask=batch["mask"])

    def decode(self, model: nn.Module, requests: Sequence[tuple[int, np.ndarray]], device: torch.device,
               side: SideInfo) -> list[torch.Tensor]:
        needed = sorted({(int(v), int(f) // self.clip_len) for v, idx in requests for f in np.asarray(idx)})
        slot = {c: i for i, c in enumerate(needed)}
        items = [self.clip_inputs(v, k, side.keyframes(v)) for v, k in needed]
        batch = {key: torch.stack([it[key] for it in items]).to(device, param_dtype(model)) for key in items[0]}
        clips = to_uint8(model(batch))  # [num_clips, clip_len, 3, H, W]
        out = []
        for v, idx in requests:
            idx = np.asarray(idx)
            rows = torch.as_tensor([slot[(int(v), int(f) // self.clip_len)] for f in idx], device=clips.device)
            cols = torch.as_tensor(idx % self.clip_len, device=clips.device)
            out.append(clips[rows, cols])
        return out


LAYOUTS: dict[str, type[TimeLayout]] = {"nerv": TimeLayout, "enerv": TimeLayout, "hnerv": EmbeddingLayout,
                                        "snerv": SubbandLayout, "dnerv": ClipLayout}
