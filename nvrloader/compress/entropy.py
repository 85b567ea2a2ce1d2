"""Entropy coding of integer symbols: a self-contained ANS bitstream with its own probability model.

``encode_symbols`` / ``decode_symbols`` are an encode/decode pair in the CompressAI spirit: the
returned bytes carry everything needed to decode them, so the probability model a decoder uses is
part of the counted bytes (never estimated, never stored elsewhere).

Stream layout (varint = unsigned LEB128, zigzag for the signed offset)::

    varint  n                      number of symbols (0: nothing follows)
    zigzag  offset                 smallest symbol value
    varint  K - 1                  alphabet size: symbols lie in [offset, offset + K)
    --- only when K > 1 ---
    table   K frequencies          varints; a run of zeros is written as 0, varint(run - 1)
    uint32* ANS words              constriction's AnsCoder output, little-endian

The frequency table is the empirical histogram scaled to a total of about ``2**P``. ``P`` is chosen
per stream to minimise table bytes + coded bytes, so a short stream gets a coarse (small) table and
a long one a fine table whose rounding loss is negligible; the decoder needs only the table, which
it normalises itself.

A stream may come from an untrusted archive: every number read from it is bounded (varints to 64
bits, the symbol count to ``max_count`` or the caller's ``count``, offsets to int64, frequencies)
*before* anything is allocated or handed to constriction, whose Rust code aborts the process on an
impossible allocation rather than raising.
"""
from __future__ import annotations

import constriction
import numpy as np

MAX_ALPHABET = 1 << 17  # enough for 16-bit quantisation symbols centred on their zero point
MAX_SYMBOLS = 1 << 28  # what a stream may declare when the caller does not know the count
_MAX_FREQUENCY = 1 << 24  # stored frequencies scale to at most 2**16; anything far above is forged
_VARINT_BYTES = 10  # a 64-bit value
_INT64 = (-(1 << 63), (1 << 63) - 1)
_PRECISIONS = range(4, 17)
_WORD = np.dtype("<u4")


# -- varints ---------------------------------------------------------------------------------
def _put_varint(out: bytearray, value: int) -> None:
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _get_varint(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    for _ in range(_VARINT_BYTES):
        if pos >= len(data):
            raise ValueError("entropy stream truncated inside a varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    raise ValueError(f"entropy stream has a varint longer than {_VARINT_BYTES} bytes (corrupted)")


def _zigzag(value: int) -> int:
    return 2 * value if value >= 0 else -2 * value - 1


def _unzigzag(value: int) -> int:
    return value // 2 if value % 2 == 0 else -(value + 1) // 2


# -- frequency table -------------------------------------------------------------------------
def _quantise_counts(counts: np.ndarray, precision: int) -> np.ndarray:
    """Counts scaled to a total of about 2**precision; every present symbol keeps at least 1."""
    scaled = np.rint(counts * (2.0 ** precision / counts.sum())).astype(np.int64)
    return np.where(counts > 0, np.maximum(scaled, 1), 0)


def _table_bytes(freqs: np.ndarray) -> bytes:
    out = bytearray()
    i, size = 0, len(freqs)
    while i < size:
        if freqs[i] == 0:
            run = 1
            while i + run < size and freqs[i + run] == 0:
                run += 1
            out.append(0)
            _put_varint(out, run - 1)
            i += run
        else:
            _put_varint(out, int(freqs[i]))
            i += 1
    return bytes(out)


def _read_table(data: bytes, pos: int, size: int) -> tuple[np.ndarray, int]:
    freqs = np.zeros(size, dtype=np.int64)
    i = 0
    while i < size:
        value, pos = _get_varint(data, pos)
        if value == 0:
            run, pos = _get_varint(data, pos)
            i += run + 1
        elif value > _MAX_FREQUENCY:
            raise ValueError(f"entropy stream has a frequency of {value} (max {_MAX_FREQUENCY}; corrupted)")
        else:
            freqs[i] = value
            i += 1
    if i != size or not freqs.any():
        raise ValueError("entropy stream has a malformed frequency table")
    return freqs, pos


def _best_table(counts: np.ndarray) -> tuple[np.ndarray, bytes]:
    """The precision whose table + estimated code length is smallest."""
    present = counts > 0
    best = None
    for precision in _PRECISIONS:
        freqs = _quantise_counts(counts, precision)
        table = _table_bytes(freqs)
        code_bits = -(counts[present] * np.log2(freqs[present] / freqs.sum())).sum()
        cost = len(table) + code_bits / 8
        if best is None or cost < best[0]:
            best = (cost, freqs, table)
    return best[1], best[2]


def _model(freqs: np.ndarray) -> constriction.stream.model.Categorical:
    # Built identically on both sides from the stored integers, so the fixed-point model matches.
    return constriction.stream.model.Categorical(freqs.astype(np.float64), perfect=False)


# -- public API ------------------------------------------------------------------------------
def entropy_bits(symbols: np.ndarray) -> float:
    """Empirical (order-0) entropy of the symbols times their count, in bits: the ideal code length."""
    _, counts = np.unique(np.asarray(symbols).ravel(), return_counts=True)
    if counts.size <= 1:
        return 0.0
    p = counts / counts.sum()
    return float(-(counts * np.log2(p)).sum())


def encode_symbols(symbols: np.ndarray) -> bytes:
    """Entropy-code integer symbols (any shape, flattened) into self-contained bytes."""
    arr = np.asarray(symbols)
    if arr.dtype.kind not in "biu":
        raise TypeError(f"encode_symbols needs integer symbols, got dtype {arr.dtype}")
    flat = arr.ravel().astype(np.int64)
    out = bytearray()
    _put_varint(out, flat.size)
    if flat.size == 0:
        return bytes(out)
    low, high = int(flat.min()), int(flat.max())
    size = high - low + 1
    if size > MAX_ALPHABET:
        raise ValueError(f"symbols span {size} values ({low}..{high}); at most {MAX_ALPHABET} are supported")
    _put_varint(out, _zigzag(low))
    _put_varint(out, size - 1)
    if size == 1:
        return bytes(out)
    shifted = (flat - low).astype(np.int32)
    freqs, table = _best_table(np.bincount(shifted, minlength=size))
    out += table
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(shifted, _model(freqs))
    out += coder.get_compressed().astype(_WORD).tobytes()
    return bytes(out)


def decode_symbols(data: bytes, count: int | None = None, max_count: int = MAX_SYMBOLS) -> np.ndarray:
    """Inverse of :func:`encode_symbols`: the symbols as a flat int64 array.

    ``count``, when the caller knows it (e.g. from a payload header), must equal the stream's own;
    otherwise the stream may declare at most ``max_count`` symbols. Either way the count is checked
    before the output is allocated.
    """
    declared, pos = _get_varint(data, 0)
    if count is not None and declared != count:
        raise ValueError(f"entropy stream declares {declared} symbols, its container expects {count}")
    if declared > max_count:
        raise ValueError(f"entropy stream declares {declared} symbols (max {max_count}; corrupted)")
    if declared == 0:
        return np.zeros(0, dtype=np.int64)
    zig, pos = _get_varint(data, pos)
    low = _unzigzag(zig)
    size_minus_one, pos = _get_varint(data, pos)
    size = size_minus_one + 1
    if size > MAX_ALPHABET:
        raise ValueError(f"entropy stream declares an alphabet of {size} symbols (max {MAX_ALPHABET})")
    if low < _INT64[0] or low + size - 1 > _INT64[1]:
        raise ValueError(f"entropy stream declares symbols {low}..{low + size - 1}, outside int64 (corrupted)")
    count = declared
    if size == 1:
        return np.full(count, low, dtype=np.int64)
    freqs, pos = _read_table(data, pos, size)
    if (len(data) - pos) % _WORD.itemsize:
        raise ValueError("entropy stream has a partial 32-bit word (truncated or corrupted)")
    words = np.frombuffer(data, dtype=_WORD, offset=pos).astype(np.uint32)
    try:
        decoded = constriction.stream.stack.AnsCoder(words).decode(_model(freqs), count)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - constriction reports corrupt input with varying types,
        # a Rust panic among them (pyo3's PanicException derives from BaseException)
        raise ValueError(f"entropy stream is corrupted: {type(exc).__name__}: {exc}") from None
    return decoded.astype(np.int64) + low

