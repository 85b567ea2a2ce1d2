"""The synthetic dataset: UCF101 layout and format, determinism, and classes that need motion."""
from __future__ import annotations

import re

import av
import numpy as np
import pytest

from nvrloader.synth import CLASSES, generate, main, plan_groups, split_test_groups, trajectory
from nvrloader.video import read_video

NAME = re.compile(r"^v_([A-Za-z]+)_g(\d\d)_c(\d\d)\.avi$")


def read_lines(path) -> list[str]:
    raw = path.read_bytes()
    assert raw.endswith(b"\r\n") and b"\n" not in raw.replace(b"\r\n", b"")   # CRLF like the official lists
    return raw.decode().splitlines()


def test_layout_names_and_lists(synth_root, synth_params):
    classes = sorted(name for name, _, _ in CLASSES[:synth_params["classes"]])
    videos = sorted((synth_root / "UCF-101").rglob("*"))
    files = [p for p in videos if p.is_file()]
    assert sorted(p.name for p in (synth_root / "UCF-101").iterdir()) == classes
    assert len(files) == len(classes) * synth_params["videos_per_class"]
    for p in files:
        match = NAME.match(p.name)
        assert match and match.group(1) == p.parent.name, p

    lists = synth_root / "ucfTrainTestlist"
    class_ind = [line.split() for line in read_lines(lists / "classInd.txt")]
    assert class_ind == [[str(i + 1), c] for i, c in enumerate(classes)]
    label_of = {c: int(i) for i, c in class_ind}

    train = [line.split() for line in read_lines(lists / "trainlist01.txt")]
    test = [line.split() for line in read_lines(lists / "testlist01.txt")]
    assert all(len(entry) == 2 for entry in train) and all(len(entry) == 1 for entry in test)
    for rel, label in train:
        assert label_of[rel.split("/")[0]] == int(label)
    listed = sorted([rel for rel, _ in train] + [rel for rel, in test])
    assert listed == sorted(f"{p.parent.name}/{p.name}" for p in files)

    group = lambda rel: int(NAME.match(rel.split("/")[1]).group(2))   # noqa: E731
    train_groups, test_groups = {group(r) for r, _ in train}, {group(r) for r, in test}
    assert test_groups == {1} and train_groups == {2}               # first ~28% of the groups, >= 1
    for split in (2, 3):
        assert (lists / f"trainlist{split:02d}.txt").is_file() and (lists / f"testlist{split:02d}.txt").is_file()


def test_groups_follow_ucf101_split_scheme():
    assert plan_groups(100) == [4] * 25
    assert [split_test_groups(25, s) for s in (1, 2, 3)] == [set(range(1, 8)), set(range(8, 15)),
                                                            set(range(15, 22))]
    assert plan_groups(12) == [4, 4, 4] and split_test_groups(3, 1) == {1}
    with pytest.raises(ValueError):
        plan_groups(1)


def test_videos_are_xvid_avi_320x240_25fps(synth_root, synth_params):
    lo, hi = synth_params["duration"]
    for path in (synth_root / "UCF-101").rglob("*.avi"):
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            assert container.format.name == "avi"
            assert (stream.codec_context.name, stream.codec_context.codec_tag) == ("mpeg4", "XVID")
            assert (stream.width, stream.height, stream.average_rate) == (320, 240, 25)
            n = sum(1 for _ in container.decode(stream))
        assert round(lo * 25) <= n <= round(hi * 25)


def test_deterministic_for_a_seed_and_cli_matches(tmp_path):
    small = {"classes": 2, "videos_per_class": 2, "size": (48, 64), "duration": (0.3, 0.4), "progress": False}
    a = generate(tmp_path / "a", seed=3, workers=1, **small)
    main([str(tmp_path / "b"), "--classes", "2", "--videos-per-class", "2", "--seed", "3",
          "--duration", "0.3", "0.4", "--resolution", "48x64"])
    c = generate(tmp_path / "c", seed=4, workers=1, **small)

    def contents(root):
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    assert contents(a) == contents(tmp_path / "b")
    assert contents(a).keys() == contents(c).keys() and contents(a) != contents(c)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]   # no temporary folders left


def test_existing_dataset_is_reused_and_other_folders_refused(synth_root, synth_params):
    stamp = {p: p.stat().st_mtime_ns for p in synth_root.rglob("*")}
    assert generate(synth_root, progress=False, **synth_params) == synth_root
    assert {p: p.stat().st_mtime_ns for p in synth_root.rglob("*")} == stamp
    with pytest.raises(FileExistsError):
        generate(synth_root, classes=2, videos_per_class=2, progress=False)


@pytest.mark.parametrize("first, second", [CLASSES[i:i + 2] for i in range(0, len(CLASSES), 2)])
def test_pair_trajectories_are_time_reversals(first, second):
    (_, motion_a, dir_a), (_, motion_b, dir_b) = first, second
    assert motion_a == motion_b and dir_a == -dir_b
    a = trajectory(motion_a, dir_a, np.random.default_rng(7), (240, 320), 50, 4.0)
    b = trajectory(motion_b, dir_b, np.random.default_rng(7), (240, 320), 50, 4.0)
    moving = [key for key in a if np.ptp(a[key]) > 1e-6]
    assert moving                                                   # the class does move something
    for key in a:                                                   # same states, opposite order
        np.testing.assert_allclose(a[key], b[key][::-1], atol=1e-9)


def appearance(frames: np.ndarray) -> np.ndarray:
    """Per-frame appearance features: mean and std of each channel and an 8-bin luminance histogram."""
    f = np.ascontiguousarray(frames.transpose(0, 3, 1, 2), dtype=np.float32)   # [T, C, H, W]: fast reductions
    bins = f.sum(1) // (3 * 32)
    hist = np.stack([(bins == k).mean((1, 2)) for k in range(8)], axis=1)
    return np.concatenate([f.mean((2, 3)), f.std((2, 3)), hist], axis=1)


def horizontal_motion(frames: np.ndarray, radius: int = 8, block: int = 8) -> float:
    """Object motion relative to the background: 1-D block matching of frame pairs (0, 1), (2, 3), ...

    Each block's best horizontal shift is compared with the background's (the median shift), and
    weighted by how much better it matches than the background shift does, so only blocks on
    the moving object count.
    """
    grey = np.ascontiguousarray(frames.transpose(0, 3, 1, 2), dtype=np.float32).sum(1)
    w = grey.shape[2]
    total = 0.0
    for a, b in zip(grey[:-1:2], grey[1::2]):
        costs = []
        for dx in range(-radius, radius + 1):
            diff = np.abs(a[:, radius:w - radius] - b[:, radius + dx:w - radius + dx])
            hb, wb = diff.shape[0] // block, diff.shape[1] // block
            costs.append(diff[:hb * block, :wb * block].reshape(hb, block, wb, block).sum((1, 3)))
        costs = np.stack(costs)
        best = costs.argmin(0)
        background = int(np.median(best))
        total += float(((best - background) * (costs[background] - costs.min(0))).sum())
    return total


def single_frame_accuracy(features: list[np.ndarray], labels: list[int], groups: list[int]) -> float:
    """Leave-one-group-out linear discriminant (LDA) classification of single frames.

    Features are centred per group (both classes) first, so the scene itself cannot be used.
    """
    groups_arr = np.asarray(groups)
    centre = {g: np.concatenate([f for f, gg in zip(features, groups) if gg == g]).mean(0) for g in set(groups)}
    x = [f - centre[g] for f, g in zip(features, groups)]
    correct = total = 0
    for held in set(groups):
        train = [i for i in range(len(x)) if groups_arr[i] != held]
        per_class = [np.concatenate([x[i] for i in train if labels[i] == c]) for c in (0, 1)]
        means = [c.mean(0) for c in per_class]
        within = sum(np.cov(c, rowvar=False) for c in per_class)
        w = np.linalg.solve(within + 1e-6 * np.trace(within) * np.eye(len(within)), means[1] - means[0])
        threshold = w @ (means[0] + means[1]) / 2
        for i in np.flatnonzero(groups_arr == held):
            pred = x[i] @ w > threshold
            correct += int((pred == labels[i]).sum())
            total += len(x[i])
    return correct / total


def test_move_left_right_need_motion(tmp_path):
    root = generate(tmp_path / "pair", classes=2, videos_per_class=16, size=(96, 128), duration=(0.6, 0.8),
                    progress=False)
    features, labels, groups, motion = [], [], [], []
    for label, name in enumerate(["MoveLeft", "MoveRight"]):
        for path in sorted((root / "UCF-101" / name).glob("*.avi")):
            frames = read_video(path)
            features.append(appearance(frames))
            labels.append(label)
            groups.append(int(NAME.match(path.name).group(2)))
            motion.append(horizontal_motion(frames))
    labels_arr, motion_arr = np.asarray(labels), np.asarray(motion)
    # motion separates the classes perfectly...
    assert (motion_arr[labels_arr == 0] < 0).all() and (motion_arr[labels_arr == 1] > 0).all()
    # ...while single frames are at chance (4 groups x 4 clips x 2 classes, ~15 frames each)
    assert 0.35 < single_frame_accuracy(features, labels, groups) < 0.65
    # while the same classifier does pick up a class-dependent red tint of 8 grey levels
    tinted = [f + np.r_[8.0, np.zeros(f.shape[1] - 1)] * lab for f, lab in zip(features, labels)]
    assert single_frame_accuracy(tinted, labels, groups) > 0.75


# --- the study mode ----------------------------------------------------------------------------

def test_study_mode_layout_defaults_and_cli(tmp_path):
    from nvrloader.synth_study import CLASSES as STUDY_CLASSES, DEFAULTS

    small = {"classes": 3, "videos_per_class": 4, "duration": (1.0, 1.5), "seed": 2}
    a = generate(tmp_path / "a", mode="study", progress=False, workers=1, **small)
    main([str(tmp_path / "b"), "--mode", "study", "--classes", "3", "--videos-per-class", "4", "--duration", "1", "1.5",
          "--seed", "2"])
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    assert sorted(p.name for p in (a / "UCF-101").iterdir()) == sorted(c for c, _, _ in STUDY_CLASSES[:3])
    assert plan_groups(4, DEFAULTS["clips_per_group"]) == [2, 2]
    frames = read_video(next((a / "UCF-101").rglob("*.avi")))
    assert frames.shape[1:] == (*DEFAULTS["size"], 3) and 4 <= len(frames) <= 6   # 1-1.5 s at 4 fps
    with pytest.raises(FileExistsError):           # a motion-mode dataset is not the study dataset
        generate(a, progress=False, **small)
    with pytest.raises(ValueError, match="mode"):
        generate(tmp_path / "c", mode="nope", progress=False)


def _stripe_cue(frame: np.ndarray) -> tuple[np.ndarray, float]:
    """Where the fine stripes are (centroid of high-pass energy, x and y) and their orientation:
    > 0 for horizontal stripes (the image changes along y), < 0 for vertical ones."""
    g = frame.astype(np.float32).mean(2)
    dy, dx = np.abs(np.diff(g, axis=0))[:, :-1], np.abs(np.diff(g, axis=1))[:-1, :]
    energy = dx + dy
    weights = np.where(energy > np.percentile(energy, 97), energy, 0)
    yy, xx = np.mgrid[0:energy.shape[0], 0:energy.shape[1]]
    centre = np.array([(weights * xx).sum(), (weights * yy).sum()]) / weights.sum()
    return centre, float((dy - dx)[weights > 0].mean())


@pytest.mark.parametrize("class_index", range(8))
def test_study_classes_are_stripe_orientation_times_direction(class_index):
    """The striped target carries both cues: its stripes' orientation and its direction of travel
    (in the world; the camera is held still and the sensor noiseless here: the pan moves everything in
    the frame, and grain has edges everywhere)."""
    import dataclasses

    from nvrloader.synth_study import CLASSES as STUDY_CLASSES, make_scene, render_clip

    name, angle, step = STUDY_CLASSES[class_index]
    for clip in range(3):
        scene = dataclasses.replace(make_scene(np.random.default_rng([5, clip]), (96, 128), 3.0), pan_speed=0.0,
                                    noise_sigma=0.0)
        frames = render_clip(scene, class_index, np.random.default_rng([6, clip]), (96, 128), 4, 3.0)
        cues = [_stripe_cue(f) for f in frames]
        travel = cues[-1][0] - cues[0][0]
        assert np.sign(travel[np.argmax(np.abs(step))]) == step[np.argmax(np.abs(step))], (name, travel)
        assert abs(travel[np.argmax(np.abs(step))]) > 2 * abs(travel[np.argmin(np.abs(step))]), (name, travel)
        orientation = np.median([c[1] for c in cues])
        assert (orientation > 0) == (angle == 0), (name, orientation)
