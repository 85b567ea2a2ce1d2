"""Archives written directly, in a second, for decode-side tests: raw frames, H.264 streams, and
D-NeRV with random weights and PNG (or any codec's) keyframes (a fitted model is not needed to test decoding)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from nvrloader.archive import ArchiveWriter
from nvrloader.compress import images, quant
from nvrloader.decode.base import video_key
from nvrloader.decode.layouts import keyframe_indices
from nvrloader.models import create_model
from nvrloader.video_encode import encode_frames

HEIGHT, WIDTH = 64, 80
FRAME_COUNTS = (13, 8, 21)   # a short last clip, exactly one clip, three clips


def videos(counts: Sequence[int] = FRAME_COUNTS, seed: int = 0) -> list[np.ndarray]:
    """Smooth moving gradients, uint8 [T, H, W, 3] each (codecs handle them as they would real video)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    out = []
    for n in counts:
        phase, speed = rng.uniform(0, 6, 3), rng.uniform(0.1, 0.4)
        frames = [np.stack([127 + 100 * np.sin(x / 9 + y / 13 + phase[c] + speed * t) for c in range(3)], -1)
                  for t in range(n)]
        out.append(np.clip(frames, 0, 255).astype(np.uint8))
    return out


def _meta(frames: list[np.ndarray], **extra: Any) -> dict[str, Any]:
    classes = ["A", "B"]
    return {"videos": [{"name": f"v{i}", "class_name": classes[i % 2], "label": i % 2, "split": "test",
                        "num_frames": len(f)} for i, f in enumerate(frames)],
            "classes": classes, "height": HEIGHT, "width": WIDTH, "fps": 2.0, "codec_config": {}, **extra}


def write_raw(path: Path, frames: list[np.ndarray]) -> Path:
    with ArchiveWriter(path, "raw") as writer:
        writer.set_meta(_meta(frames))
        for i, f in enumerate(frames):
            writer.put("frames", video_key(i), f)
    return path


def write_h264(path: Path, frames: list[np.ndarray]) -> Path:
    with ArchiveWriter(path, "h264") as writer:
        writer.set_meta(_meta(frames))
        for i, f in enumerate(frames):
            writer.put("streams", video_key(i), encode_frames(f, 2.0, "libx264", {"crf": "23", "preset": "ultrafast"}))
    return path


def write_dnerv(path: Path, frames: list[np.ndarray], clip_len: int = 8, keyframe_codec: str = "png",
                keyframe_quality: int = 100, **overrides: Any) -> Path:
    """A D-NeRV archive whose model has random (seeded) weights: decoding it exercises every path (the
    heads too, which a new model starts at zero)."""
    torch.manual_seed(0)
    model = create_model("dnerv", "tiny", (HEIGHT, WIDTH), clip_len=clip_len, **overrides)
    for head in [*model.flow_heads, model.rgb_head]:
        head[-1].reset_parameters()
    config = {**model.config, "resolution": [HEIGHT, WIDTH]}
    codec_config = {"model": "dnerv", "model_config": config, "clip_len": clip_len,
                    "weights": {"bits": 8.0, "prune": 0.0}, "embeddings": None,
                    "keyframes": {"codec": keyframe_codec, "quality": keyframe_quality}}
    with ArchiveWriter(path, "dnerv") as writer:
        writer.set_meta(_meta(frames, codec_config=codec_config))
        writer.put("model", "weights", quant.pack(quant.quantize_state_dict(model.state_dict(), bits=8)))
        for i, f in enumerate(frames):
            keys = f[keyframe_indices(len(f), clip_len)]
            writer.put("keyframes", video_key(i), images.encode_keyframes(keys, keyframe_codec, keyframe_quality))
    return path
