"""Encoders (the build side), one module per codec family, registered when first asked for.

Importing this package stays light (the CLI reads `nvrloader.codecs.options` for ``--help``);
`get_codec` and `codec_names` import the encoder modules, which register themselves.
"""
from nvrloader.codecs.base import Codec, CodecError, EncodeJob, codec_names, get_codec, register_codec

__all__ = ["Codec", "CodecError", "EncodeJob", "codec_names", "get_codec", "register_codec"]
