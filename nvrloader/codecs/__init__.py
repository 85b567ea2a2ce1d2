"""Codecs: each module registers an encode/decode pair; importing this package registers them all."""
from nvrloader.codecs import classical, neural, raw  # noqa: F401  (registration)
from nvrloader.codecs.base import (Codec, CodecError, Decoder, codec_classes, codec_names, get_codec,
                                   open_decoder, register_codec)

__all__ = ["Codec", "CodecError", "Decoder", "codec_classes", "codec_names", "get_codec", "open_decoder",
           "register_codec"]
