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
from typing import Any, Callable, Protocol, Sequence

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
    """What a decoder reads besides the weights (each codec's decoder provides the parts it stores).

    A side may also offer ``pyramid(video) -> list[Tensor]``, the video's keyframes already through
    D-NeRV's content encoder (the decoder's side caches them); without it they are encoded per call."""

    def embeddings(self, video: int) -> torch.Tensor:
        """Per-frame embeddings of a video, float [T, C, h, w]."""

    def keyframes(self, video: int) -> torch.Tensor:
        """A video's decoded keyframes, float [K, 3, H, W] in [0, 1], in keyframe_indices order."""


def keyframe_pixels(side: SideInfo, video: int) -> torch.Tensor:
    """A video's decoded keyframes as uint8 [K, 3, H, W]: the side's cached ones when it keeps them."""
    cached = getattr(side, "keyframe_pixels", None)
    return cached(video) if cached is not None else to_uint8(side.keyframes(video))


def unique_frames(requests: Sequence[tuple[int, np.ndarray]]) -> tuple[np.ndarray, list[np.ndarray]]:
    """The distinct (video, frame) pairs of a batch of requests, sorted, as [U, 2], and for each request
    the rows of its frames in them: a frame asked twice (short videos under TSN, overlapping clips)
    is decoded once."""
    if not requests:
        return np.zeros((0, 2), dtype=np.int64), []
    pairs = np.concatenate([np.stack([np.full(len(idx), int(v)), np.asarray(idx, dtype=np.int64)], 1)
                            for v, idx in requests]).reshape(-1, 2)
    uniq, inverse = np.unique(pairs, axis=0, return_inverse=True)
    return uniq, np.split(inverse.reshape(-1), np.cumsum([len(idx) for _, idx in requests])[:-1])


def deliver(frames: torch.Tensor, rows: list[np.ndarray]) -> list[torch.Tensor]:
    """Each request's frames from the decoded distinct frames (uint8 [U, 3, H, W])."""
    return [frames[torch.as_tensor(r, dtype=torch.long, device=frames.device)] for r in rows]


def chunks(n: int, size: int | None) -> list[tuple[int, int]]:
    """[start, end) ranges covering 0..n in pieces of ``size`` (one piece when None)."""
    size = max(1, size or n)
    return [(a, min(a + size, n)) for a in range(0, n, size)]


def no_stats(**counts: int) -> None:
    """The counter used when a caller keeps none (training-side decodes)."""


class TimeLayout:
    """NeRV / E-NeRV: the global frame index is the whole input; no side information."""

    side_info = "none"

    def __init__(self, table: FrameTable, clip_len: int = 8) -> None:
        self.table = table
        self.clip_len = clip_len

    def frame_inputs(self, frames: np.ndarray, side: SideInfo, device: torch.device,
                     dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """Model inputs of distinct (video, frame) pairs [U, 2]."""
        t = torch.cat([self.table.global_time(int(v), f) for v, f in _by_video(frames)])
        return {"t": t.to(device)[:, None]}   # time stays fp32 in fp16 models (see PositionalEncoding)

    def decode(self, model: nn.Module, requests: Sequence[tuple[int, np.ndarray]], device: torch.device,
               side: SideInfo, count: Callable[..., None] = no_stats,
               chunk_frames: int | None = None) -> list[torch.Tensor]:
        """uint8 [N_i, 3, H, W] per request: one forward pass, or one per ``chunk_frames`` frames;
        ``count`` receives frames_decoded."""
        frames, rows = unique_frames(requests)
        inputs = self.frame_inputs(frames, side, device, param_dtype(model))
        out = [to_uint8(model({k: v[a:b] for k, v in inputs.items()})[:, 0])
               for a, b in chunks(len(frames), chunk_frames)]
        count(frames_decoded=len(frames))
        return deliver(torch.cat(out), rows)


def _by_video(frames: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """Sorted (video, frame) pairs [U, 2] grouped as (video, frame indices), in order."""
    videos, starts = np.unique(frames[:, 0], return_index=True)
    return list(zip(videos.tolist(), np.split(frames[:, 1], starts[1:])))


class EmbeddingLayout(TimeLayout):
    """HNeRV / SNeRV: the encoder runs inside training; the decoder reads stored embeddings."""

    side_info = "embeddings"

    def frame_inputs(self, frames: np.ndarray, side: SideInfo, device: torch.device,
                     dtype: torch.dtype) -> dict[str, torch.Tensor]:
        emb = torch.cat([side.embeddings(v)[torch.as_tensor(f, dtype=torch.long)] for v, f in _by_video(frames)])
        return {"embedding": emb.to(device, dtype)[:, None]}


def keyframe_indices(num_frames: int, clip_len: int) -> np.ndarray:
    """Clip k spans frames clip_len*k .. clip_len*k + clip_len - 1; its keyframes are its first frame and
    the next clip's first (capped at the last frame), so neighbouring clips share one."""
    return np.unique(np.append(np.arange(0, num_frames, clip_len), num_frames - 1))


class ClipLayout(TimeLayout):
    """D-NeRV: decodes the clips holding the requested frames, each keyframe through the content
    encoder once (cached by the side when it can), and only the requested frames past the last
    stage that mixes a clip's frames.

    With ``keyframes_as_frames`` a requested frame that is a keyframe is the decoded keyframe itself,
    as an I-frame is in H.264, and skips the network: the build sets it where that measured at least
    as good (the network's output there is its reconstruction of a frame it was given)."""

    side_info = "keyframes"
    keyframes_as_frames = False   # set by the decoder (from the archive) or the training (from its options)

    def is_keyframe(self, frames: np.ndarray) -> np.ndarray:
        """Which (video, frame) pairs [U, 2] are keyframes: a clip's first frame, or a video's last."""
        last = np.asarray(self.table.num_frames, dtype=np.int64)[frames[:, 0]] - 1
        return (frames[:, 1] % self.clip_len == 0) | (frames[:, 1] == last)

    def stored_keyframes(self, side: SideInfo, frames: np.ndarray, device: torch.device) -> torch.Tensor:
        """uint8 [U, 3, H, W] of keyframe pairs [U, 2] (sorted), from the side's decoded keyframes."""
        out = []
        for v, f in _by_video(frames):
            pick = np.searchsorted(keyframe_indices(self.table.num_frames[v], self.clip_len), f)
            out.append(keyframe_pixels(side, v).to(device)[torch.as_tensor(pick, device=device)])
        return torch.cat(out)

    def num_clips(self, num_frames: int) -> int:
        return -(-num_frames // self.clip_len)

    def clip_frames(self, num_frames: int, clip: int) -> tuple[np.ndarray, np.ndarray]:
        """Frame indices of a clip, a short last clip padded with its final frame, and the mask of real ones."""
        idx = clip * self.clip_len + np.arange(self.clip_len)
        return idx.clip(max=num_frames - 1), idx < num_frames

    def clip_timing(self, video: int, clip: int) -> tuple[dict[str, torch.Tensor], np.ndarray]:
        """A clip's time inputs (t, offset, span) and the rows of its two keyframes in keyframe_indices order."""
        n = self.table.num_frames[video]
        start = clip * self.clip_len
        end = min(start + self.clip_len, n - 1)
        frames, _ = self.clip_frames(n, clip)
        pick = np.searchsorted(keyframe_indices(n, self.clip_len), [start, end])
        return {"t": self.table.video_time(video, frames),
                "offset": torch.as_tensor(frames - start, dtype=torch.float32),
                "span": torch.tensor(float(max(1, end - start)))}, pick

    def clip_inputs(self, video: int, clip: int, keyframes: torch.Tensor) -> dict[str, torch.Tensor]:
        """Model inputs of one clip; ``keyframes`` are all of the video's keyframes, float [K, 3, H, W]."""
        timing, pick = self.clip_timing(video, clip)
        return {**timing, "keyframes": keyframes[torch.as_tensor(pick)]}

    @staticmethod
    def pyramid(model: nn.Module, side: SideInfo, video: int, device: torch.device) -> list[torch.Tensor]:
        """A video's keyframe pyramids (levels [K, C, h, w]): the side's cached ones, or encoded here."""
        cached = getattr(side, "pyramid", None)
        if cached is not None:
            return cached(video)
        return model.encode_keyframes(side.keyframes(video).to(device, param_dtype(model)))

    def gather_pyramids(self, model: nn.Module, side: SideInfo, clips: list[tuple[int, int]], picks: list[np.ndarray],
                        device: torch.device) -> list[torch.Tensor]:
        """Pyramid levels [2 * len(clips), C, h, w]: start and end keyframe of each clip, read from each
        video's pyramids (``clips`` sorted by video, ``picks`` their keyframe rows)."""
        rows: dict[int, list[int]] = {}
        for (v, _), pick in zip(clips, picks):
            rows.setdefault(v, []).extend(int(p) for p in pick)
        videos = [(self.pyramid(model, side, v, device), torch.as_tensor(r, device=device)) for v, r in rows.items()]
        return [torch.cat([pyr[i].index_select(0, r) for pyr, r in videos]) for i in range(len(videos[0][0]))]

    def decode(self, model: nn.Module, requests: Sequence[tuple[int, np.ndarray]], device: torch.device,
               side: SideInfo, count: Callable[..., None] = no_stats,
               chunk_frames: int | None = None) -> list[torch.Tensor]:
        frames, rows = unique_frames(requests)
        key = self.is_keyframe(frames) if self.keyframes_as_frames else np.zeros(len(frames), dtype=bool)
        parts = [self.stored_keyframes(side, frames[key], device)] if key.any() else []
        if not key.all():
            parts.append(self.network_frames(model, frames[~key], device, side, count, chunk_frames))
        # each distinct frame's row in [keyframes; network frames]
        place = np.argsort(np.concatenate([np.flatnonzero(key), np.flatnonzero(~key)]))
        return deliver(parts[0] if len(parts) == 1 else torch.cat(parts), [place[r] for r in rows])

    def network_frames(self, model: nn.Module, frames: np.ndarray, device: torch.device, side: SideInfo,
                       count: Callable[..., None], chunk_frames: int | None) -> torch.Tensor:
        """uint8 [U, 3, H, W] of distinct (video, frame) pairs [U, 2] (sorted) through the network."""
        clip_keys, clip_of = np.unique(frames[:, 0] * (1 << 32) + frames[:, 1] // self.clip_len,
                                       return_inverse=True)
        clips = [(int(k >> 32), int(k & 0xFFFFFFFF)) for k in clip_keys]
        keep = clip_of.reshape(-1) * self.clip_len + frames[:, 1] % self.clip_len  # ascending
        timings = [self.clip_timing(v, k) for v, k in clips]
        batch = {key: torch.stack([t[key] for t, _ in timings]).to(device) for key in timings[0][0]}   # fp32 time
        levels = self.gather_pyramids(model, side, clips, [pick for _, pick in timings], device)
        whole = len(keep) == len(clips) * self.clip_len  # every frame of these clips: nothing to leave out
        h, w = model.resolution
        frames_out = model.decode_clips(batch, levels, None if whole else torch.as_tensor(keep, device=device),
                                        None if chunk_frames is None else chunk_frames * h * w)
        out = to_uint8(frames_out.flatten(0, 1) if whole else frames_out)
        count(frames_decoded=len(clips) * self.clip_len if model.uses_gtmlp else len(keep))
        return out


# by a model family's layout name (``ModelFamily.layout``); SNeRV decodes as HNeRV does
LAYOUTS: dict[str, type[TimeLayout]] = {"time": TimeLayout, "embedding": EmbeddingLayout,
                                        "subband": EmbeddingLayout, "clip": ClipLayout}
