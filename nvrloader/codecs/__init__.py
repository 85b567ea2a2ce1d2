"""Encoders (the build side), one module per codec family, registered when first asked for.

Importing this package (or `nvrloader.codecs.options`, which the CLI reads for ``--help``) loads
nothing; `get_codec` and `codec_names` import the encoder modules, which register themselves.
"""
from importlib import import_module
from typing import Any

__all__ = ["Codec", "CodecError", "EncodeJob", "codec_names", "get_codec", "register_codec"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'nvrloader.codecs' has no attribute {name!r}")
    return getattr(import_module("nvrloader.codecs.base"), name)
