"""Quantisation-aware fitting (QAT) of the neural codecs: a few epochs after the float fit, with every
forward and backward pass seeing the weights exactly as the archive stores them (`nvrloader.fit.qat`).

Order: the weight bits are chosen on the float model first (fixed, or searched for a target bpp),
then QAT runs at those bits with the per-tensor modes the archive picks there, and the archive
stores the result at the same bits and modes. Searching first keeps the QAT at the bits it is
stored with; the reverse (QAT at a guess, then search) would store at bits it was not trained for.
QAT moves the weights a little, so at a target the size is checked again afterwards: if it grew
past the search's tolerance, the bits are searched again below the trained ones (the report then
shows ``qat.bits`` above ``weights.bits``; it did not happen in the measured builds).

QAT resumes like the float fit: its checkpoint sits in ``<checkpoint dir>/qat-<digest>/``, named
after where it starts from (the float weights and the bits), so a float fit that was itself resumed
and continued, or a resumed build at other bits, starts a fresh QAT instead of mixing with a stale
one; other QAT settings changed on resume are refused, as for the float fit.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import shutil
from typing import Any, Callable, Mapping

import torch
from torch import nn
from torch.utils.data import Dataset

from nvrloader.codecs.options import NeuralOptions
from nvrloader.compress import quant
from nvrloader.fit import CHECKPOINT_NAME, FakeQuant, FitConfig, FitOutput, FitResult, fit

QAT_SHARE = 0.15        # default QAT epochs, as a share of the float fit's (rounded up)
QAT_LR_SCALE = 0.1      # QAT's peak lr relative to the float fit's; a cosine takes it to 0, without warm-up
# At a target bpp (weight bits searched), a build with QAT sizes its model for 6-bit weights instead of
# 8: a larger model whose weights are trained for their rounding. On the demo frames at 0.3 bpp this
# gave D-NeRV +0.16 dB and NeRV +0.34 dB over sizing for 8 bits (README, "Quantisation-aware fitting").
QAT_PLANNED_BITS = 6.0


def qat_epochs(options: NeuralOptions) -> int:
    """QAT epochs of a build: the option, or QAT_SHARE of the float fit's epochs (at least 1)."""
    return math.ceil(QAT_SHARE * options.epochs) if options.qat_epochs is None else options.qat_epochs


def time_shares(time_budget: float | None, epochs: int, qat: int) -> tuple[float | None, float | None]:
    """The float fit's and QAT's parts of a time budget, in proportion to their epochs (the total is the
    budget, so equal-time comparisons between codecs stay fair)."""
    if time_budget is None:
        return None, None
    share = qat / (epochs + qat)
    return time_budget * (1 - share), time_budget * share


def stored_modes(state: Mapping[str, torch.Tensor], bits: float) -> dict[str, str]:
    """Each stored tensor's mode as the archive picks it at ``bits`` (per tensor or per channel, fp16, raw)."""
    return {name: entry.mode for name, entry in quant.quantize_state_dict(state, bits).tensors.items()}


def start_digest(state: Mapping[str, torch.Tensor], bits: float) -> str:
    """A short hash of a state dict's names and values and the bits: where a QAT starts from."""
    digest = hashlib.sha256(repr(float(bits)).encode())
    for name, tensor in state.items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().double().numpy().tobytes())
    return digest.hexdigest()[:16]


def quantisation_aware_fit(trainable: nn.Module, items: Dataset, forward: Callable[[nn.Module, dict], FitOutput],
                           float_config: FitConfig, epochs: int, time_budget: float | None, fake_quant: FakeQuant,
                           state: Mapping[str, torch.Tensor], device: torch.device, fingerprint: dict[str, Any], main: bool) -> FitResult:
    """Fit ``trainable`` for ``epochs`` (or ``time_budget`` seconds) through ``fake_quant``, at
    QAT_LR_SCALE of the float fit's lr.

    ``state`` (the float stored weights QAT starts from) and the bits name the checkpoint folder; ``fingerprint``
    is the float fit's. On return the pruned weights are zero again (`FakeQuant.finish`)."""
    digest = start_digest(state, fake_quant.bits)
    folder = None
    if float_config.checkpoint_dir is not None:
        folder = float_config.checkpoint_dir / f"qat-{digest}"
        if main:  # QATs from other weights or bits can never be resumed
            for stale in float_config.checkpoint_dir.glob("qat-*"):
                if stale != folder:
                    shutil.rmtree(stale, ignore_errors=True)
    config = dataclasses.replace(
        float_config, epochs=epochs, lr=float_config.lr * QAT_LR_SCALE, warmup=0.0, time_budget=time_budget,
        checkpoint_dir=folder,
        resume=float_config.resume and folder is not None and (folder / CHECKPOINT_NAME).exists())
    identity = {"float_fit": fingerprint, "start": digest, "bits": fake_quant.bits, "modes": fake_quant.modes}
    result = fit(trainable, items, forward, config, device, identity, fake_quant=fake_quant)
    fake_quant.finish()
    return result
