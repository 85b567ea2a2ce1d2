"""D-NeRV keyframes at build time: their coding, bytes and PSNR by quality, and the rate split
between them and the weights, chosen by measurement.

At a target bpp three things decide how the bytes divide: how often keyframes come (the clip
length: a keyframe at every clip boundary), the share of the target they get (which fixes their
quality, the highest whose bytes fit) and, for ``auto``, their codec (the one with the better
keyframe PSNR in that budget); the model is sized to the rest. Which split is best depends on the
data, the frame rate and the budget, so a few candidates get short fits (``SEARCH_FRACTION`` of the
fit's epochs or time budget between them): first each clip length in ``CLIP_CANDIDATES`` at the
middle share, then the other shares at the best clip length. The candidate with the best PSNR goes
on to the full fit from its trial's weights, with the epochs and time the search left.
``clip_len`` and ``keyframe_share`` fix their part of the search.

Measured (README): on the demo setting (sample set, 64x80, 2 fps, 0.3 bpp, 5 epochs) full fits at
clip length 2 / 4 / 8 gave 30.07 / 28.04 / 26.60 dB, on real clips at 4 fps (90 s fits) 27.42 /
24.61 / 21.32 dB; the search picks clip length 2 on both. At clip length 8 on the demo setting the
shares 0.5 / 0.65 / 0.8 gave 26.40 / 26.62 / 26.60 dB, and the search chose 0.8.

Every share is first clipped to the feasible range: at least the keyframes' lowest quality, and at
most what leaves room for the smallest model the sizing rule builds at this resolution, at the
fewest weight bits the search after fitting tries. A clip length whose range is empty is left out;
a target is refused only when every one is, and the error says what the two parts need.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from nvrloader.codecs.base import CodecError
from nvrloader.codecs.options import AUTO_KEYFRAME_CODEC
from nvrloader.compress import images
from nvrloader.decode.layouts import keyframe_indices
from nvrloader.fit import FitConfig
from nvrloader.framestore import FrameStore
from nvrloader.rate import largest_within

SHARE_CANDIDATES = (0.55, 0.7, 0.85)  # keyframe shares tried at a target bpp (the paper fixes 0.75)
CLIP_CANDIDATES = (2, 4, 8)           # keyframe intervals tried (the paper's clips are 8 frames)
DEFAULT_CLIP_LEN = 8                  # without a target
SEARCH_FRACTION = 0.25                # of the fit's epochs or time budget, spent on the candidates together
SAMPLE_VIDEOS = 48                    # videos the quality searches encode and the split trials score (evenly spaced)
# auto: the stream codec with the higher keyframe PSNR at the keyframe budget. Measured (python -m
# nvrloader.study keyframes, README): HEVC 4:4:4 streams win above about 0.1-0.15 keyframe bpp on real
# video and everywhere on the synthetic set (AV1 is 4:2:0 only), AV1 streams below (a smaller header
# and better low-rate coding). The first is used without a target.
AUTO_CODECS = ("hevc-seq", "av1-seq")


def sample_positions(count: int) -> list[int]:
    """``SAMPLE_VIDEOS`` evenly spaced positions in 0..count-1 (all of them when there are fewer): the
    videos on which the searches measure, so that their cost stops growing with the dataset."""
    return [int(i) for i in np.unique(np.linspace(0, count - 1, min(count, SAMPLE_VIDEOS)).round())]


class Keyframes:
    """One dataset's keyframes under one codec: bytes and PSNR by quality, estimated on an evenly spaced
    sample of ``SAMPLE_VIDEOS`` videos and kept (the searches ask for the same ones again), and the
    payloads plus decoded pixels of every video at a quality."""

    def __init__(self, codec: str, store: FrameStore, video_ids: Sequence[int], clip_len: int) -> None:
        self.codec, self.store, self.video_ids, self.clip_len = codec, store, list(video_ids), clip_len
        self.qualities = images.QUALITY_RANGE[codec]
        self.sample = [self.video_ids[i] for i in sample_positions(len(self.video_ids))]
        count = {v: len(keyframe_indices(store.num_frames(v), clip_len)) for v in self.video_ids}
        self._scale = sum(count.values()) / sum(count[v] for v in self.sample)
        self._sizes: dict[int, int] = {}
        self._estimates: dict[int, float] = {}
        self._psnr: dict[tuple[int, bool], float] = {}
        self._last: tuple[int, tuple[list[bytes], dict[int, np.ndarray]]] | None = None

    def _frames(self, vid: int) -> np.ndarray:
        return self.store.frames(vid, keyframe_indices(self.store.num_frames(vid), self.clip_len))

    def estimate(self, quality: int) -> float:
        """Bytes of every video's keyframes at ``quality``, from the sample's bytes per keyframe (exact when
        the sample is every video): the searches probe many qualities, and a full encode of a large
        dataset at each took most of a build (480 videos: ~70 s a probe, dozens of probes)."""
        if quality in self._sizes:
            return self._sizes[quality]
        if quality not in self._estimates:
            self._estimates[quality] = self._scale * sum(
                len(images.encode_keyframes(self._frames(v), self.codec, quality)) for v in self.sample)
        return self._estimates[quality]

    def lowest(self) -> float:
        """Bytes at the lowest quality (estimated): less is impossible."""
        return self.estimate(self.qualities[0])

    def quality_within(self, budget: float) -> int:
        """The highest quality whose keyframes fit ``budget`` bytes by the estimate (the lowest if none
        does); the model is then sized to what the real payloads leave."""
        lo, hi = self.qualities
        return lo if self.lowest() > budget else largest_within(self.estimate, budget, lo, hi)

    def psnr(self, quality: int) -> float:
        """Mean PSNR of the decoded keyframes against the source frames: over every video when that
        quality has been coded, else over the sample (enough to choose a codec)."""
        coded = self._last is not None and self._last[0] == quality
        if (quality, coded) not in self._psnr:
            import torch

            from nvrloader.metrics import psnr

            videos = self.video_ids if coded else self.sample
            decoded = self.encode(quality)[1] if coded else [self._roundtrip(v, quality)[1] for v in videos]
            values = [psnr(torch.from_numpy(decoded[i]).permute(0, 3, 1, 2),
                           torch.from_numpy(self._frames(v)).permute(0, 3, 1, 2)) for i, v in enumerate(videos)]
            self._psnr[quality, coded] = float(torch.cat(values).mean())
        return self._psnr[quality, coded]

    def _roundtrip(self, vid: int, quality: int) -> tuple[bytes, np.ndarray]:
        """A video's keyframe payload, and its keyframes decoded as the archive's decoder will decode them."""
        frames = self._frames(vid)
        payload = images.encode_keyframes(frames, self.codec, quality)
        return payload, images.decode_keyframes(payload, self.codec, len(frames), frames.shape[1:3])

    def encode(self, quality: int, progress: bool = False) -> tuple[list[bytes], dict[int, np.ndarray]]:
        """One payload per video, and its keyframes decoded as the archive's decoder will decode them
        (the last quality asked is kept: a search measures it, then codes it)."""
        from tqdm import tqdm

        if self._last is not None and self._last[0] == quality:
            return self._last[1]
        payloads, decoded = [], {}
        for i, vid in enumerate(tqdm(self.video_ids, desc=f"keyframes {self.codec} q{quality}", unit="video",
                                     leave=False, disable=not progress)):
            payload, decoded[i] = self._roundtrip(vid, quality)
            payloads.append(payload)
        self._sizes[quality] = sum(map(len, payloads))
        self._last = (quality, (payloads, decoded))
        return payloads, decoded


class KeyframeCodecs:
    """The keyframe codecs a build may use: the one asked, or both stream codecs for ``auto``."""

    def __init__(self, codec: str, store: FrameStore, video_ids: Sequence[int], clip_len: int) -> None:
        names = AUTO_CODECS if codec == AUTO_KEYFRAME_CODEC else (codec,)
        self.by_name = {name: Keyframes(name, store, video_ids, clip_len) for name in names}

    @property
    def default(self) -> Keyframes:
        """The codec used without a target (the first)."""
        return next(iter(self.by_name.values()))

    def lowest(self) -> int:
        return min(k.lowest() for k in self.by_name.values())

    def best_within(self, budget: float) -> tuple[str, int]:
        """(codec, quality) of the best keyframes within ``budget`` bytes: the highest quality of each
        codec that fits, and of those the highest keyframe PSNR (measured only when there is a choice)."""
        fits = [(k.codec, k.quality_within(budget)) for k in self.by_name.values() if k.lowest() <= budget]
        if not fits:  # nothing fits: the smallest there is
            smallest = min(self.by_name.values(), key=Keyframes.lowest)
            return smallest.codec, smallest.qualities[0]
        if len(fits) == 1:
            return fits[0]
        return max(fits, key=lambda cq: self.by_name[cq[0]].psnr(cq[1]))


@dataclass(frozen=True)
class ShareRange:
    """Keyframe shares a target can hold: ``low`` = the lowest keyframe quality, ``high`` = what still
    leaves room for the smallest model."""

    low: float
    high: float

    def clip(self, share: float) -> float:
        return min(max(share, self.low), self.high)


def share_range(lowest_keyframe_bytes: int, target_bytes: float, meta_bytes: int, smallest_model_bytes: float,
                target_bpp: float) -> ShareRange:
    """The feasible shares, or a CodecError saying what the keyframes and the smallest model need."""
    low = lowest_keyframe_bytes / target_bytes
    high = (target_bytes - meta_bytes - smallest_model_bytes) / target_bytes
    if low > high:
        need = (low + (meta_bytes + smallest_model_bytes) / target_bytes) * target_bpp
        raise CodecError(f"target {target_bpp:.4g} bpp is below what D-NeRV can store here: its keyframes at their "
                         f"lowest quality take {low * target_bpp:.4g} bpp and the smallest model with the meta about "
                         f"{(1 - high) * target_bpp:.4g} bpp; it needs about {need:.4g} bpp")
    return ShareRange(low, high)


@dataclass(frozen=True)
class Candidate:
    """One way to split a target: keyframes every ``clip_len`` frames, coded with ``codec`` at
    ``quality`` (the best that fits ``share`` of the target), the model sized to the rest."""

    clip_len: int
    share: float
    codec: str
    quality: int


def candidate_shares(feasible: ShareRange, best_within: Callable[[float], tuple[str, int]], target_bytes: float,
                     clip_len: int, shares: Sequence[float] = SHARE_CANDIDATES) -> list[Candidate]:
    """The candidates at one clip length, by share: each share clipped to the feasible range; shares
    that give the same keyframes are one candidate (the smallest such share: the rest goes to the model)."""
    by_choice: dict[tuple[str, int], float] = {}
    for share in sorted(feasible.clip(s) for s in shares):
        by_choice.setdefault(best_within(share * target_bytes), share)
    return sorted((Candidate(clip_len, share, codec, quality) for (codec, quality), share in by_choice.items()),
                  key=lambda c: c.share)


def planned_trials(by_clip: dict[int, list[Candidate]]) -> int:
    """Trials :func:`search_split` runs: one per clip length, then the other shares of one clip length."""
    return len(by_clip) + max(map(len, by_clip.values())) - 1


def short_fit(config: FitConfig, count: int) -> FitConfig:
    """One candidate's fit: its part of ``SEARCH_FRACTION`` of the epochs (at least one) and of the time
    budget, without checkpoints."""
    epochs = max(1, math.ceil(config.epochs * SEARCH_FRACTION / count))
    budget = None if config.time_budget is None else config.time_budget * SEARCH_FRACTION / count
    return dataclasses.replace(config, epochs=epochs, time_budget=budget, checkpoint_dir=None, resume=False)


def final_fit(config: FitConfig, trial: FitConfig) -> FitConfig:
    """The full fit after a search, going on from the chosen trial's weights: the epochs the trial did
    not run (at least one), and the time the search did not spend."""
    budget = None if config.time_budget is None else config.time_budget * (1 - SEARCH_FRACTION)
    return dataclasses.replace(config, epochs=max(1, config.epochs - trial.epochs), time_budget=budget)


def search_split(by_clip: dict[int, list[Candidate]], trial: Callable[[Candidate], dict[str, Any]]
                 ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The trial (a short fit, ``trial(candidate)``) with the highest ``psnr``, and every trial, in two
    stages: every clip length at its middle share, then the other shares at the best clip length.

    A candidate whose model cannot be built is recorded with its reason and skipped."""
    trials: list[dict[str, Any]] = []

    def run(candidates: list[Candidate]) -> None:
        for candidate in candidates:
            start = time.perf_counter()
            try:
                result = trial(candidate)
            except CodecError as err:
                result = {"psnr": None, "error": str(err)}
            trials.append({**dataclasses.asdict(candidate), "share": round(candidate.share, 4), **result,
                           "seconds": round(time.perf_counter() - start, 1)})

    def best() -> dict[str, Any]:
        done = [t for t in trials if t["psnr"] is not None]
        if not done:
            raise CodecError("no keyframe split builds a model: " + "; ".join(t["error"] for t in trials))
        return max(done, key=lambda t: t["psnr"])

    run([candidates[len(candidates) // 2] for candidates in by_clip.values()])
    chosen = by_clip[best()["clip_len"]]
    run([c for i, c in enumerate(chosen) if i != len(chosen) // 2])
    return best(), trials
