"""Typed options of each codec family: frozen dataclasses whose fields carry their help text.

The build CLI derives its flags from these fields (help and defaults live here only); the Python
API (`nvrloader.build_archive`) takes the dataclasses themselves.
"""
from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

LOSSES = ("l1_ssim", "mse_ssim", "mse", "l1")
# D-NeRV keyframe codecs: images, or one stream per video (nvrloader.compress.images.KEYFRAME_CODECS)
KEYFRAME_CODECS = ("avif", "hevc", "av1", "png", "hevc-seq", "av1-seq")
AUTO_KEYFRAME_CODEC = "auto"   # chosen per build (nvrloader.codecs.keyframes)
STREAM_CODECS = ("h264", "h265")


def option(default: Any, help: str, *, choices: tuple | None = None, low: float | None = None,
           high: float | None = None) -> Any:
    """A dataclass field with its CLI help, allowed values and (inclusive) range."""
    return field(default=default, metadata={"help": help, "choices": choices, "low": low, "high": high})


@dataclass(frozen=True)
class CodecOptions:
    """Options every codec family extends; checks each field against its declared choices and range."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value, meta = getattr(self, f.name), f.metadata
            if value is None:
                continue
            where = f"{type(self).__name__}.{f.name}"
            if meta.get("choices") and value not in meta["choices"]:
                raise ValueError(f"{where} must be one of {', '.join(map(str, meta['choices']))}, got {value!r}")
            if meta.get("low") is not None and value < meta["low"]:
                raise ValueError(f"{where} must be >= {meta['low']}, got {value!r}")
            if meta.get("high") is not None and value > meta["high"]:
                raise ValueError(f"{where} must be <= {meta['high']}, got {value!r}")


@dataclass(frozen=True)
class RawOptions(CodecOptions):
    """Raw frames have nothing to choose."""


@dataclass(frozen=True)
class StreamOptions(CodecOptions):
    crf: float | None = option(None, "H.264/H.265 constant rate factor (default 23; searched for a target bpp)",
                               low=0, high=51)
    preset: str = option("medium", "x264/x265 preset", choices=("ultrafast", "superfast", "veryfast", "faster",
                                                                "fast", "medium", "slow", "slower", "veryslow",
                                                                "placebo"))
    gop: int | None = option(None, "keyframe interval in frames (default: the whole video)", low=1)


@dataclass(frozen=True)
class NeuralOptions(CodecOptions):
    size: str = option("tiny", "model preset: tiny | S | M | L (the architecture; the width follows a "
                       "target bpp or --params)")
    params: int | None = option(None, "size the model to this many parameters", low=1)
    epochs: int = option(100, "training epochs", low=1)
    batch_size: int | None = option(None, "clips (D-NeRV) or frames per step (default: the family's recipe)",
                                    low=1)
    lr: float | None = option(None, "peak learning rate (default: the family's recipe)", low=0)
    loss: str | None = option(None, "training loss (default: the family's recipe)", choices=LOSSES)
    warmup_start: float | None = option(None, "lr fraction the warm-up starts from (default: the family's "
                                        "recipe)", low=0, high=1)
    time_budget: float | None = option(None, "seconds of fitting; the schedule runs over them and an archive "
                                       "is still written", low=0)
    checkpoint_every: float = option(600.0, "seconds between fit checkpoints", low=0)
    num_workers: int = option(0, "DataLoader workers feeding the fit", low=0)
    weight_bits: float | None = option(None, "weight quantisation bits (default 8; searched for a target bpp)",
                                       low=1, high=16)
    prune: float = option(0.0, "global magnitude pruning ratio before quantisation", low=0, high=0.99)
    qat_epochs: int | None = option(None, "epochs of quantisation-aware fitting after the float fit, at the "
                                    "stored weight bits (default: ceil(0.15 x epochs); 0: none); with "
                                    "--time-budget they get their share of it", low=0)
    seed: int = option(0, "seed of the model initialisation and the fit", low=0)


@dataclass(frozen=True)
class EmbeddingOptions(NeuralOptions):
    embedding_bits: int = option(6, "HNeRV/SNeRV embedding quantisation bits", low=1, high=16)


@dataclass(frozen=True)
class KeyframeOptions(NeuralOptions):
    keyframe_codec: str = option(AUTO_KEYFRAME_CODEC, "D-NeRV keyframe codec: hevc-seq / av1-seq (a video's keyframes as one "
                                 "stream), an image codec, or auto (of the two streams, the one with the better "
                                 "keyframe PSNR at the keyframe budget; hevc-seq without a target)",
                                 choices=(AUTO_KEYFRAME_CODEC, *KEYFRAME_CODECS))
    keyframe_quality: int | None = option(None, "D-NeRV keyframe quality (default 50; follows the keyframe share "
                                          "at a target bpp)",
                                          low=0, high=100)
    keyframe_share: float | None = option(None, "share of a target bpp budget given to D-NeRV keyframes (default: "
                                          "the best of a few shares by short fits; the paper gives 0.75)",
                                          low=0.01, high=0.99)
    clip_len: int | None = option(None, "D-NeRV clip length in frames: keyframes at every clip boundary (default: "
                                  "searched among 2, 4, 8 with the keyframe share at a target bpp, else the paper's 8)",
                                  low=2, high=64)
    keyframe_loss: bool = option(True, "D-NeRV fits its output at keyframe positions too (false: only the frames "
                                 "between keyframes, and the decoder delivers the keyframes themselves there)")
    # the paper's ablation switches (None: the model's default)
    rgb_residual: bool | None = option(None, "D-NeRV RGB head predicts a correction to the warped keyframes")
    fusion: str | None = option(None, "D-NeRV content fusion: SAF or U-Net-style concatenation",
                                choices=("saf", "concat"))
    gtmlp: bool | None = option(None, "D-NeRV global temporal MLP")
    flow: bool | None = option(None, "D-NeRV flow-warped keyframe content (off: blended without warping)")
    multiscale_flow: bool | None = option(None, "D-NeRV flow at every scale (off: one coarse flow, resized)")
    flow_prior: bool | None = option(None, "D-NeRV adds the optical flow between the decoded keyframes to its "
                                     "flows (default on; off: the paper's model)")

    def model_overrides(self) -> dict[str, Any]:
        """Constructor arguments of the D-NeRV model these options set (clip length and switches);
        ``flow=False`` turns the flow prior off too unless it is set."""
        switches = ("rgb_residual", "fusion", "gtmlp", "flow", "multiscale_flow", "flow_prior")
        out = {k: getattr(self, k) for k in ("clip_len", *switches) if getattr(self, k) is not None}
        if self.flow is False and self.flow_prior is None:
            out["flow_prior"] = False
        return out


# Neural options by a model family's layout: a new family with an existing layout needs nothing here.
OPTIONS_BY_LAYOUT: dict[str, type[NeuralOptions]] = {"time": NeuralOptions, "embedding": EmbeddingOptions,
                                                     "subband": EmbeddingOptions, "clip": KeyframeOptions}


def codec_options() -> dict[str, type[CodecOptions]]:
    """Every codec name with its options dataclass; neural codec names come from the model registry."""
    from nvrloader.models import list_models, model_family

    return {"raw": RawOptions, **{c: StreamOptions for c in STREAM_CODECS},
            **{n: OPTIONS_BY_LAYOUT[model_family(n).layout] for n in list_models()}}


# ----------------------------------------------------------------------------- the CLI derived from them

def _scalar_type(cls: type, name: str) -> type:
    """int / float / str from a field's annotation (``X | None`` counts as X)."""
    hint = typing.get_type_hints(cls)[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def parse_bool(text: str) -> bool:
    """'true'/'false' (also yes/no, on/off, 1/0) from the command line."""
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def option_value(cls: type[CodecOptions], name: str, text: str) -> Any:
    """A field's value from text, typed as the field is (for options given as key=value)."""
    if name not in {f.name for f in dataclasses.fields(cls)}:
        raise ValueError(f"{cls.__name__} has no option {name!r}")
    kind = _scalar_type(cls, name)
    try:
        return parse_bool(text) if kind is bool else kind(text)
    except (ValueError, argparse.ArgumentTypeError) as err:
        raise ValueError(f"{cls.__name__}.{name}: {err}") from None


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_option_arguments(parser: argparse.ArgumentParser, families: dict[str, type[CodecOptions]]
                         ) -> dict[str, set[str]]:
    """Add one flag per option field of any codec; return which codecs own each field.

    Every flag defaults to None, so a flag given for a codec that does not own it can be refused.
    """
    owners: dict[str, set[str]] = {}
    groups: dict[type, argparse._ArgumentGroup] = {}
    for codec, cls in families.items():
        for f in dataclasses.fields(cls):
            if f.name not in owners:
                owner_cls = next(c for c in reversed(cls.__mro__) if f.name in getattr(c, "__dataclass_fields__", {}))
                names = "/".join(c for c, k in families.items() if issubclass(k, owner_cls))
                group = groups.setdefault(owner_cls, parser.add_argument_group(f"{names} options"))
                default = "" if f.default is None else f" (default: {f.default})"
                kind = _scalar_type(cls, f.name)
                group.add_argument(flag(f.name), dest=f.name, type=parse_bool if kind is bool else kind,
                                   choices=f.metadata.get("choices"), help=f.metadata["help"] + default)
            owners.setdefault(f.name, set()).add(codec)
    return owners


def options_from_values(codec: str, cls: type[CodecOptions], values: dict[str, Any],
                        owners: dict[str, set[str]]) -> CodecOptions:
    """The options of ``codec`` from parsed flag values (None = not given); foreign flags are refused."""
    stray = sorted(k for k, v in values.items() if v is not None and k in owners and codec not in owners[k])
    if stray:
        raise ValueError(f"{', '.join(map(flag, stray))} do(es) not apply to codec {codec!r}")
    own = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in own and v is not None})


def options_to_argv(options: CodecOptions) -> list[str]:
    """Flags that reproduce ``options`` (fields left at their default are omitted)."""
    argv: list[str] = []
    for f in dataclasses.fields(options):
        value = getattr(options, f.name)
        if value != f.default:
            argv += [flag(f.name), str(value)]
    return argv
