import numpy as np
import pytest
import torch
from torch import nn

from nvrloader.compress.quant import (dequantize, pack, prune_, quantize_embeddings, quantize_state_dict,
                                      quantize_tensor, unpack)


def _rows(x: torch.Tensor, mode: str) -> torch.Tensor:
    return x.reshape(x.shape[0], -1) if mode == "channel" else x.reshape(1, -1)


def _check_error_bound(x: torch.Tensor, entry) -> None:
    deq = dequantize_one(entry).double()
    half_step = torch.from_numpy(entry.scale.astype(np.float64))[:, None] / 2
    err = _rows((x.double() - deq).abs(), entry.mode)
    slack = 1e-6 * _rows(x.double().abs(), entry.mode) + 1e-7  # float32 rounding of the dequantised value
    assert torch.all(err <= half_step + slack)


def dequantize_one(entry):
    from nvrloader.compress.quant import QuantizedState
    return dequantize(QuantizedState({"x": entry}))["x"]


@pytest.mark.parametrize("bits", [8, 6, 4, 5.5])
@pytest.mark.parametrize("granularity", ["tensor", "channel"])
def test_error_at_most_half_a_step(bits, granularity):
    torch.manual_seed(0)
    x = torch.randn(16, 8, 3, 3) * torch.logspace(-2, 1, 16)[:, None, None, None] + 0.3
    entry = quantize_tensor(x, bits=bits, granularity=granularity)
    assert entry.mode == granularity
    assert entry.low.dtype == np.float16 and entry.scale.dtype == np.float16
    assert entry.symbols.size == x.numel()
    levels = round(2 ** bits) - 1
    assert np.all(np.ptp(_rows(torch.from_numpy(entry.symbols).reshape(x.shape), granularity).numpy(), axis=1) <= levels)
    _check_error_bound(x, entry)


def test_auto_picks_per_channel_only_when_channels_differ():
    torch.manual_seed(1)
    alike = torch.randn(32, 16, 3, 3)
    differ = alike * torch.logspace(-3, 0, 32)[:, None, None, None]
    assert quantize_tensor(alike).mode == "tensor"
    assert quantize_tensor(differ).mode == "channel"


def test_small_float_and_integer_tensors_are_kept():
    bias = torch.randn(10)
    count = torch.tensor(12345, dtype=torch.int64)
    qs = quantize_state_dict({"bias": bias, "count": count})
    assert qs.tensors["bias"].mode == "float16" and qs.tensors["count"].mode == "raw"
    out = unpack(pack(qs))
    assert torch.equal(out["bias"], bias.half().float())
    assert out["count"].dtype == torch.int64 and out["count"].item() == 12345


def test_fp16_overflow_falls_back_to_fp32_params():
    x = torch.linspace(-1e5, 1e5, 1000)
    entry = quantize_tensor(x)
    assert entry.low.dtype == np.float32
    _check_error_bound(x, entry)


def _tiny_model() -> nn.Module:
    torch.manual_seed(2)
    return nn.Sequential(nn.Conv2d(3, 32, 3), nn.BatchNorm2d(32), nn.GELU(), nn.Conv2d(32, 32, 3),
                         nn.Flatten(), nn.Linear(32, 64))


def test_pack_unpack_reproduces_dequantised_values_exactly():
    state = _tiny_model().state_dict()
    qs = quantize_state_dict(state, bits=8)
    data = pack(qs)
    expected, got = dequantize(qs), unpack(data)
    assert list(got) == list(state)
    for name, tensor in state.items():
        assert got[name].dtype == tensor.dtype and got[name].shape == tensor.shape
        assert torch.equal(got[name], expected[name]), name
    fp32_bytes = 4 * sum(t.numel() for t in state.values())
    assert len(data) < 0.27 * fp32_bytes  # about 8 bits a weight, header and parameters included


def test_embeddings_six_bit_per_tensor():
    torch.manual_seed(3)
    emb = torch.randn(50, 16, 2, 4) * 3
    qs = quantize_embeddings(emb)
    entry = qs.tensors["embeddings"]
    assert entry.mode == "tensor" and entry.side_bytes() == 4  # min and scale, fp16, counted
    assert entry.symbols.max() - entry.symbols.min() <= 63
    _check_error_bound(emb, entry)
    assert torch.equal(unpack(pack(qs))["embeddings"], dequantize(qs)["embeddings"])


def test_prune_global_magnitude():
    model = _tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    weights = [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    all_abs = torch.cat([w.detach().abs().flatten() for w in weights])
    masks = prune_(model, 0.6)
    assert set(masks) == {"0.weight", "3.weight", "5.weight"}
    zeros = sum(int((w == 0).sum()) for w in weights)
    assert zeros == int((all_abs <= all_abs.kthvalue(round(0.6 * all_abs.numel())).values).sum())
    for name, mask in masks.items():  # survivors untouched, one global threshold across layers
        assert torch.equal(model.state_dict()[name][mask], before[name][mask])
    assert torch.equal(model.state_dict()["1.weight"], before["1.weight"])  # norms are not pruned
    pruned_size = len(pack(quantize_state_dict(model.state_dict())))
    full_size = len(pack(quantize_state_dict(before)))
    assert pruned_size < 0.75 * full_size


# -- forged payloads (an archive is untrusted input) ----------------------------------------------
def _parts(data: bytes):
    import json
    import zlib

    from nvrloader.compress import quant
    _, _, meta_len, side_len = quant._HEADER.unpack_from(data)
    pos = quant._HEADER.size
    return json.loads(zlib.decompress(data[pos:pos + meta_len])), data[pos + meta_len:pos + meta_len + side_len], \
        data[pos + meta_len + side_len:]


def _join(header, side: bytes, stream: bytes, raw_header: bytes | None = None) -> bytes:
    import json
    import zlib

    from nvrloader.compress import quant
    packed = zlib.compress(raw_header if raw_header is not None else json.dumps(header).encode())
    return quant._HEADER.pack(quant._MAGIC, quant._PACK_VERSION, len(packed), len(side)) + packed + side + stream


@pytest.fixture
def packed():
    return pack(quantize_state_dict(_tiny_model().state_dict()))


def test_expected_shapes_are_enforced_before_decoding(packed):
    shapes = {k: tuple(v.shape) for k, v in _tiny_model().state_dict().items()}
    assert set(unpack(packed, shapes=shapes)) == set(shapes)
    with pytest.raises(ValueError, match=r"other tensors than expected \(0.weight"):
        unpack(packed, shapes={**shapes, "0.weight": (32, 3, 3, 4)})
    with pytest.raises(ValueError, match="absent"):
        unpack(packed, shapes={k: v for k, v in shapes.items() if k != "5.bias"})


@pytest.mark.parametrize("field, value, match", [
    (1, [2 ** 20, 2 ** 20], "elements|shape"),   # 1.28 TB once dequantised
    (1, [-1, 3], "invalid shape"),
    (1, [1.5], "invalid shape"),
    (2, "complex64", "invalid dtype"),
    (3, "pickle", "invalid dtype/mode"),
    (4, float("nan"), "invalid bits"),
    (4, 40, "invalid bits"),
    (5, "object", "invalid dtype/mode/storage"),
    (0, 7, "name must be"),
])
def test_forged_header_fields_are_refused(packed, field, value, match):
    header, side, stream = _parts(packed)
    header[0][field] = value
    with pytest.raises(ValueError, match=match):
        unpack(_join(header, side, stream))


def test_forged_sizes_are_refused(packed):
    header, side, stream = _parts(packed)
    with pytest.raises(ValueError, match="parameters"):
        unpack(_join(header, side[:-2], stream))
    with pytest.raises(ValueError, match="twice"):
        unpack(_join([header[0], header[0]], side, stream))
    with pytest.raises(ValueError, match="inflates to more than"):  # a zip bomb as the header
        unpack(_join(None, side, stream, raw_header=b" " * (1 << 25)))
    with pytest.raises(ValueError, match="truncated or corrupted"):
        unpack(packed[:20])


def test_non_finite_parameters_are_refused(packed):
    header, side, stream = _parts(packed)
    quantised = next(i for i, entry in enumerate(header) if entry[3] in ("tensor", "channel"))
    offset = 0
    for entry in header[:quantised]:
        rows = entry[1][0] if entry[3] == "channel" else 1
        offset += (2 * rows if entry[3] in ("tensor", "channel") else int(np.prod(entry[1]))) * \
            np.dtype(entry[5]).itemsize
    forged = bytearray(side)
    forged[offset:offset + 2] = np.array([np.inf], "<f2").tobytes()
    with pytest.raises(ValueError, match="non-finite"):
        unpack(_join(header, bytes(forged), stream))
