"""H.264 / H.265 Annex-B byte streams: find NAL units and drop the encoder's self-description.

x264 writes a ~700-byte "x264 - core ... options" user-data SEI into every stream and offers no
option to leave it out; at the low rates the baselines are compared at it is a large share of a
short video's bytes. Decoders ignore user-data SEI, so dropping it leaves every pixel unchanged.
Used on the build side only, on our own encoder's output.
"""
from __future__ import annotations

import re

_START = re.compile(b"\x00\x00\x01")
_EMULATION = re.compile(b"\x00\x00\x03")
USER_DATA_UNREGISTERED = 5  # SEI payload type, the same in both standards


def _nal_type(codec: str, header: bytes) -> int:
    return header[0] & 0x1F if codec == "h264" else (header[0] >> 1) & 0x3F


def _is_sei(codec: str, nal_type: int) -> bool:
    return nal_type == 6 if codec == "h264" else nal_type in (39, 40)  # H.265: prefix and suffix SEI


def _sei_payload_types(rbsp: bytes) -> list[int] | None:
    """The payload type of every message in an SEI's RBSP, or None if it does not parse."""
    types, pos = [], 0
    try:
        while pos < len(rbsp) and rbsp[pos:].rstrip(b"\x00") not in (b"\x80", b""):
            values = []
            for _ in range(2):  # payload type, then payload size: runs of 0xFF plus a last byte
                value = 0
                while rbsp[pos] == 0xFF:
                    value, pos = value + 255, pos + 1
                values.append(value + rbsp[pos])
                pos += 1
            types.append(values[0])
            pos += values[1]
    except IndexError:
        return None
    return types if pos <= len(rbsp) else None


def nal_units(data: bytes) -> list[tuple[int, int, int]]:
    """(start, header, end) of every NAL unit: ``data[start:end]`` is the unit with its start code
    (and any leading zero bytes), ``header`` the offset of its first header byte."""
    headers = [m.end() for m in _START.finditer(data)]
    starts = []
    for i, header in enumerate(headers):
        start, floor = header - 3, headers[i - 1] if i else 0
        while start > floor and data[start - 1] == 0:
            start -= 1
        starts.append(start)
    return [(s, h, e) for s, h, e in zip(starts, headers, starts[1:] + [len(data)])]


def strip_user_data(data: bytes, codec: str) -> bytes:
    """``data`` without the SEI NAL units that hold only user-data-unregistered messages.

    ``codec`` is "h264" or "hevc". An SEI that does not parse, or carries any other message, is kept.
    """
    if codec not in ("h264", "hevc"):
        raise ValueError(f"codec must be h264 or hevc, got {codec!r}")
    header_len = 1 if codec == "h264" else 2
    units = nal_units(data)
    kept = [data[:units[0][0]]] if units else [data]
    for start, header, end in units:
        if header < end and _is_sei(codec, _nal_type(codec, data[header:header + 1])):
            rbsp = _EMULATION.sub(b"\x00\x00", data[header + header_len:end])
            types = _sei_payload_types(rbsp)
            if types and all(t == USER_DATA_UNREGISTERED for t in types):
                continue
        kept.append(data[start:end])
    return b"".join(kept)
