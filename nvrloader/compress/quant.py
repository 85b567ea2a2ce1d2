"""Post-training quantisation of named tensors (model weights, per-frame embeddings) into counted bytes.

One mechanism serves weights (8-bit default) and embeddings (6-bit, per tensor, as HNeRV does):
a tensor is mapped to integers ``q = round((x - low) / scale)`` in ``[0, levels]`` with
``low``/``scale`` stored (fp16 by default, fp32 when fp16 cannot hold the range) either once per
tensor or once per output channel (axis 0). ``low`` is rounded down and ``scale`` up to the stored
precision before quantising, so every element satisfies ``|x - dequant(q)| <= scale / 2`` with the
parameters the decoder actually has. ``levels = round(2**bits) - 1``; ``bits`` may be fractional
(symbols are entropy-coded, so any number of levels works), which lets a rate search vary it smoothly.

Choosing per-channel vs per-tensor ("auto"): we keep the mode that needs fewer bits for the same
quality, where quality is the quantisation noise of each output channel relative to that channel's
own energy (mean square). Raw weight MSE would be the wrong yardstick: with entropy coding one step
size for the whole tensor is MSE-optimal, so it would always pick per-tensor and quietly wipe out
channels with small weights, although a channel's effect downstream (through GELU, normalisation,
the next layer) depends on its error relative to its own scale, not on its absolute error. The
cost compared, with the high-rate rule of a uniform quantiser (halving the step costs one bit per
element and divides the noise by 4), is::

    bits = entropy_bits(symbols) + 8 * side_bytes + (numel / 2) * log2(mean_c(noise_c / energy_c))

Per-channel therefore wins when output channels differ in scale (by more than its side
information is worth); per-tensor when they are alike. Tensors smaller than ``min_numel`` (biases,
norms) are stored as fp16, non-float tensors (integer buffers) bit-exactly.

Symbols are stored relative to each row's zero point ``round(-low / scale)``, so every tensor's
symbols peak near 0 and all tensors share one entropy-coded stream (one probability table) well;
pruned zeros become symbol 0 and cost little.

Quantisation-aware fitting trains through :func:`quantised_values`, which runs the same rounding
code (``_affine``) on the model's device, so the values trained are exactly the values stored.
"""
from __future__ import annotations

import json
import math
import struct
import zlib
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .entropy import decode_symbols, encode_symbols, entropy_bits

GRANULARITIES = ("auto", "tensor", "channel")
_MAGIC = b"NVRQ"
_PACK_VERSION = 1
_HEADER = struct.Struct("<4sBII")  # magic, version, len(zlib JSON), len(side blob)
# Bounds for reading a payload that may be forged (see unpack_state).
MAX_ELEMENTS = 1 << 28  # all tensors of one payload; the largest preset (nerv ucf-L) has 127M weights
MAX_TENSORS = 1 << 16
_MAX_HEADER = 1 << 24  # inflated header bytes
_MAX_NAME = 1024
_MAX_DIMS = 8
_TORCH_DTYPES = ("float32", "float16", "bfloat16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool")
_FLOATS = ("float16", "float32", "float64")
_STORED = {"tensor": _FLOATS, "channel": _FLOATS, "float16": ("float16",),
           "raw": (*_FLOATS, "int64", "int32", "int16", "int8", "uint8", "bool")}


@dataclass
class QuantizedTensor:
    """One tensor after quantisation: integer symbols + params, or kept values (fp16 / raw)."""

    shape: tuple[int, ...]
    dtype: str                   # torch dtype name restored on unpack, e.g. "float32"
    mode: str                    # "tensor" | "channel" (quantised), "float16" | "raw" (kept)
    bits: float = 0.0
    low: np.ndarray | None = None        # [rows] in the stored parameter dtype
    scale: np.ndarray | None = None      # [rows]
    symbols: np.ndarray | None = None    # int64 [numel], q minus the row's zero point
    values: np.ndarray | None = None     # kept values for "float16" / "raw"

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def side_bytes(self) -> int:
        """Bytes of stored parameters or kept values (the symbols are coded separately)."""
        if self.values is not None:
            return self.values.nbytes
        return self.low.nbytes + self.scale.nbytes


@dataclass
class QuantizedState:
    """Quantised tensors by name, in the order given; ``pack`` turns it into bytes."""

    tensors: dict[str, QuantizedTensor]

    def modes(self) -> dict[str, int]:
        """How many tensors went each way, for reports."""
        counts: dict[str, int] = {}
        for entry in self.tensors.values():
            counts[entry.mode] = counts.get(entry.mode, 0) + 1
        return counts


# -- affine quantisation -------------------------------------------------------------------------
def _round_toward(values: np.ndarray, dtype: np.dtype, direction: float) -> np.ndarray:
    """Cast to ``dtype`` rounding down (direction=-inf) or up (+inf), so ranges are never cut."""
    cast = values.astype(dtype)
    wrong = cast > values if direction < 0 else cast < values
    return np.where(wrong, np.nextafter(cast, dtype.type(direction)), cast)


def _check_bits(bits: float) -> None:
    if not 1 <= bits <= 16:
        raise ValueError(f"bits must be in [1, 16], got {bits}")


def _levels(bits: float) -> int:
    return int(round(2.0 ** bits)) - 1


def _params(lo: np.ndarray, hi: np.ndarray, bits: float, param_dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Each row's stored ``low`` and ``scale`` from its minimum and maximum (float64)."""
    low = _round_toward(lo, param_dtype, -np.inf)
    scale = _round_toward((hi - low.astype(np.float64)) / _levels(bits), param_dtype, np.inf)
    return low, scale


def _zero_points(low: np.ndarray, scale: np.ndarray, bits: float) -> np.ndarray:
    """Each row's integer nearest to x = 0; symbols are stored relative to it."""
    scale64 = scale.astype(np.float64)
    ratio = np.divide(-low.astype(np.float64), scale64, out=np.zeros_like(scale64), where=scale64 > 0)
    return np.clip(np.rint(ratio), 0, _levels(bits)).astype(np.int64)


@dataclass
class _Affine:
    """Rows quantised: stored parameters (numpy, stored dtype), the same as float64 columns on the rows'
    device, and the integer codes ``q`` in [0, levels] (float64, rows' device)."""

    low: np.ndarray
    scale: np.ndarray
    low64: torch.Tensor
    scale64: torch.Tensor
    q: torch.Tensor

    def dequantised(self) -> torch.Tensor:
        """``low + q * scale`` in float64, as :func:`_dequantise` computes it from the stored symbols."""
        return self.low64 + self.q * self.scale64


def _affine(rows: torch.Tensor, bits: float, preferred: np.dtype) -> _Affine:
    """The one rounding rule of archives and of quantisation-aware fitting, for float64 ``rows`` [rows, n]
    on any device: per-row range -> stored parameters (on the CPU) -> codes (on the rows' device)."""
    lo, hi = (v.cpu().numpy() for v in rows.aminmax(dim=1))
    stored = _param_dtype(max(np.abs(lo).max(), np.abs(hi).max()), preferred)
    low, scale = _params(lo, hi, bits, stored)
    low64, scale64 = (torch.from_numpy(a.astype(np.float64)).to(rows.device)[:, None] for a in (low, scale))
    zero = torch.zeros((), dtype=rows.dtype, device=rows.device)
    q = torch.where(scale64 > 0, (rows - low64) / scale64, zero).round().clamp(0, _levels(bits))
    return _Affine(low, scale, low64, scale64, q)


def _quantise_rows(rows: np.ndarray, bits: float, param_dtype: np.dtype, shape: tuple[int, ...], dtype: str,
                   mode: str) -> QuantizedTensor:
    affine = _affine(torch.from_numpy(rows), bits, param_dtype)
    q = affine.q.numpy().astype(np.int64)
    symbols = (q - _zero_points(affine.low, affine.scale, bits)[:, None]).ravel()
    return QuantizedTensor(shape, dtype, mode, bits=bits, low=affine.low, scale=affine.scale, symbols=symbols)


def _dequantise(entry: QuantizedTensor) -> np.ndarray:
    """Float64 values of a quantised entry; the only dequantisation path (pack-exact by construction)."""
    rows = entry.low.size
    symbols = entry.symbols.reshape(rows, -1)
    q = symbols + _zero_points(entry.low, entry.scale, entry.bits)[:, None]
    values = entry.low.astype(np.float64)[:, None] + q * entry.scale.astype(np.float64)[:, None]
    return values.reshape(entry.shape)


def _param_dtype(magnitude: float, preferred: np.dtype) -> np.dtype:
    """fp16 unless ``low`` or ``scale`` (up to twice the largest magnitude) could overflow it."""
    if preferred == np.float16 and 2 * magnitude >= np.finfo(np.float16).max:
        return np.dtype(np.float32)
    return preferred


def _cost_bits(entry: QuantizedTensor, values: np.ndarray) -> float:
    """Bits needed at a common noise-to-signal ratio per output channel (high-rate rule: one more
    bit per element divides the noise power by 4)."""
    rows = values.reshape(values.shape[0], -1)
    noise = ((_dequantise(entry) - values) ** 2).reshape(rows.shape).mean(axis=1)
    energy = (rows ** 2).mean(axis=1)
    ratio = float(np.mean(noise / (energy + 1e-8 * energy.mean() + 1e-30)))
    return entropy_bits(entry.symbols) + 8 * entry.side_bytes() + values.size / 2 * math.log2(max(ratio, 1e-30))


def quantize_tensor(x: torch.Tensor | np.ndarray, bits: float = 8, granularity: str = "auto",
                    min_numel: int = 64, param_dtype: str = "float16") -> QuantizedTensor:
    """Quantise one tensor (see the module docstring for the modes and the "auto" criterion)."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    _check_bits(bits)
    tensor = torch.as_tensor(x).detach().cpu()
    shape, dtype = tuple(tensor.shape), str(tensor.dtype).removeprefix("torch.")
    exact = tensor.float() if tensor.dtype == torch.bfloat16 else tensor  # numpy has no bfloat16
    if not tensor.is_floating_point():
        return QuantizedTensor(shape, dtype, "raw", values=exact.numpy().copy())
    values = tensor.to(torch.float64).numpy()
    if not np.isfinite(values).all():
        raise ValueError("cannot quantise a tensor holding NaN or infinity")
    if values.size < max(min_numel, 1):
        if np.abs(values).max(initial=0.0) < np.finfo(np.float16).max:
            return QuantizedTensor(shape, dtype, "float16", values=values.astype(np.float16))
        return QuantizedTensor(shape, dtype, "raw", values=exact.numpy().copy())
    candidates = []
    if granularity in ("auto", "tensor") or values.ndim < 2:
        candidates.append(("tensor", values.reshape(1, -1)))
    if granularity in ("auto", "channel") and values.ndim >= 2:
        candidates.append(("channel", values.reshape(values.shape[0], -1)))
    best, best_cost = None, math.inf
    for mode, rows in candidates:
        entry = _quantise_rows(rows, bits, np.dtype(param_dtype), shape, dtype, mode)
        cost = _cost_bits(entry, values) if len(candidates) > 1 else 0.0
        if cost < best_cost:
            best, best_cost = entry, cost
    return best


def quantize_state_dict(state_dict: Mapping[str, torch.Tensor | np.ndarray], bits: float = 8,
                        granularity: str | Mapping[str, str] = "auto", min_numel: int = 64,
                        param_dtype: str = "float16") -> QuantizedState:
    """Quantise every tensor of a state dict (or any name -> tensor mapping), keeping its order.

    ``granularity`` may instead map names to the modes of :class:`QuantizedTensor` (absent: "auto"),
    e.g. those a quantisation-aware fit trained with: each tensor is then stored in that mode or
    refused, so the archive holds exactly what was trained ("float16"/"raw" follow from size and dtype)."""
    tensors = {}
    for name, x in state_dict.items():
        wanted = granularity if isinstance(granularity, str) else granularity.get(name, "auto")
        try:
            entry = quantize_tensor(x, bits, wanted if wanted in GRANULARITIES else "auto", min_numel, param_dtype)
        except ValueError as exc:
            raise ValueError(f"tensor {name!r}: {exc}") from None
        if not isinstance(granularity, str) and wanted not in ("auto", entry.mode):
            raise ValueError(f"tensor {name!r} cannot be stored as {wanted!r} (it quantises as {entry.mode!r})")
        tensors[name] = entry
    return QuantizedState(tensors)


def quantised_values(x: torch.Tensor, bits: float, mode: str, param_dtype: str = "float16") -> torch.Tensor:
    """What a decoder reconstructs from ``x`` stored in ``mode`` (a :class:`QuantizedTensor` mode) at
    ``bits``, computed on x's device: equal to ``dequantize`` of ``quantize_tensor`` when that picks
    ``mode``. Quantisation-aware fitting trains through these values."""
    if mode == "raw":
        return x.detach().clone()
    if mode == "float16":
        return x.detach().to(torch.float16).to(x.dtype)
    if mode not in ("tensor", "channel"):
        raise ValueError(f"unknown quantisation mode {mode!r}")
    _check_bits(bits)
    device = x.device if x.device.type != "mps" else torch.device("cpu")  # MPS has no float64
    values = x.detach().to(device, torch.float64)
    rows = values.reshape(values.shape[0] if mode == "channel" else 1, -1)
    deq = _affine(rows, bits, np.dtype(param_dtype)).dequantised()
    return deq.reshape(x.shape).to(x.device, x.dtype)


def quantize_embeddings(embeddings: torch.Tensor | np.ndarray, bits: float = 6,
                        granularity: str = "tensor", name: str = "embeddings") -> QuantizedState:
    """Per-frame embeddings, as HNeRV stores them: one min/scale (fp16, counted) for the tensor."""
    return quantize_state_dict({name: embeddings}, bits=bits, granularity=granularity, min_numel=0)


def dequantize(qs: QuantizedState) -> dict[str, torch.Tensor]:
    """The values a decoder reconstructs, as tensors of their original dtype."""
    return {name: _to_tensor(entry) for name, entry in qs.tensors.items()}


def _to_tensor(entry: QuantizedTensor) -> torch.Tensor:
    dtype = getattr(torch, entry.dtype, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown tensor dtype {entry.dtype!r} in quantised payload")
    if entry.mode == "raw":
        return torch.from_numpy(entry.values.copy()).reshape(entry.shape).to(dtype)
    values = entry.values.astype(np.float64) if entry.mode == "float16" else _dequantise(entry)
    return torch.from_numpy(np.ascontiguousarray(values)).reshape(entry.shape).to(dtype)


# -- serialisation -------------------------------------------------------------------------------
def pack(qs: QuantizedState) -> bytes:
    """Self-contained bytes: header (names, shapes, dtypes, modes), params/kept values, one ANS stream."""
    header, side, symbols = [], bytearray(), []
    for name, entry in qs.tensors.items():
        if entry.mode in ("tensor", "channel"):
            stored = entry.low.dtype.name
            side += entry.low.astype(entry.low.dtype.newbyteorder("<")).tobytes()
            side += entry.scale.astype(entry.scale.dtype.newbyteorder("<")).tobytes()
            symbols.append(entry.symbols)
        else:
            stored = entry.values.dtype.name
            side += np.ascontiguousarray(entry.values, entry.values.dtype.newbyteorder("<")).tobytes()
        header.append([name, list(entry.shape), entry.dtype, entry.mode, float(entry.bits), stored])
    meta = zlib.compress(json.dumps(header, separators=(",", ":")).encode("utf-8"), 9)
    stream = encode_symbols(np.concatenate(symbols) if symbols else np.zeros(0, np.int64))
    return _HEADER.pack(_MAGIC, _PACK_VERSION, len(meta), len(side)) + meta + bytes(side) + stream


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _parse_entry(item: Any) -> tuple[str, tuple[int, ...], str, str, float, np.dtype]:
    """One header entry, every field checked (the payload may be forged): why it is refused, if it is."""
    if not isinstance(item, list) or len(item) != 6:
        raise ValueError(f"quantised payload has a malformed header entry {str(item)[:80]}")
    name, shape, dtype, mode, bits, stored = item
    label = f"quantised payload entry {str(name)[:80]!r}"
    if not isinstance(name, str) or not 0 < len(name) <= _MAX_NAME:
        raise ValueError(f"{label}: name must be a string of 1..{_MAX_NAME} characters")
    if (not isinstance(shape, list) or len(shape) > _MAX_DIMS
            or not all(_is_int(d) and 0 <= d <= MAX_ELEMENTS for d in shape)):
        raise ValueError(f"{label}: invalid shape {str(shape)[:80]}")
    if not all(isinstance(v, str) for v in (dtype, mode, stored)) or dtype not in _TORCH_DTYPES \
            or mode not in _STORED or stored not in _STORED[mode]:
        raise ValueError(f"{label}: invalid dtype/mode/storage ({str(dtype)[:20]}, {str(mode)[:20]}, "
                         f"{str(stored)[:20]})")
    quantised = mode in ("tensor", "channel")
    if not _is_number(bits) or not (1 <= bits <= 16 if quantised else 0 <= bits <= 16):
        raise ValueError(f"{label}: invalid bits {bits!r}")
    numel = math.prod(shape)
    if numel > MAX_ELEMENTS or (quantised and numel == 0) or (mode == "channel" and len(shape) < 2):
        raise ValueError(f"{label}: shape {shape} cannot be stored as {mode}")
    return name, tuple(shape), dtype, mode, float(bits), np.dtype(stored).newbyteorder("<")


def _read_header(data: bytes, pos: int, length: int) -> list:
    """The zlib-compressed JSON header, decompressed to at most ``_MAX_HEADER`` bytes (no zip bomb)."""
    inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(data[pos:pos + length], _MAX_HEADER)
        if inflater.unconsumed_tail:
            raise ValueError(f"header inflates to more than {_MAX_HEADER} bytes")
        header = json.loads(text)
    except (zlib.error, ValueError) as exc:
        raise ValueError(f"quantised payload has a corrupted header: {exc}") from None
    if not isinstance(header, list) or len(header) > MAX_TENSORS:
        raise ValueError(f"quantised payload header must list at most {MAX_TENSORS} tensors")
    return header


def _check_shapes(entries: list, shapes: Mapping[str, Sequence[int]]) -> None:
    got = {name: shape for name, shape, *_ in entries}
    want = {name: tuple(int(d) for d in shape) for name, shape in shapes.items()}
    if got != want:
        wrong = sorted(n for n in got.keys() | want.keys() if got.get(n) != want.get(n))[:3]
        detail = ", ".join(f"{n}: {got.get(n, 'absent')} instead of {want.get(n, 'absent')}" for n in wrong)
        raise ValueError(f"quantised payload holds other tensors than expected ({detail})")


def _check_values(name: str, entry: QuantizedTensor) -> None:
    """Refuse what no encoder writes: non-finite parameters or values, symbols outside the levels."""
    floats = [a for a in (entry.low, entry.scale, entry.values) if a is not None and a.dtype.kind == "f"]
    if any(not np.isfinite(a).all() for a in floats) or (entry.scale is not None and (entry.scale < 0).any()):
        raise ValueError(f"quantised payload entry {name!r} holds non-finite or negative parameters")
    if entry.symbols is not None:
        zero = _zero_points(entry.low, entry.scale, entry.bits)
        rows = entry.symbols.reshape(zero.size, -1)
        if (rows.min(axis=1) < -zero).any() or (rows.max(axis=1) > _levels(entry.bits) - zero).any():
            raise ValueError(f"quantised payload entry {name!r} has symbols outside its {entry.bits}-bit range")


def unpack_state(data: bytes, shapes: Mapping[str, Sequence[int]] | None = None,
                 max_elements: int = MAX_ELEMENTS) -> QuantizedState:
    """Inverse of :func:`pack`, before dequantisation.

    The payload may come from an untrusted archive: every size in it is checked against the
    payload's length, ``max_elements`` and (if given) the ``shapes`` the caller expects, before
    anything is allocated or entropy-decoded. Raises ValueError.
    """
    if len(data) < _HEADER.size:
        raise ValueError("quantised payload is truncated (shorter than its header)")
    magic, version, meta_len, side_len = _HEADER.unpack_from(data)
    if magic != _MAGIC or version != _PACK_VERSION:
        raise ValueError(f"not a quantised payload (magic {magic!r}, version {version})")
    pos = _HEADER.size
    if pos + meta_len + side_len > len(data):
        raise ValueError(f"quantised payload declares {meta_len} + {side_len} header bytes, "
                         f"has {len(data) - pos} (truncated or corrupted)")
    entries = [_parse_entry(item) for item in _read_header(data, pos, meta_len)]
    if len({name for name, *_ in entries}) != len(entries):
        raise ValueError("quantised payload names a tensor twice")
    if shapes is not None:
        _check_shapes(entries, shapes)
    total = sum(math.prod(shape) for _, shape, *_ in entries)
    if total > max_elements:
        raise ValueError(f"quantised payload declares {total} elements (max {max_elements})")
    side_need = sum((2 * (shape[0] if mode == "channel" else 1) if mode in ("tensor", "channel")
                     else math.prod(shape)) * stored.itemsize for _, shape, _, mode, _, stored in entries)
    if side_need != side_len:
        raise ValueError(f"quantised payload has {side_len} bytes of parameters, its header needs {side_need}")
    pos += meta_len
    side = memoryview(data)[pos:pos + side_len]
    coded = sum(math.prod(shape) for _, shape, _, mode, _, _ in entries if mode in ("tensor", "channel"))
    symbols = decode_symbols(data[pos + side_len:], count=coded)
    tensors, side_pos, sym_pos = {}, 0, 0
    for name, shape, dtype, mode, bits, stored in entries:
        entry = QuantizedTensor(shape, dtype, mode, bits)
        if mode in ("tensor", "channel"):
            rows = shape[0] if mode == "channel" else 1
            params = np.frombuffer(side, stored, 2 * rows, side_pos).astype(stored.newbyteorder("="))
            side_pos += params.nbytes
            entry.low, entry.scale = params[:rows], params[rows:]
            entry.symbols = symbols[sym_pos:sym_pos + entry.numel]
            sym_pos += entry.numel
        else:
            values = np.frombuffer(side, stored, entry.numel, side_pos)
            entry.values = values.astype(stored.newbyteorder("=")).reshape(shape)
            side_pos += values.nbytes
        _check_values(name, entry)
        tensors[name] = entry
    return QuantizedState(tensors)


def unpack(data: bytes, shapes: Mapping[str, Sequence[int]] | None = None,
           max_elements: int = MAX_ELEMENTS) -> dict[str, torch.Tensor]:
    """Bytes from :func:`pack` -> dequantised tensors, identical to ``dequantize`` of the original.

    ``shapes`` (name -> shape) makes a payload holding any other tensors an error before decoding.
    """
    return dequantize(unpack_state(data, shapes, max_elements))


# -- pruning -------------------------------------------------------------------------------------
def prune_(model: nn.Module, ratio: float) -> dict[str, torch.Tensor]:
    """Zero the smallest-magnitude ``ratio`` of all conv/linear weights with one global threshold
    (NeRV's pruning). Returns boolean keep-masks by state-dict name, to re-apply while fine-tuning."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"prune ratio must be in [0, 1), got {ratio}")
    weights = {f"{name}.weight": module.weight for name, module in model.named_modules()
               if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd))}
    if not weights:
        return {}
    magnitudes = torch.cat([w.detach().abs().flatten().float().cpu() for w in weights.values()])
    k = int(round(ratio * magnitudes.numel()))
    threshold = torch.kthvalue(magnitudes, k).values.item() if k > 0 else -1.0
    masks = {}
    with torch.no_grad():
        for name, weight in weights.items():
            masks[name] = weight.abs() > threshold
            weight.mul_(masks[name])
    return masks
