"""D-NeRV's rate split between keyframes and weights: the feasible shares, the candidates, the search by
short fits, and builds at low targets that used to be refused."""
from __future__ import annotations

import json

import pytest

from nvrloader import build
from nvrloader.codecs.base import CodecError
from nvrloader.codecs.keyframes import (SEARCH_FRACTION, Candidate, KeyframeCodecs, Keyframes, candidate_shares,
                                        final_fit, planned_trials, search_split, share_range, short_fit)
from nvrloader.fit import FitConfig


class FakeKeyframes(Keyframes):
    """Bytes and PSNR as given functions of quality, without encoding anything."""

    def __init__(self, codec: str, size, psnr=lambda q: float(q)) -> None:
        self.codec, self.qualities, self._size, self._quality_psnr = codec, (0, 100), size, psnr

    def estimate(self, quality: int) -> float:
        return self._size(quality)

    def psnr(self, quality: int) -> float:
        return self._quality_psnr(quality)


def codecs_of(*keyframes: FakeKeyframes) -> KeyframeCodecs:
    codecs = KeyframeCodecs.__new__(KeyframeCodecs)
    codecs.by_name = {k.codec: k for k in keyframes}
    return codecs


def test_shares_are_clipped_to_what_the_target_holds_and_deduplicated():
    linear = codecs_of(FakeKeyframes("hevc-seq", lambda q: 1000 + 100 * q))
    feasible = share_range(linear.lowest(), 10_000, 500, 2000, 0.3)
    assert (feasible.low, feasible.high) == (0.1, 0.75)
    # 0.8 is above what leaves the smallest model room: clipped to 0.75
    shares = (0.5, 0.65, 0.8)
    assert candidate_shares(feasible, linear.best_within, 10_000, 4, shares) == [
        Candidate(4, 0.5, "hevc-seq", 40), Candidate(4, 0.65, "hevc-seq", 55), Candidate(4, 0.75, "hevc-seq", 65)]
    # a codec whose size jumps: every share gives the same keyframes, so one candidate, the smallest share
    step = codecs_of(FakeKeyframes("hevc-seq", lambda q: 1000 if q < 90 else 20_000))
    assert candidate_shares(feasible, step.best_within, 10_000, 8, shares) == [Candidate(8, 0.5, "hevc-seq", 89)]
    # a given share is one candidate, clipped too
    assert candidate_shares(feasible, linear.best_within, 10_000, 2, (0.99,)) == [Candidate(2, 0.75, "hevc-seq", 65)]


def test_infeasible_target_says_what_it_needs():
    with pytest.raises(CodecError, match=r"needs about 0\.6 bpp"):
        share_range(5000, 10_000, 1000, 6000, 0.5)


def test_auto_takes_the_codec_with_the_better_keyframes_at_each_budget():
    """Like HEVC and AV1 streams: one has the smaller floor, the other the better quality at high rates."""
    small_floor = FakeKeyframes("av1-seq", lambda q: 200 + 40 * q, psnr=lambda q: 25 + q / 10)
    better_high = FakeKeyframes("hevc-seq", lambda q: 1000 + 20 * q, psnr=lambda q: 20 + q / 5)
    codecs = codecs_of(better_high, small_floor)
    assert codecs.lowest() == 200
    assert codecs.best_within(500) == ("av1-seq", 7)         # only AV1 fits
    assert codecs.best_within(1500) == ("av1-seq", 32)       # AV1 q32 (28.2 dB) over HEVC q25 (25 dB)
    assert codecs.best_within(2800) == ("hevc-seq", 90)      # HEVC q90 (38 dB) over AV1 q65 (31.5 dB)
    assert codecs.best_within(100) == ("av1-seq", 0)         # nothing fits: the smallest there is


def test_search_tries_each_clip_length_then_the_shares_of_the_best():
    by_clip = {clip: [Candidate(clip, share, "hevc-seq", round(100 * share)) for share in (0.5, 0.65, 0.8)]
               for clip in (2, 4, 8)}
    psnr = {2: 30.0, 4: 31.0, 8: 29.0}   # clip 4 wins the first stage; at clip 4, share 0.8 wins

    def trial(c):
        return {"psnr": psnr[c.clip_len] + c.share}

    assert planned_trials(by_clip) == 5
    best, trials = search_split(by_clip, trial)
    assert [(t["clip_len"], t["share"]) for t in trials] == [(2, 0.65), (4, 0.65), (8, 0.65), (4, 0.5), (4, 0.8)]
    assert (best["clip_len"], best["share"], best["quality"]) == (4, 0.8, 80)

    def failing(c):
        if c.clip_len == 4:
            raise CodecError("no room")
        return trial(c)

    best, trials = search_split(by_clip, failing)
    assert (best["clip_len"], best["share"]) == (2, 0.8) and trials[1]["error"] == "no room"
    assert trials[1]["psnr"] is None and len(trials) == 5
    with pytest.raises(CodecError, match="no keyframe split builds a model"):
        search_split(by_clip, lambda c: failing(Candidate(4, 0.5, "hevc-seq", 1)))


def test_short_fits_take_a_fraction_of_the_fit():
    cfg = FitConfig(epochs=12, time_budget=120.0, checkpoint_dir="somewhere", resume=True)
    short = short_fit(cfg, 3)
    assert short.epochs == max(1, round(12 * SEARCH_FRACTION / 3)) and short.time_budget == pytest.approx(10.0)
    assert short.checkpoint_dir is None and not short.resume
    assert short_fit(FitConfig(epochs=2), 3).epochs == 1
    final = final_fit(cfg, short)
    assert final.time_budget == pytest.approx(90.0) and final.epochs == 12 - short.epochs
    assert final.checkpoint_dir == cfg.checkpoint_dir and final.resume
    assert final_fit(FitConfig(epochs=1), short_fit(FitConfig(epochs=1), 3)).epochs == 1


@pytest.fixture(scope="module")
def frames_8fps(synth_root, tmp_path_factory):
    """All 16 synthetic videos at 8 fps, 64x80 (167 frames): big enough for D-NeRV's smallest model to
    matter against H.264's bytes."""
    cache = tmp_path_factory.mktemp("split-cache")
    return [str(synth_root), "--resolution", "64x80", "--fps", "8", "--cache-dir", str(cache), "--device", "cpu",
            "--no-eval"]


def test_searched_split_picks_the_best_trial_and_lands_on_the_target(synth_root, tmp_path):
    out = tmp_path / "dnerv.nvr"
    target = 1.0   # the 8 test videos at 4 fps (44 frames): every clip length fits
    assert build.main([str(synth_root), "--resolution", "64x80", "--fps", "4", "--subset", "test", "--cache-dir",
                       str(tmp_path / "cache"), "--device", "cpu", "--no-eval", "--codec", "dnerv",
                       "--target-bpp", str(target), "--epochs", "1", "-o", str(out)]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    split = report["rate_split"]
    trials = split["trials"]
    assert len(trials) == split["trials_planned"] >= 3 and {t["clip_len"] for t in trials} == {2, 4, 8}
    best = max(trials, key=lambda t: t["psnr"])
    assert (split["clip_len"], split["codec"], split["quality"]) == (best["clip_len"], best["codec"], best["quality"])
    assert report["codec_config"]["keyframes"] == {"codec": split["codec"], "quality": split["quality"],
                                                   "as_frames": report["keyframes_as_frames"]["chosen"]}
    assert report["codec_config"]["clip_len"] == split["clip_len"]
    assert report["bytes_keyframes"] == best["keyframe_bytes"]
    target_bytes = target * 64 * 80 * report["num_frames"] / 8
    assert all(t["keyframe_bytes"] <= t["share"] * target_bytes for t in trials)
    assert abs(report["bpp"] / target - 1) <= 0.02


def test_a_low_rate_h264_reaches_is_not_refused(frames_8fps, tmp_path):
    """At the rate of H.264 at crf 35 the paper's fixed 0.75 keyframe share left too little for the smallest
    model (refused before); the split now gives the model the room it needs."""
    h264 = tmp_path / "h264.nvr"
    assert build.main([*frames_8fps, "--codec", "h264", "--crf", "35", "-o", str(h264)]) == 0
    reached = json.loads(h264.with_suffix(".json").read_text())["bpp"]
    out = tmp_path / "dnerv.nvr"
    assert build.main([*frames_8fps, "--codec", "dnerv", "--target-bpp", str(reached), "--keyframe-share", "0.75",
                       "--clip-len", "8", "--epochs", "1", "-o", str(out)]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert abs(report["bpp"] / reached - 1) <= 0.02
    split = report["rate_split"]
    assert split["share"] < 0.75 and split["given"] == {"keyframe_share": 0.75, "clip_len": 8}


class ArrayStore:
    """The two FrameStore methods keyframe coding reads, over in-memory videos."""

    def __init__(self, videos: list) -> None:
        self.videos = videos

    def num_frames(self, i: int) -> int:
        return len(self.videos[i])

    def frames(self, i: int, idx=None):
        return self.videos[i] if idx is None else self.videos[i][idx]


def test_keyframe_bytes_are_estimated_on_a_sample_then_exact_once_coded(monkeypatch):
    """The quality searches encode only the sample; coding every video gives the real bytes."""
    import numpy as np

    from nvrloader.codecs import keyframes as kf
    from nvrloader.compress import images

    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 200, 48)[None, :, None]
    videos = [np.clip(ramp + rng.normal(0, 4 + 4 * v, (9, 32, 48, 3)) + 5 * np.arange(9)[:, None, None, None], 0, 255)
              .astype(np.uint8) for v in range(6)]
    coded: list[int] = []
    real_encode = images.encode_keyframes
    monkeypatch.setattr(images, "encode_keyframes", lambda frames, *a: coded.append(len(frames)) or real_encode(frames, *a))
    monkeypatch.setattr(kf, "SAMPLE_VIDEOS", 3)
    sampled = kf.Keyframes("av1-seq", ArrayStore(videos), range(6), clip_len=4)
    assert sampled.sample == [0, 2, 5]
    estimate = sampled.estimate(40)
    assert len(coded) == 3                        # the sample only
    payloads, _ = sampled.encode(40)
    exact = sum(map(len, payloads))
    assert estimate != exact and abs(estimate / exact - 1) < 0.3
    assert sampled.estimate(40) == exact          # coded: the real bytes from then on
    monkeypatch.setattr(kf, "SAMPLE_VIDEOS", 48)
    whole = kf.Keyframes("av1-seq", ArrayStore(videos), range(6), clip_len=4)
    assert whole.sample == list(range(6)) and whole.estimate(40) == exact


def test_trials_score_an_evenly_spaced_sample_and_the_report_every_video(synth_root, tmp_path, monkeypatch):
    """Scoring a trial over all 600 videos of a large set took most of a build; the sample decides as well."""
    from nvrloader.codecs import keyframes as kf
    from nvrloader.codecs.neural import NeuralCodec

    monkeypatch.setattr(kf, "SAMPLE_VIDEOS", 3)
    scored: list[list[int] | None] = []
    real_psnr = NeuralCodec._psnr

    def spy(self, model, layout, store, video_ids, side, device, positions=None):
        scored.append(None if positions is None else list(positions))
        return real_psnr(self, model, layout, store, video_ids, side, device, positions)

    monkeypatch.setattr(NeuralCodec, "_psnr", spy)
    out = tmp_path / "dnerv.nvr"
    assert build.main([str(synth_root), "--resolution", "64x80", "--fps", "4", "--subset", "test", "--cache-dir",
                       str(tmp_path / "cache"), "--device", "cpu", "--no-eval", "--codec", "dnerv", "--clip-len", "4",
                       "--target-bpp", "1.0", "--epochs", "1", "-o", str(out)]) == 0
    split = json.loads(out.with_suffix(".json").read_text())["rate_split"]
    trials = len(split["trials"])
    assert trials >= 2 and scored[:trials] == [[0, 4, 7]] * trials   # 8 test videos
    assert scored[trials:] and all(s is None for s in scored[trials:])
    assert "over 3 evenly spaced videos" in split["chosen_by"]
