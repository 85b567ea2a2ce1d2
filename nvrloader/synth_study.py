"""The `study` mode of the synthetic dataset: classes that need fine detail *and* motion.

Each clip shows one small target object striped with a fine sinusoid (a period of 3.6-4.8 px at
48x64) and plain distractors of the target's mean colour. The class is the target's stripe
orientation (horizontal or vertical, tilted up to 15 degrees) times its direction of travel (left,
right, up, down); distractors travel in directions drawn independently of the class. Blur the
stripes away, as a codec does at a low bitrate, and both cues go: the orientation, and which of
the moving blobs is the target. Over a panning camera and a coarse background with static clutter,
with flicker and sensor grain; everything but the class's two cues is drawn from distributions that
do not depend on the class.

A scene (one UCF group) fixes the background, clutter, palette, stripe period, object outline and
sizes, pan speed and noise; the directions of pan and distractors, positions and stripe phase are
drawn per clip.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from nvrloader.synth import Outline, colourise, compose, footprint, lowpass_noise, random_outline

KINDS = (("HStripe", 0.0), ("VStripe", math.pi / 2))   # stripe orientation: the wave runs along y, or x
DIRECTIONS = (("MoveLeft", (-1, 0)), ("MoveRight", (1, 0)), ("MoveUp", (0, -1)), ("MoveDown", (0, 1)))
# kinds interleaved, so that the first N classes use both orientations and as many directions as fit
CLASSES: tuple[tuple[str, float, tuple[int, int]], ...] = tuple(
    (kind + move, angle, step) for move, step in DIRECTIONS for kind, angle in KINDS)
DEFAULTS = {"classes": len(CLASSES), "videos_per_class": 60, "size": (48, 64), "fps": 4,
            "duration": (2.0, 3.0), "clips_per_group": 2}
TILT = math.radians(15)      # stripe orientation jitter around the kind's angle
TRAVEL = (0.3, 0.45)         # share of the central square crossed per clip
MAX_PAN = 0.06               # camera speed, frame widths per second
DISTRACTORS = 1


@dataclass(frozen=True)
class StudyScene:
    background: np.ndarray   # float32 [H + 2m, W + 2m, 3], larger than the frame for panning
    margin: int
    stripe_colours: np.ndarray   # float32 [2, 3]: the target's stripes; distractors are their mean
    period: float            # stripe period in px
    outline: Outline
    radius: float            # object radius in px
    light_map: np.ndarray    # float32 [H, W, 3]
    flicker: float           # relative amplitude (frequency and phase drawn per clip)
    pan_speed: float         # px/s
    noise_sigma: float


def _clutter(rng: np.random.Generator, field: np.ndarray, count: int) -> None:
    """Static soft ellipses of coarse colours painted into the background in place."""
    h, w = field.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for _ in range(count):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(0.04, 0.12, 2) * min(h, w)
        alpha = np.clip(1.5 * (1 - ((yy - cy) / ry) ** 2 - ((xx - cx) / rx) ** 2), 0, 1)[..., None]
        field += (rng.uniform(20, 235, 3).astype(np.float32) - field) * alpha * np.float32(rng.uniform(0.5, 0.9))


def make_scene(rng: np.random.Generator, size: tuple[int, int], max_duration: float) -> StudyScene:
    h, w = size
    margin = math.ceil(MAX_PAN * w * max_duration / 2) + 2
    shape = (h + 2 * margin, w + 2 * margin)
    background = colourise(rng, lowpass_noise(rng, shape, rng.uniform(0.02, 0.05))).astype(np.float32)
    _clutter(rng, background, int(rng.integers(2, 6)))
    background = background * np.float32(rng.uniform(0.5, 0.9)) + np.float32(rng.uniform(0, 60))  # contrast
    while True:   # stripes that differ in brightness, so a blur visibly flattens them
        colours = rng.uniform(20, 235, size=(2, 3)).astype(np.float32)
        if abs(float(colours[0].mean() - colours[1].mean())) > 60:
            break
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    light_angle = rng.uniform(0, 2 * np.pi)
    gradient = ((xx - w / 2) * np.cos(light_angle) + (yy - h / 2) * np.sin(light_angle)) / max(h, w)
    light = 1.0 + np.float32(rng.uniform(0.1, 0.3)) * gradient
    return StudyScene(background=background, margin=margin, stripe_colours=colours,
                      period=float(rng.uniform(0.075, 0.1) * h), outline=random_outline(rng, 0.02, 0.08),
                      radius=float(rng.uniform(0.13, 0.16) * h), light_map=np.repeat(light[..., None], 3, axis=2),
                      flicker=float(rng.uniform(0.0, 0.04)), pan_speed=float(rng.uniform(0.0, MAX_PAN) * w),
                      noise_sigma=float(rng.uniform(2.0, 5.0)))


def _path(rng: np.random.Generator, step: tuple[int, int], size: tuple[int, int], reach: float,
          n: int) -> np.ndarray:
    """Object centres [n, 2] (x, y) in frame px: a straight travel in direction `step`, kept inside the
    frame's central square, which TSM's square crops (test: the centre) see."""
    h, w = size
    side = min(h, w)
    corner = np.array([(w - side) / 2, (h - side) / 2])
    direction = np.array(step, dtype=np.float64)
    travel = rng.uniform(*TRAVEL) * side
    lo = corner + reach - np.minimum(direction * travel, 0)       # the start keeps the whole path inside
    hi = corner + side - reach - np.maximum(direction * travel, 0)
    start = rng.uniform(lo, np.maximum(hi, lo))
    u = np.linspace(0.0, 1.0, n)[:, None]
    return start + u * direction * travel


def _paint(frame: np.ndarray, scene: StudyScene, cx: float, cy: float, spin: float,
           stripes: tuple[float, float] | None) -> None:
    """Composite one object in place: striped (wave angle, phase) or plain in the stripes' mean colour."""
    f = footprint(frame.shape[:2], scene.outline, cx, cy, scene.radius, spin)
    if f is None:
        return
    low, high = scene.stripe_colours
    if stripes is None:
        mix = np.full(f.alpha.shape, 0.5, dtype=np.float32)
    else:
        angle, phase = stripes
        u = f.dx * np.float32(math.sin(angle)) + f.dy * np.float32(math.cos(angle))   # px along the wave
        mix = np.float32(0.5) + np.float32(0.5) * np.sin(np.float32(2 * math.pi / scene.period) * u + np.float32(phase))
    colour = low + (high - low) * mix[..., None]
    colour *= (np.float32(1.05) - np.float32(0.15) * np.minimum(f.rho, 1.0) ** 2)[..., None]   # a hint of roundness
    region = frame[f.box]
    region += (colour - region) * f.alpha[..., None]


def render_clip(scene: StudyScene, class_index: int, rng: np.random.Generator, size: tuple[int, int],
                fps: int, duration: float) -> np.ndarray:
    """uint8 [T, H, W, 3] frames of one clip of class `class_index`."""
    h, w = size
    n = max(2, round(duration * fps))
    _, kind_angle, step = CLASSES[class_index]
    reach = scene.radius * 1.3
    target = _path(rng, step, size, reach, n)
    others = [_path(rng, DIRECTIONS[int(rng.integers(len(DIRECTIONS)))][1], size, reach, n)
              for _ in range(DISTRACTORS)]
    spins = rng.uniform(0, 2 * np.pi, DISTRACTORS + 1)        # outline orientation; the stripes do not follow it
    stripes = (kind_angle + rng.uniform(-TILT, TILT), rng.uniform(0, 2 * np.pi))
    pan_angle = rng.uniform(0, 2 * np.pi)
    t = np.arange(n) / fps - (n - 1) / (2 * fps)
    pan_x, pan_y = scene.pan_speed * math.cos(pan_angle) * t, scene.pan_speed * math.sin(pan_angle) * t
    gain = (1.0 + scene.flicker * np.sin(2 * np.pi * rng.uniform(0.5, 2.0) * t + rng.uniform(0, 2 * np.pi)))
    grain = rng.standard_normal((n, h, w, 3), dtype=np.float32) * np.float32(scene.noise_sigma)

    def paint(frame: np.ndarray, i: int) -> None:
        for path, spin in zip(others, spins[1:]):   # objects move in the world: the camera's pan shifts them too
            _paint(frame, scene, path[i, 0] - pan_x[i], path[i, 1] - pan_y[i], spin, None)
        _paint(frame, scene, target[i, 0] - pan_x[i], target[i, 1] - pan_y[i], spins[0], stripes)

    return compose(scene.background, scene.margin, size, pan_x, pan_y, paint, scene.light_map,
                   gain.astype(np.float32), lambda i: grain[i])
