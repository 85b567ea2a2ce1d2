"""Quantisation-aware fitting: what is trained is what the archive stores, gradients pass straight
through the rounding to the float weights, QAT resumes exactly and wins back what rounding loses.

Uses the tiny conv decoder of test_fit (a few thousand weights), so every test takes about a second.
"""
from __future__ import annotations

import copy
import math

import pytest
import torch

from nvrloader.codecs.neural import pack_weights
from nvrloader.codecs.options import NeuralOptions
from nvrloader.codecs.qat import qat_epochs, stored_modes, time_shares
from nvrloader.compress import quant
from nvrloader.fit import CHECKPOINT_NAME, FakeQuant, fit, fit_loss
from test_fit import Interrupting, TinyClips, config, forward_fn, make_model, one_thread, psnr_of  # noqa: F401

CPU = torch.device("cpu")
FINGERPRINT = {"dataset": "tiny", "qat": True}


@pytest.mark.parametrize("bits", [3, 4.5, 6, 8])
@pytest.mark.parametrize("shape, scale", [((64, 32, 3, 3), 0.05), ((300, 7), 3.0), ((5000,), 1e-3),
                                          ((30, 3, 1, 1), 1e4), ((40,), 1.0)])
def test_quantised_values_are_the_archives_dequantised_values(bits, shape, scale):
    torch.manual_seed(round(bits * 10) + len(shape))
    x = (torch.randn(shape) * torch.logspace(-2, 0, shape[0]).view(-1, *[1] * (len(shape) - 1)) + 0.2) * scale
    for granularity in ("tensor", "channel", "auto"):
        qs = quant.quantize_state_dict({"x": x}, bits, granularity)
        stored = quant.unpack(quant.pack(qs))["x"]
        assert torch.equal(quant.quantised_values(x, bits, qs.tensors["x"].mode), stored)


def test_an_archive_refuses_a_mode_other_than_the_trained_one():
    x = torch.randn(8, 100)
    with pytest.raises(ValueError, match="cannot be stored as 'channel'"):
        quant.quantize_state_dict({"x": x[0]}, 6, {"x": "channel"})   # 1-D: per tensor only
    assert quant.quantize_state_dict({"x": x}, 6, {"x": "channel"}).tensors["x"].mode == "channel"


def test_fake_quant_holds_the_archive_values_and_restores_the_float_ones_exactly():
    model = make_model()
    latent = copy.deepcopy(model.state_dict())
    modes = stored_modes(latent, 4)
    assert set(modes.values()) >= {"tensor", "float16"}   # small biases are kept as fp16, also in training
    archive = quant.unpack(pack_weights(latent, 4, modes))
    fake = FakeQuant(model, 4, modes)
    with fake.applied():
        for name, value in model.state_dict().items():
            assert torch.equal(value, archive[name]), name
    for name, value in model.state_dict().items():
        assert torch.equal(value, latent[name]), name
    with pytest.raises(RuntimeError, match="boom"), fake.applied():
        raise RuntimeError("boom")
    assert all(torch.equal(v, latent[n]) for n, v in model.state_dict().items())
    with pytest.raises(ValueError, match="does not have"):
        FakeQuant(model, 4, {**modes, "nope.weight": "tensor"})


def test_gradients_pass_straight_through_to_the_float_weights():
    data = TinyClips()
    batch = {"code": data.codes[:4], "target": data.targets[:4]}
    model = make_model()
    modes = stored_modes(model.state_dict(), 4)
    reference = copy.deepcopy(model)          # the stored model, trained as a float model would be
    reference.load_state_dict(quant.unpack(pack_weights(model.state_dict(), 4, modes)))
    fit_loss(forward_fn(reference, batch)).backward()
    with FakeQuant(model, 4, modes).applied():
        fit_loss(forward_fn(model, batch)).backward()
    for (name, p), (_, r) in zip(model.named_parameters(), reference.named_parameters()):
        assert p.grad is not None and p.grad.abs().sum() > 0, name   # rounding has zero gradient; STE does not
        assert torch.allclose(p.grad, r.grad, rtol=1e-5, atol=1e-8), name


def test_a_qat_step_moves_the_float_weights_by_less_than_a_quantisation_step():
    model = make_model()
    before = copy.deepcopy(model.state_dict())
    fake = FakeQuant(model, 4, stored_modes(before, 4))
    fit(model, TinyClips(), forward_fn, config(epochs=1, batch_size=8, lr=1e-6), CPU, FINGERPRINT, fake_quant=fake)
    moved = {n: (v - before[n]).abs().max().item() for n, v in model.state_dict().items()}
    assert all(0 < m < 1e-5 for m in moved.values()), moved


def test_pruned_weights_stay_zero_in_what_is_trained_and_stored():
    model = make_model()
    masks = quant.prune_(model, 0.5)
    fake = FakeQuant(model, 6, stored_modes(model.state_dict(), 6), masks)
    fit(model, TinyClips(), forward_fn, config(epochs=2), CPU, FINGERPRINT, fake_quant=fake)
    assert any(torch.any(model.state_dict()[name][~mask] != 0) for name, mask in masks.items())  # they learn...
    fake.finish()                                                                                # ...until stored
    for name, mask in masks.items():
        assert torch.all(model.state_dict()[name][~mask] == 0), name


@pytest.fixture(scope="module")
def fitted() -> torch.nn.Module:
    """The tiny decoder fitted in float (200 steps): good enough that 3-bit rounding costs it dB."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model = fit(make_model(), TinyClips(), forward_fn, config(epochs=100, batch_size=4, lr=1e-2), CPU,
                FINGERPRINT).model
    torch.set_num_threads(threads)
    return model


def test_qat_wins_back_what_rounding_loses_beyond_what_more_float_epochs_would(fitted):
    data, bits = TinyClips(), 3
    modes = stored_modes(fitted.state_dict(), bits)
    float_psnr = psnr_of(fitted, data)
    with FakeQuant(fitted, bits, modes).applied():
        rounded = psnr_of(fitted, data)
    stored = {}
    for name, fake_quant in (("float", False), ("qat", True)):   # the same extra epochs, with and without QAT
        model = copy.deepcopy(fitted)
        fake = FakeQuant(model, bits, modes)
        fit(model, data, forward_fn, config(epochs=15, batch_size=4, lr=1e-3, warmup=0.0), CPU, FINGERPRINT,
            fake_quant=fake if fake_quant else None)
        with fake.applied():
            stored[name] = psnr_of(model, data)
    assert float_psnr - rounded > 2.0, (float_psnr, rounded)
    assert stored["qat"] > rounded + 0.5 and stored["qat"] > stored["float"] + 0.5, (rounded, stored)


def test_qat_resumes_exactly_after_an_interruption(fitted, tmp_path):
    modes = stored_modes(fitted.state_dict(), 4)

    def qat(forward=forward_fn, **kw):
        model = copy.deepcopy(fitted)
        fit(model, TinyClips(), forward, config(epochs=3, lr=1e-3, **kw), CPU, FINGERPRINT,
            fake_quant=FakeQuant(model, 4, modes))
        return model.state_dict()

    whole = qat()
    with pytest.raises(KeyboardInterrupt):
        qat(Interrupting(5, "keyboard"), checkpoint_dir=tmp_path)
    saved = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    assert saved["global_step"] == 4
    for name, value in saved["model"].items():      # the float weights were saved, not their quantised values
        assert not torch.equal(value, quant.quantised_values(value, 4, modes[name])) or modes[name] == "raw", name
    resumed = qat(checkpoint_dir=tmp_path, resume=True)
    for name, value in resumed.items():
        assert torch.equal(value, whole[name]), name


def test_qat_epochs_and_time_budget_shares():
    assert qat_epochs(NeuralOptions(epochs=5)) == 1 and qat_epochs(NeuralOptions(epochs=100)) == 15
    assert qat_epochs(NeuralOptions(epochs=100, qat_epochs=0)) == 0
    with pytest.raises(ValueError, match="qat_epochs must be >= 0"):
        NeuralOptions(qat_epochs=-1)
    float_part, qat_part = time_shares(600.0, 20, 3)
    assert math.isclose(float_part + qat_part, 600.0) and math.isclose(qat_part, 600 * 3 / 23)
    assert time_shares(None, 20, 3) == (None, None) and time_shares(60.0, 20, 0) == (60.0, 0.0)
