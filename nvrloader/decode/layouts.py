"""How each neural family maps a request (video, frame indices) to model inputs, and decodes a batch of them.

Three layouts cover the five models (SNeRV decodes as HNeRV; only its training differs):
  - ``time``: NeRV / E-NeRV map the global frame index (all videos concatenated) to a frame;
  - ``embedding``: HNeRV / SNeRV decode a small per-frame embedding made by their encoder at build time;
  - ``clip``: D-NeRV decodes whole 8-frame clips from per-video time and the clip's two keyframes.
Training (`nvrloader.codecs.training`) builds its batches with the same methods, so what was fitted
is what is decoded; this module itself imports nothing from training.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import numpy as np
import torch
from torch import nn


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

    def decode(self, model: nn.Module, requests: Sequence[tuple[int, np.ndarray]], device: torch.device,
               side: SideInfo) -> list[torch.Tensor]:
        t = torch.cat([self.table.global_time(v, idx) for v, idx in requests]).to(device, param_dtype(model))
        frames = to_uint8(model({"t": t[:, None]})[:, 0])
        return list(frames.split([len(idx) for _, idx in requests]))


class EmbeddingLayout(TimeLayout):
    """HNeRV / SNeRV: the encoder runs inside training; the decoder reads stored embeddings."""

    side_info = "embeddings"

    def decode(self, model: nn.Module, requests: Sequence[tuple[int, np.ndarray]], device: torch.device,
               side: SideInfo) -> list[torch.Tensor]:
        emb = torch.cat([side.embeddings(v)[torch.as_tensor(idx, dtype=torch.long)] for v, idx in requests])
        frames = to_uint8(model({"embedding": emb.to(device, param_dtype(model))[:, None]})[:, 0])
        return list(frames.split([len(idx) for _, idx in requests]))


def keyframe_indices(num_frames: int, clip_len: int) -> np.ndarray:
    """Clip k spans frames clip_len*k .. clip_len*k + clip_len - 1; its keyframes are its first frame and
    the next clip's first (capped at the last frame), so neighbouring clips share one."""
    return np.unique(np.append(np.arange(0, num_frames, clip_len), num_frames - 1))


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


# by a model family's layout name (``ModelFamily.layout``); SNeRV decodes as HNeRV does
LAYOUTS: dict[str, type[TimeLayout]] = {"time": TimeLayout, "embedding": EmbeddingLayout,
                                        "subband": EmbeddingLayout, "clip": ClipLayout}
