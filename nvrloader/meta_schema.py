"""An archive's meta, declared once: what each field must be, how fields agree, which payloads each codec needs.

An archive is untrusted input. :func:`validate_meta` runs when it is opened, before any decoder
reads the meta, so decoders and the dataset can index it without guarding each access: a forged
or buggy meta is refused with the path of the offending field (``meta.videos[3].label: ...``).

Only what some reader uses is constrained; unknown keys are allowed (ignored by every reader),
except inside ``model_config``, whose every entry becomes a constructor argument and so must be
a small plain value.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from nvrloader.compress.images import KEYFRAME_CODECS

# Sane limits: far above any real dataset, far below what would exhaust a machine.
MAX_SIDE = 8192            # frame height / width in pixels
MAX_VIDEOS = 1 << 20
MAX_CLASSES = 1 << 16
MAX_FRAMES = 1 << 20       # frames of one video
MAX_VIDEO_BYTES = 1 << 33  # one decoded video, uint8 RGB (num_frames * height * width * 3)
MAX_TEXT = 4096            # characters of a name or other string
MAX_FPS = 1000.0
MAX_CLIP_LEN = 256
MAX_CONFIG_INT = 1 << 16   # any integer in model_config (widths, levels, ...) not bounded more tightly
MAX_BLOCKS = 64            # model_config entries that count modules (blocks, heads, upsampling stages)
MAX_CONFIG_ITEMS = 64      # keys of model_config, items of a list inside it
MAX_KEYS = 1024            # keys of any other object but the meta itself
MAX_META_BYTES = 1 << 28   # the meta's JSON text once inflated (~250 bytes a video at MAX_VIDEOS)

NEURAL_CODECS = ("dnerv", "nerv", "enerv", "hnerv", "snerv")
CLASSICAL_CODECS = ("h264", "h265")


class MetaError(ValueError):
    """A meta field with a wrong type or value, or fields (or payloads) that disagree."""


def video_key(video: int) -> str:
    """Payload name of archive video ``video`` (zero-padded so names sort in video order)."""
    return f"{video:06d}"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# -- field types ---------------------------------------------------------------------------------
class Field(ABC):
    """A JSON value's type and range."""

    @abstractmethod
    def check(self, value: Any, path: str) -> None:
        """Raise MetaError naming ``path`` unless ``value`` fits."""


@dataclass(frozen=True)
class Int(Field):
    lo: int
    hi: int

    def check(self, value: Any, path: str) -> None:
        if not _is_int(value) or not self.lo <= value <= self.hi:
            raise MetaError(f"{path}: expected an integer in [{self.lo}, {self.hi}], got {_show(value)}")


@dataclass(frozen=True)
class Num(Field):
    """A finite number; ``above`` is an exclusive lower bound (e.g. fps > 0)."""

    lo: float = -math.inf
    hi: float = math.inf
    above: float | None = None

    def check(self, value: Any, path: str) -> None:
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
              and self.lo <= value <= self.hi and (self.above is None or value > self.above))
        if not ok:
            low = f"> {self.above}" if self.above is not None else f">= {self.lo}"
            raise MetaError(f"{path}: expected a finite number {low} and <= {self.hi}, got {_show(value)}")


@dataclass(frozen=True)
class Text(Field):
    choices: tuple[str, ...] | None = None
    max_len: int = MAX_TEXT

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, str) or len(value) > self.max_len:
            raise MetaError(f"{path}: expected a string of at most {self.max_len} characters, got {_show(value)}")
        if self.choices is not None and value not in self.choices:
            raise MetaError(f"{path}: expected one of {', '.join(self.choices)}, got {_show(value)}")


@dataclass(frozen=True)
class Bool(Field):
    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, bool):
            raise MetaError(f"{path}: expected true or false, got {_show(value)}")


@dataclass(frozen=True)
class Null(Field):
    def check(self, value: Any, path: str) -> None:
        if value is not None:
            raise MetaError(f"{path}: expected null, got {_show(value)}")


@dataclass(frozen=True)
class Anything(Field):
    def check(self, value: Any, path: str) -> None:
        return None


@dataclass(frozen=True)
class OneOf(Field):
    options: tuple[Field, ...]

    def check(self, value: Any, path: str) -> None:
        errors = []
        for option in self.options:
            try:
                option.check(value, path)
                return
            except MetaError as err:
                errors.append(str(err).removeprefix(f"{path}: "))
        raise MetaError(f"{path}: matches none of: {'; '.join(errors)}")


@dataclass(frozen=True)
class Seq(Field):
    item: Field
    max_len: int
    min_len: int = 0

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, list) or not self.min_len <= len(value) <= self.max_len:
            raise MetaError(f"{path}: expected a list of {self.min_len}..{self.max_len} items, got {_show(value)}")
        for i, item in enumerate(value):
            self.item.check(item, f"{path}[{i}]")


@dataclass(frozen=True)
class Obj(Field):
    """An object with ``required`` and ``optional`` keys; other keys must match ``extra`` (None: refused)."""

    required: Mapping[str, Field]
    optional: Mapping[str, Field] = field(default_factory=dict)
    extra: Field | None = Anything()
    max_keys: int = MAX_KEYS

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, dict) or len(value) > self.max_keys:
            raise MetaError(f"{path}: expected an object of at most {self.max_keys} keys, got {_show(value)}")
        for key in self.required:
            if key not in value:
                raise MetaError(f"{path}: required key {key!r} is missing")
        for key, item in value.items():
            rule = self.required.get(key) or self.optional.get(key) or self.extra
            if rule is None:
                raise MetaError(f"{path}: unexpected key {_show(key)}")
            rule.check(item, f"{path}.{key}")


# -- the schema ----------------------------------------------------------------------------------
SIDE = Int(1, MAX_SIDE)
COUNT = Int(0, 1 << 62)
VIDEO = Obj(required={"name": Text(), "label": Int(-1, MAX_CLASSES - 1), "split": Text(("train", "test")),
                      "num_frames": Int(1, MAX_FRAMES)},
            optional={"class_name": OneOf((Text(), Null())), "group": OneOf((COUNT, Null()))})
CONFIG_SCALAR = OneOf((Int(-MAX_CONFIG_INT, MAX_CONFIG_INT), Num(-1e6, 1e6), Bool(), Text(max_len=64)))
BLOCKS = Int(0, MAX_BLOCKS)
MODEL_CONFIG = Obj(required={"resolution": Seq(SIDE, 2, 2)},
                   optional={"strides": OneOf((Seq(Int(1, MAX_SIDE), MAX_BLOCKS), Null())),
                             "num_res_blocks": BLOCKS, "enc_blocks": BLOCKS, "heads": BLOCKS,
                             "clip_len": Int(1, MAX_CLIP_LEN)},
                   extra=OneOf((CONFIG_SCALAR, Seq(CONFIG_SCALAR, MAX_CONFIG_ITEMS))), max_keys=MAX_CONFIG_ITEMS)
NEURAL_CONFIG = Obj(required={
    "model": Text(NEURAL_CODECS),
    "model_config": MODEL_CONFIG,
    "clip_len": Int(1, MAX_CLIP_LEN),
    "weights": Obj(required={"bits": Num(1, 16)}, optional={"prune": Num(0, 1)}),
    "embeddings": OneOf((Null(), Obj(required={"bits": Num(1, 16)}))),
    "keyframes": OneOf((Null(), Obj(required={"codec": Text(KEYFRAME_CODECS), "quality": Int(0, 100)},
                                    optional={"as_frames": Bool()}, extra=None))),
})
CLASSICAL_CONFIG = Obj(required={}, optional={
    "encoder": Text(("libx264", "libx265")), "crf": Num(0, 51), "preset": Text(max_len=64),
    "gop": OneOf((Int(1, MAX_FRAMES), Text(max_len=64))), "pix_fmt": Text(max_len=64)})
RAW_CONFIG = Obj(required={})
META = Obj(
    required={"videos": Seq(VIDEO, MAX_VIDEOS), "classes": Seq(Text(), MAX_CLASSES),
              "fps": Num(hi=MAX_FPS, above=0.0), "height": SIDE, "width": SIDE, "codec_config": Obj(required={})},
    optional={"codec": Text(), "resize_mode": Text(("stretch", "crop")), "source": Text(),
              "split": Int(1, 1 << 16), "subset": Text(("train", "test", "all"))},
    max_keys=1 << 16)


@dataclass(frozen=True)
class Payload:
    """A payload a codec's decoder reads: one per video (``name`` None) or a single named one.

    ``layout`` "bytes" is a 1-D uint8 dataset; "frames" a uint8 array [num_frames, height, width, 3].
    """

    group: str
    name: str | None = None
    layout: str = "bytes"


@dataclass(frozen=True)
class CodecSchema:
    config: Obj
    payloads: tuple[Payload, ...]
    side: str | None = None  # codec_config key that must be non-null (the codec's side information)


WEIGHTS = Payload("model", "weights")
CODEC_SCHEMAS: dict[str, CodecSchema] = {
    "raw": CodecSchema(RAW_CONFIG, (Payload("frames", layout="frames"),)),
    **{name: CodecSchema(CLASSICAL_CONFIG, (Payload("streams"),)) for name in CLASSICAL_CODECS},
    "nerv": CodecSchema(NEURAL_CONFIG, (WEIGHTS,)),
    "enerv": CodecSchema(NEURAL_CONFIG, (WEIGHTS,)),
    "hnerv": CodecSchema(NEURAL_CONFIG, (WEIGHTS, Payload("embeddings", "all")), side="embeddings"),
    "snerv": CodecSchema(NEURAL_CONFIG, (WEIGHTS, Payload("embeddings", "all")), side="embeddings"),
    "dnerv": CodecSchema(NEURAL_CONFIG, (WEIGHTS, Payload("keyframes")), side="keyframes"),
}


# -- rules across fields -------------------------------------------------------------------------
def _labels_within_classes(meta: dict, codec: str) -> None:
    classes = len(meta["classes"])
    for i, video in enumerate(meta["videos"]):
        ok = 0 <= video["label"] < classes if classes else video["label"] == -1
        if not ok:
            want = f"in 0..{classes - 1}" if classes else "-1 (the archive has no classes)"
            raise MetaError(f"meta.videos[{i}].label: {video['label']} is not a label of this archive "
                            f"(expected {want})")


def _videos_fit_in_memory(meta: dict, codec: str) -> None:
    frame = meta["height"] * meta["width"] * 3
    for i, video in enumerate(meta["videos"]):
        if video["num_frames"] * frame > MAX_VIDEO_BYTES:
            raise MetaError(f"meta.videos[{i}].num_frames: {video['num_frames']} frames of "
                            f"{meta['height']}x{meta['width']} exceed {MAX_VIDEO_BYTES} decoded bytes")


def _codec_agrees(meta: dict, codec: str) -> None:
    if "codec" in meta and meta["codec"] != codec:
        raise MetaError(f"meta.codec: {_show(meta['codec'])} disagrees with the archive's codec {codec!r}")


def _neural_config_agrees(meta: dict, codec: str) -> None:
    if codec not in NEURAL_CODECS:
        return
    cfg = meta["codec_config"]
    if cfg["model"] != codec:
        raise MetaError(f"meta.codec_config.model: {cfg['model']!r} disagrees with the codec {codec!r}")
    if cfg["model_config"]["resolution"] != [meta["height"], meta["width"]]:
        raise MetaError(f"meta.codec_config.model_config.resolution: {cfg['model_config']['resolution']} "
                        f"disagrees with height x width {meta['height']}x{meta['width']}")
    if cfg["model_config"].get("clip_len", cfg["clip_len"]) != cfg["clip_len"]:
        raise MetaError(f"meta.codec_config.model_config.clip_len: {_show(cfg['model_config']['clip_len'])} "
                        f"disagrees with clip_len {cfg['clip_len']}")
    side = CODEC_SCHEMAS[codec].side
    for key in ("embeddings", "keyframes"):
        if (cfg[key] is not None) != (key == side):
            state = "required" if key == side else "not used"
            raise MetaError(f"meta.codec_config.{key}: {state} by codec {codec!r}, got {_show(cfg[key])}")


RULES: tuple[Callable[[dict, str], None], ...] = (
    _labels_within_classes, _videos_fit_in_memory, _codec_agrees, _neural_config_agrees)


# -- payloads ------------------------------------------------------------------------------------
# group -> name -> (shape, dtype); the dtype may be None for 1-D payloads (checked when first read)
PayloadIndex = Mapping[str, Mapping[str, tuple[tuple[int, ...], np.dtype | None]]]


def _expected_shape(payload: Payload, meta: dict, video: int | None) -> tuple[int, ...] | None:
    if payload.layout == "frames":
        return (meta["videos"][video]["num_frames"], meta["height"], meta["width"], 3)
    return None  # bytes: any length


def _check_payload(index: PayloadIndex, payload: Payload, name: str, meta: dict, video: int | None) -> None:
    label = f"{payload.group}/{name}"
    found = index.get(payload.group, {}).get(name)
    if found is None:
        raise MetaError(f"payload {label} is missing (the codec needs it for "
                        + (f"meta.videos[{video}])" if video is not None else "decoding)"))
    shape, dtype = found
    expected = _expected_shape(payload, meta, video)
    if len(shape) != 1 if expected is None else (tuple(shape) != expected or dtype != np.uint8):
        want = "1-D bytes" if expected is None else f"uint8 {expected} (meta.videos[{video}])"
        raise MetaError(f"payload {label} is {dtype or ''} {tuple(shape)}, expected {want}")


def _check_payloads(meta: dict, codec: str, index: PayloadIndex) -> None:
    for payload in CODEC_SCHEMAS[codec].payloads:
        if payload.name is not None:
            _check_payload(index, payload, payload.name, meta, None)
            continue
        for video in range(len(meta["videos"])):
            _check_payload(index, payload, video_key(video), meta, video)


def validate_meta(meta: Any, codec: str, index: PayloadIndex) -> None:
    """Check ``meta`` of an archive of ``codec`` whose payloads are ``index``; raises MetaError naming
    the first problem."""
    if codec not in CODEC_SCHEMAS:
        raise MetaError(f"codec {codec!r} is not known to this nvrloader (known: {', '.join(CODEC_SCHEMAS)})")
    META.check(meta, "meta")
    CODEC_SCHEMAS[codec].config.check(meta["codec_config"], "meta.codec_config")
    for rule in RULES:
        rule(meta, codec)
    _check_payloads(meta, codec, index)
