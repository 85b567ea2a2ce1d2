"""Encoders (the build side): each module registers its codec family; importing this package registers them all."""
from nvrloader.codecs import classical, neural, raw  # noqa: F401  (registration)
from nvrloader.codecs.base import (Codec, CodecError, EncodeJob, codec_names, codec_options, get_codec,
                                   register_codec)

__all__ = ["Codec", "CodecError", "EncodeJob", "codec_names", "codec_options", "get_codec", "register_codec"]
