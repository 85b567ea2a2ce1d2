"""The decode side: frames back from an archive, importing nothing from building or training.

Importing this package registers a decoder for every codec (the imports below are for that side effect).
"""
from nvrloader.decode import neural, raw, streams  # noqa: F401  (registration)
from nvrloader.decode.archive_decoder import ArchiveDecoder, ArchiveMetadata, VideoMetadata
from nvrloader.decode.base import DecodeOptions, Decoder, decoder_names, open_decoder, register_decoder
from nvrloader.decode.runtime import worker_init_fn
from nvrloader.decode.stats import DecodeStats

__all__ = ["ArchiveDecoder", "ArchiveMetadata", "DecodeOptions", "DecodeStats", "Decoder", "VideoMetadata",
           "decoder_names", "open_decoder", "register_decoder", "worker_init_fn"]
