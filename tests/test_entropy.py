import numpy as np
import pytest

from nvrloader.compress.entropy import decode_symbols, encode_symbols


def _entropy_bytes(symbols: np.ndarray) -> float:
    counts = np.bincount(symbols - symbols.min())
    p = counts[counts > 0] / symbols.size
    return float(-(p * np.log2(p)).sum() * symbols.size / 8)


def _distributions(rng, n):
    yield "gauss8", np.clip(np.rint(rng.normal(128, 20, n)), 0, 255).astype(np.uint8)
    yield "uniform", rng.integers(0, 256, n)
    yield "laplace_signed", np.rint(rng.laplace(0, 4, n)).astype(np.int32)
    yield "sparse", np.where(rng.random(n) < 0.8, 0, rng.integers(-127, 128, n)).astype(np.int16)
    yield "skewed_binary", (rng.random(n) < 0.02).astype(np.int64)
    yield "far_offset", rng.integers(10**12, 10**12 + 50, n)


@pytest.mark.parametrize("n", [1, 2, 17, 1000, 30000])
def test_round_trip_bit_exact(n):
    rng = np.random.default_rng(n)
    for name, symbols in _distributions(rng, n):
        data = encode_symbols(symbols)
        decoded = decode_symbols(data)
        assert decoded.dtype == np.int64, name
        assert np.array_equal(decoded, symbols.astype(np.int64)), name


def test_any_shape_is_flattened():
    symbols = np.arange(24).reshape(2, 3, 4) % 5
    assert np.array_equal(decode_symbols(encode_symbols(symbols)), symbols.ravel())


@pytest.mark.parametrize("sigma", [3.0, 20.0, 60.0])
def test_within_two_percent_of_entropy(sigma):
    rng = np.random.default_rng(7)
    symbols = np.clip(np.rint(rng.normal(128, sigma, 100_000)), 0, 255).astype(np.int64)
    size = len(encode_symbols(symbols))  # header and probability table included
    ideal = _entropy_bytes(symbols)
    assert ideal <= size <= 1.02 * ideal


def test_edge_cases():
    assert decode_symbols(encode_symbols(np.zeros(0, np.int32))).size == 0
    assert len(encode_symbols(np.zeros(0, np.int32))) == 1
    constant = np.full(100_000, -7)
    data = encode_symbols(constant)
    assert len(data) <= 8  # count + value + alphabet size; nothing to code
    assert np.array_equal(decode_symbols(data), constant)


def test_bad_input():
    with pytest.raises(TypeError, match="integer"):
        encode_symbols(np.array([0.5, 1.5]))
    with pytest.raises(ValueError, match="span"):
        encode_symbols(np.array([0, 10**9]))
    data = encode_symbols(np.random.default_rng(0).integers(0, 50, 1000))
    with pytest.raises(ValueError):
        decode_symbols(data[:-1])


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    return bytes(out + bytes([value]))


@pytest.mark.parametrize("count", [2 ** 62, 2 ** 64 - 1])  # 2 ** 42 (an abort) is tested in a worker: test_hostile
def test_forged_symbol_count_is_refused_before_allocating(count):
    """constriction aborts the process on an impossible allocation, so the count is checked first."""
    data = encode_symbols(np.random.default_rng(0).integers(0, 50, 1000))
    forged = _varint(count) + data[len(_varint(1000)):]
    with pytest.raises(ValueError, match=f"declares {count} symbols"):
        decode_symbols(forged)
    with pytest.raises(ValueError, match="expects 1000"):
        decode_symbols(forged, count=1000)
    assert decode_symbols(data, count=1000).size == 1000


def test_forged_numbers_are_refused():
    with pytest.raises(ValueError, match="varint longer"):
        decode_symbols(b"\xff" * 100)
    with pytest.raises(ValueError, match="outside int64"):  # offset near the int64 limit, alphabet of 4
        decode_symbols(_varint(5) + _varint(2 ** 64 - 2) + _varint(3))
    with pytest.raises(ValueError, match="frequency"):
        decode_symbols(_varint(5) + _varint(0) + _varint(1) + _varint(2 ** 40) + _varint(1) + b"\x01\x00\x00\x00")
