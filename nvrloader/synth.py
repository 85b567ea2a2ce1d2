"""Synthetic action dataset in the official UCF101 layout: the embedded default for demos and tests.

Classes come in pairs whose motions are time reversals of each other (MoveLeft / MoveRight,
RotateClockwise / RotateCounterclockwise, Grow / Shrink, ...). Everything a single frame shows
(background, object texture and shape, position, size, lighting, noise) is drawn from the same
distribution for both classes of a pair, so only motion tells them apart: a loader that loses
motion (too few frames, smeared temporal detail) costs recognition accuracy.

Each UCF "group" is a scene shared by all classes: background texture, object texture and shape,
light direction, strength of the light ramp and speed of the camera pan (their directions are
drawn per clip). Test groups are disjoint from train groups, as in UCF101.

That is the `motion` mode. The `study` mode (`nvrloader.synth_study`) asks for fine detail as well
as motion, so that compression artefacts cost accuracy: codec comparisons use it.

    python -m nvrloader.synth OUT_DIR --classes 6 --videos-per-class 12 --seed 0
    python -m nvrloader.synth OUT_DIR --mode study        # 8 classes x 60 videos, 48x64, 4 fps
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import multiprocessing
import os
import shutil
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from tqdm import tqdm

from nvrloader.cliargs import parse_resolution
from nvrloader.video_encode import write_video

# (class name, motion, direction); a pair shares the motion and has opposite directions.
CLASSES: tuple[tuple[str, str, int], ...] = (
    ("MoveLeft", "move_x", -1), ("MoveRight", "move_x", 1),
    ("RotateClockwise", "rotate", 1), ("RotateCounterclockwise", "rotate", -1),
    ("Grow", "scale", 1), ("Shrink", "scale", -1),
    ("MoveUp", "move_y", -1), ("MoveDown", "move_y", 1),
    ("OrbitClockwise", "orbit", 1), ("OrbitCounterclockwise", "orbit", -1),
    ("BounceLeft", "bounce", -1), ("BounceRight", "bounce", 1),
)
CLIPS_PER_GROUP = 4          # UCF101 has 4-7 clips per group
TEST_GROUP_FRACTION = 7 / 25  # UCF101 split 1: groups 1-7 of 25 are test
NUM_SPLITS = 3
XVID_OPTIONS = {"b": "600k", "g": "125"}  # UCF101 averages about 0.55 Mbit/s of XviD
MAX_PAN_SPEED = 12.0         # px/s
TEXTURE_SIZE = 128
SERIAL_FRAMES = 2000         # below this many 320x240 frames, generate in-process


# an object's outline: terms (k, a cos phi, a sin phi) of r(theta) = 1 + sum a cos(k theta + phi)
Outline = tuple[tuple[int, float, float], ...]


def random_outline(rng: np.random.Generator, low: float, high: float) -> Outline:
    """A blob: harmonics 2, 3 and 5 with amplitudes drawn from [low, high] and random phases."""
    amplitudes, phases = rng.uniform(low, high, 3), rng.uniform(0, 2 * np.pi, 3)
    return tuple((k, float(a * np.cos(p)), float(a * np.sin(p))) for k, a, p in zip((2, 3, 5), amplitudes, phases))


@dataclass(frozen=True)
class Scene:
    """What the clips of one group share, across classes."""
    background: np.ndarray   # float32 [H + 2m, W + 2m, 3], 0..255, larger than the frame for panning
    margin: int
    texture: np.ndarray      # float32 [TEXTURE_SIZE * TEXTURE_SIZE, 3] object texture, flattened
    outline: Outline
    light_map: np.ndarray    # float32 [H, W, 3] static spatial illumination (repeated over channels)
    light_ramp: float        # relative brightness change over a clip (its sign is drawn per clip)
    flicker: tuple[float, float]  # amplitude, frequency (Hz); the phase is drawn per clip
    pan: tuple[float, float]  # camera velocity (px/s), x and y (its sign is drawn per clip)
    noise_sigma: float

    @property
    def reach(self) -> float:
        return outline_reach(self.outline)


def lowpass_noise(rng: np.random.Generator, shape: tuple[int, int], cutoff: float) -> np.ndarray:
    """Gaussian noise filtered to spatial frequencies below `cutoff` cycles/px, scaled to [0, 1]."""
    spectrum = np.fft.rfft2(rng.standard_normal(shape))
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    spectrum /= 1.0 + (np.hypot(fy, fx) / cutoff) ** 3
    field = np.fft.irfft2(spectrum, s=shape)
    return (field - field.min()) / (np.ptp(field) + 1e-12)


def colourise(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """Map a [0, 1] field through a random three-colour ramp."""
    palette = rng.uniform(20, 235, size=(3, 3))
    t = t[..., None]
    low = palette[0] + (palette[1] - palette[0]) * np.clip(2 * t, 0, 1)
    return low + (palette[2] - palette[1]) * np.clip(2 * t - 1, 0, 1)


def _texture(rng: np.random.Generator, shape: tuple[int, int], blob_cutoff: float) -> np.ndarray:
    """Blobs plus oriented stripes plus fine grain: enough detail for motion and for codecs to work on."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    angle, freq = rng.uniform(0, np.pi), rng.uniform(0.04, 0.12)
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (xx * np.cos(angle) + yy * np.sin(angle)))
    weights = rng.dirichlet([2.0, 2.0, 1.0])
    field = (weights[0] * lowpass_noise(rng, shape, blob_cutoff) + weights[1] * stripes
             + weights[2] * lowpass_noise(rng, shape, 0.25))
    return colourise(rng, field).astype(np.float32)


def make_scene(rng: np.random.Generator, size: tuple[int, int], max_duration: float) -> Scene:
    h, w = size
    margin = math.ceil(MAX_PAN_SPEED * max_duration / 2) + 2
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    light_angle = rng.uniform(0, 2 * np.pi)
    gradient = ((xx - w / 2) * np.cos(light_angle) + (yy - h / 2) * np.sin(light_angle)) / max(h, w)
    light = (1.0 + rng.uniform(0.1, 0.4) * gradient).astype(np.float32)
    outline = random_outline(rng, 0.04, 0.16)
    return Scene(
        background=_texture(rng, (h + 2 * margin, w + 2 * margin), rng.uniform(0.01, 0.03)),
        margin=margin,
        texture=_texture(rng, (TEXTURE_SIZE, TEXTURE_SIZE), rng.uniform(0.03, 0.08)).reshape(-1, 3),
        outline=outline,
        light_map=np.repeat(light[..., None], 3, axis=2),
        light_ramp=rng.uniform(0.15, 0.4),
        flicker=(rng.uniform(0.0, 0.04), rng.uniform(0.5, 2.0)),
        pan=(rng.uniform(3.0, MAX_PAN_SPEED), rng.uniform(-3.0, 3.0)),
        noise_sigma=rng.uniform(2.0, 6.0),
    )


def trajectory(motion: str, direction: int, rng: np.random.Generator, size: tuple[int, int],
               n: int, duration: float) -> dict[str, np.ndarray]:
    """Object centre (world px), radius (px) and angle (rad) per frame.

    Every parameter is drawn whatever the class, from class-independent distributions; only
    `motion` picks which of them change over the clip and `direction` flips time, so the two
    classes of a pair have identical per-frame distributions.
    """
    h, w = size
    p = {
        "cx": w / 2 + rng.uniform(-0.1, 0.1) * w, "cy": h / 2 + rng.uniform(-0.12, 0.12) * h,
        "radius": rng.uniform(0.12, 0.16) * h, "angle": rng.uniform(0, 2 * np.pi),
        "travel_x": rng.uniform(0.45, 0.65) * w, "travel_y": rng.uniform(0.4, 0.55) * h,
        "spin": rng.uniform(0.9, 1.4) * duration, "zoom": rng.uniform(0.9, 1.3),
        "orbit_radius": rng.uniform(0.18, 0.26) * h, "orbit_phase": rng.uniform(0, 2 * np.pi),
        "orbit_sweep": rng.uniform(0.8, 1.2) * duration,
        "hops": rng.uniform(0.35, 0.6) * duration, "hop_height": rng.uniform(0.2, 0.3) * h,
    }
    u = np.linspace(0.0, 1.0, n) if n > 1 else np.zeros(1)
    v = direction * (u - 0.5)    # in [-0.5, 0.5]; reversing time flips its sign
    cx, cy = np.full(n, p["cx"]), np.full(n, p["cy"])
    radius, angle = np.full(n, p["radius"]), np.full(n, p["angle"])
    if motion in ("move_x", "bounce"):
        cx = cx + v * p["travel_x"]
    if motion == "bounce":
        hops = max(1, round(p["hops"]))
        cy = cy + p["hop_height"] * (0.5 - np.abs(np.sin(np.pi * hops * u)))
    elif motion == "move_y":
        cy = cy + v * p["travel_y"]
    elif motion == "rotate":
        angle = angle + v * p["spin"]
    elif motion == "scale":
        radius = radius * np.exp(v * p["zoom"])
    elif motion == "orbit":
        phi = p["orbit_phase"] + v * p["orbit_sweep"]
        cx = cx + p["orbit_radius"] * np.cos(phi)
        cy = cy + 0.8 * p["orbit_radius"] * np.sin(phi)
    elif motion != "move_x":
        raise ValueError(f"unknown motion {motion!r}")
    return {"cx": cx, "cy": cy, "radius": radius, "angle": angle}


def outline_reach(outline: Outline) -> float:
    """Largest outline radius relative to the object radius."""
    return 1.0 + sum(math.hypot(a, b) for _, a, b in outline)


def outline_radius(outline: Outline, cos_t: np.ndarray, sin_t: np.ndarray) -> np.ndarray:
    """r(theta) from the unit direction; cos/sin of k*theta by angle addition (much cheaper than arctan2)."""
    r = np.ones_like(cos_t)
    terms = {k: (a, b) for k, a, b in outline}
    ck, sk = cos_t, sin_t
    for k in range(2, max(terms) + 1):
        ck, sk = ck * cos_t - sk * sin_t, sk * cos_t + ck * sin_t
        if k in terms:
            a, b = terms[k]
            r += np.float32(a) * ck - np.float32(b) * sk
    return r


@dataclass(frozen=True)
class Footprint:
    """Where an object covers a frame: its bounding box, pixel offsets from its centre (dx, dy),
    object coordinates (ox, oy: rotated, in radii), their norm rho, and coverage alpha in [0, 1]."""
    box: tuple[slice, slice]
    dx: np.ndarray
    dy: np.ndarray
    ox: np.ndarray
    oy: np.ndarray
    rho: np.ndarray
    alpha: np.ndarray


def footprint(size: tuple[int, int], outline: Outline, cx: float, cy: float, radius: float,
              angle: float) -> Footprint | None:
    """The object's footprint in a frame of `size` (None when it lies wholly outside)."""
    h, w = size
    reach = radius * outline_reach(outline) + 2
    y0, y1 = max(0, int(cy - reach)), min(h, int(cy + reach) + 1)
    x0, x1 = max(0, int(cx - reach)), min(w, int(cx + reach) + 1)
    if y0 >= y1 or x0 >= x1:
        return None
    dy = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(cy)
    dx = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(cx)
    c, s = np.float32(math.cos(angle) / radius), np.float32(math.sin(angle) / radius)
    ox, oy = c * dx + s * dy, c * dy - s * dx   # object coordinates; image y points down: clockwise
    rho = np.hypot(ox, oy)
    inv = 1.0 / np.maximum(rho, np.float32(1e-6))
    alpha = np.clip((outline_radius(outline, ox * inv, oy * inv) - rho) * np.float32(radius) + np.float32(0.5), 0, 1)
    return Footprint((slice(y0, y1), slice(x0, x1)), dx, dy, ox, oy, rho, alpha)


def _paint_object(frame: np.ndarray, scene: Scene, cx: float, cy: float, radius: float, angle: float) -> None:
    """Composite the textured object onto `frame` in place, inside its bounding box only."""
    f = footprint(frame.shape[:2], scene.outline, cx, cy, radius, angle)
    if f is None:
        return
    scale = np.float32((TEXTURE_SIZE - 1) / (2 * scene.reach))
    tx = np.clip(f.ox * scale + TEXTURE_SIZE / 2, 0, TEXTURE_SIZE - 1).astype(np.intp)
    ty = np.clip(f.oy * scale + TEXTURE_SIZE / 2, 0, TEXTURE_SIZE - 1).astype(np.intp)
    shaded = np.take(scene.texture, ty * TEXTURE_SIZE + tx, axis=0)
    shaded *= (np.float32(1.1) - np.float32(0.3) * np.minimum(f.rho, 1.0) ** 2)[..., None]  # a hint of roundness
    region = frame[f.box]
    shaded -= region
    shaded *= np.repeat(f.alpha[..., None], 3, axis=2)
    region += shaded


def render_clip(scene: Scene, motion: str, direction: int, rng: np.random.Generator,
                size: tuple[int, int], fps: int, duration: float) -> np.ndarray:
    """uint8 [T, H, W, 3] frames of one clip."""
    h, w = size
    n = max(2, round(duration * fps))
    path = trajectory(motion, direction, rng, size, n, duration)
    # Pan and light ramp directions are drawn per clip: were they shared by a group, a frame's
    # background offset or brightness would date it, and with the object's position reveal the class.
    pan_sign, ramp_sign = rng.choice([-1.0, 1.0], size=2)
    flicker_phase = rng.uniform(0, 2 * np.pi)
    t = np.arange(n) / fps - (n - 1) / (2 * fps)   # centred so that reversing time is symmetric
    pan_x, pan_y = pan_sign * scene.pan[0] * t, pan_sign * scene.pan[1] * t
    flicker_amp, flicker_freq = scene.flicker
    gain = ((1.0 + ramp_sign * scene.light_ramp * t / (t[-1] - t[0]))
            * (1.0 + flicker_amp * np.sin(2 * np.pi * flicker_freq * t + flicker_phase))).astype(np.float32)
    grain = rng.standard_normal((h + 16, w + 16, 3), dtype=np.float32) * np.float32(scene.noise_sigma)
    offsets = rng.integers(0, 17, size=(n, 2))

    def paint(frame: np.ndarray, i: int) -> None:
        _paint_object(frame, scene, path["cx"][i] - pan_x[i], path["cy"][i] - pan_y[i],
                      path["radius"][i], path["angle"][i])

    return compose(scene.background, scene.margin, size, pan_x, pan_y, paint, scene.light_map, gain,
                   lambda i: grain[offsets[i, 0]:offsets[i, 0] + h, offsets[i, 1]:offsets[i, 1] + w])


def compose(background: np.ndarray, margin: int, size: tuple[int, int], pan_x: np.ndarray, pan_y: np.ndarray,
            paint: Callable[[np.ndarray, int], None], light_map: np.ndarray, gain: np.ndarray,
            grain: Callable[[int], np.ndarray]) -> np.ndarray:
    """uint8 [T, H, W, 3] frames: each the background seen through the panning camera, the objects
    `paint(frame, i)` draws on it, then the light map, the frame's gain (float32) and sensor grain."""
    h, w = size
    frames = np.empty((len(gain), h, w, 3), dtype=np.uint8)
    frame = np.empty((h, w, 3), dtype=np.float32)
    for i in range(len(gain)):
        by, bx = margin + int(round(pan_y[i])), margin + int(round(pan_x[i]))
        np.copyto(frame, background[by:by + h, bx:bx + w])
        paint(frame, i)
        frame *= light_map
        frame *= gain[i]
        frame += grain(i)
        np.clip(frame, 0, 255, out=frames[i], casting="unsafe")
    return frames


def plan_groups(videos_per_class: int, clips_per_group: int = CLIPS_PER_GROUP) -> list[int]:
    """Number of clips in each group (about `clips_per_group` each, at least two groups)."""
    if videos_per_class < 2:
        raise ValueError("videos_per_class must be at least 2 (one train and one test group)")
    num_groups = max(2, round(videos_per_class / clips_per_group))
    return [len(a) for a in np.array_split(np.arange(videos_per_class), num_groups)]


def split_test_groups(num_groups: int, split: int) -> set[int]:
    """1-based test groups of a split: consecutive blocks of ~28% of the groups, like UCF101."""
    n_test = min(num_groups - 1, max(1, round(TEST_GROUP_FRACTION * num_groups)))
    return {((split - 1) * n_test + i) % num_groups + 1 for i in range(n_test)}


def _write_lists(list_dir: Path, classes: list[str], videos: list[tuple[str, int, str]],
                 num_groups: int) -> None:
    """classInd and the train/test lists, with the CRLF line ends of the official files."""
    list_dir.mkdir(parents=True)
    label = {name: i + 1 for i, name in enumerate(classes)}
    (list_dir / "classInd.txt").write_bytes("".join(f"{label[c]} {c}\r\n" for c in classes).encode())
    for split in range(1, NUM_SPLITS + 1):
        test = split_test_groups(num_groups, split)
        train_lines = [f"{c}/{f} {label[c]}\r\n" for c, g, f in videos if g not in test]
        test_lines = [f"{c}/{f}\r\n" for c, g, f in videos if g in test]
        (list_dir / f"trainlist{split:02d}.txt").write_bytes("".join(train_lines).encode())
        (list_dir / f"testlist{split:02d}.txt").write_bytes("".join(test_lines).encode())


def _motion_clip(scene: Scene, class_index: int, rng: np.random.Generator, size: tuple[int, int], fps: int,
                 duration: float) -> np.ndarray:
    _, motion, direction = CLASSES[class_index]
    return render_clip(scene, motion, direction, rng, size, fps, duration)


@dataclass(frozen=True)
class Mode:
    """A kind of synthetic dataset: its classes, how a group's scene and a clip are drawn, and the
    generate() defaults it is meant for (classes, videos_per_class, size, fps, duration, clips_per_group)."""
    classes: tuple[str, ...]        # in generation order: a class's videos depend on its place here
    make_scene: Callable[[np.random.Generator, tuple[int, int], float], Any]
    render_clip: Callable[[Any, int, np.random.Generator, tuple[int, int], int, float], np.ndarray]
    defaults: dict[str, Any]
    version: int                    # bump when the mode's output changes


MODE_NAMES = ("motion", "study")


def get_mode(name: str) -> Mode:
    """`motion`: paired motions only (this module); `study`: fine detail and motion (nvrloader.synth_study)."""
    if name == "motion":
        return Mode(tuple(c for c, _, _ in CLASSES), make_scene, _motion_clip,
                    {"classes": 6, "videos_per_class": 12, "size": (240, 320), "fps": 25, "duration": (4.0, 8.0),
                     "clips_per_group": CLIPS_PER_GROUP}, version=1)
    if name == "study":
        from nvrloader import synth_study
        return Mode(tuple(c for c, _, _ in synth_study.CLASSES), synth_study.make_scene, synth_study.render_clip,
                    synth_study.DEFAULTS, version=1)
    raise ValueError(f"unknown synthetic dataset mode {name!r}; choose one of {', '.join(MODE_NAMES)}")


@functools.lru_cache(maxsize=2)
def _group_scene(mode: str, seed: int, group: int, size: tuple[int, int], max_duration: float) -> Any:
    return get_mode(mode).make_scene(np.random.default_rng([seed, 0, group]), size, max_duration)


def _write_class_group(root: Path, mode: str, seed: int, group: int, class_index: int, clips: int,
                       size: tuple[int, int], fps: int, duration: tuple[float, float]) -> list[tuple[str, int, str]]:
    """Render and encode the clips of one class in one group; returns (class, group, file name) entries."""
    kind = get_mode(mode)
    name = kind.classes[class_index]
    scene = _group_scene(mode, seed, group, size, duration[1])
    class_dir = root / "UCF-101" / name
    class_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for clip in range(1, clips + 1):
        # seeded by the class's place in the mode's classes: its videos do not depend on how many classes are made
        rng = np.random.default_rng([seed, class_index + 1, group, clip])
        frames = kind.render_clip(scene, class_index, rng, size, fps, rng.uniform(*duration))
        filename = f"v_{name}_g{group:02d}_c{clip:02d}.avi"
        write_video(class_dir / filename, frames, fps, codec="mpeg4", options=XVID_OPTIONS, codec_tag="XVID")
        entries.append((name, group, filename))
    return entries


def generate(out_dir: Path, classes: int | None = None, videos_per_class: int | None = None, seed: int = 0,
             size: tuple[int, int] | None = None, fps: int | None = None,
             duration: tuple[float, float] | None = None, progress: bool = True,
             workers: int | None = None, mode: str = "motion") -> Path:
    """Write the dataset to out_dir (built beside it, renamed into place when complete).

    Arguments left None take the mode's defaults (`get_mode(mode).defaults`). An out_dir that already
    holds a dataset generated with the same parameters is reused as is. workers=None uses one process
    per CPU unless the dataset is small; the output does not depend on it.
    """
    kind = get_mode(mode)
    d = kind.defaults
    classes = d["classes"] if classes is None else classes
    videos_per_class = d["videos_per_class"] if videos_per_class is None else videos_per_class
    size, fps = tuple(d["size"] if size is None else size), d["fps"] if fps is None else fps
    duration = tuple(d["duration"] if duration is None else duration)
    out_dir = Path(out_dir).absolute()
    if not 1 <= classes <= len(kind.classes):
        raise ValueError(f"classes must be between 1 and {len(kind.classes)} in mode {mode!r}, got {classes}")
    if not 0 < duration[0] <= duration[1]:
        raise ValueError(f"duration must be (min, max) seconds with 0 < min <= max, got {duration}")
    group_sizes = plan_groups(videos_per_class, d["clips_per_group"])
    params = {"classes": classes, "videos_per_class": videos_per_class, "seed": seed, "size": list(size),
              "fps": fps, "duration": list(duration), "generator": kind.version}
    if mode != "motion":    # the first mode's manifests predate modes
        params["mode"] = mode
    manifest = out_dir / "synth.json"
    if manifest.is_file() and json.loads(manifest.read_text()) == params:
        return out_dir
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir}: exists and is not an identical synthetic dataset; choose an empty folder")

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    jobs = [(tmp, mode, seed, group, class_index, clips, size, fps, duration)
            for group, clips in enumerate(group_sizes, start=1) for class_index in range(classes)]
    if workers is None:   # starting processes costs more than it saves on a small dataset
        work = classes * videos_per_class * sum(duration) / 2 * fps * size[0] * size[1] / (240 * 320)
        workers = (os.cpu_count() or 1) if work > SERIAL_FRAMES else 1
    workers = max(1, min(len(jobs), workers))
    try:
        videos: list[tuple[str, int, str]] = []
        with tqdm(total=classes * videos_per_class, desc="synth videos", unit="video", disable=not progress) as bar:
            if workers == 1:
                for job in jobs:
                    entries = _write_class_group(*job)
                    videos += entries
                    bar.update(len(entries))
            else:   # spawn: the caller may hold threads (torch) that make fork unsafe
                with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                    for future in as_completed([pool.submit(_write_class_group, *job) for job in jobs]):
                        entries = future.result()
                        videos += entries
                        bar.update(len(entries))
        videos.sort(key=lambda v: (v[0], v[2]))
        class_names = sorted(kind.classes[:classes])   # classInd is alphabetical, as in UCF101
        _write_lists(tmp / "ucfTrainTestlist", class_names, videos, len(group_sizes))
        (tmp / "synth.json").write_text(json.dumps(params, indent=1))
        if out_dir.exists():
            out_dir.rmdir()   # empty, checked above
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m nvrloader.synth", description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, help="folder to create (UCF-101/ and ucfTrainTestlist/ inside)")
    parser.add_argument("--mode", choices=MODE_NAMES, default="motion",
                        help="motion: paired motions that only motion tells apart (default); study: fine stripes "
                             "and motion together, for codec comparisons (nvrloader.synth_study)")
    parser.add_argument("--classes", type=int, help="number of classes (default: motion 6 of 12, study 8 of 8)")
    parser.add_argument("--videos-per-class", type=int, help="videos per class (default: motion 12, study 60)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--duration", type=float, nargs=2, metavar=("MIN", "MAX"),
                        help="clip length range in seconds (default: motion 4 8, study 2 3)")
    parser.add_argument("--resolution", type=parse_resolution,
                        help="frame size HxW (default: motion 240x320, UCF101's; study 48x64)")
    parser.add_argument("--fps", type=int, help="frame rate of the videos (default: motion 25, study 4)")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes (default: one per CPU, or 1 for a small dataset)")
    args = parser.parse_args(argv)
    try:
        out = generate(args.out_dir, classes=args.classes, videos_per_class=args.videos_per_class,
                       seed=args.seed, size=args.resolution, fps=args.fps,
                       duration=None if args.duration is None else tuple(args.duration), workers=args.workers,
                       mode=args.mode)
    except (ValueError, FileExistsError) as e:
        parser.error(str(e))
    print(out)


if __name__ == "__main__":
    main()
