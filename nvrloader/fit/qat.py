"""Quantisation-aware fitting: the fit loop's forward and backward see the weights as an archive stores them.

The straight-through estimator, done by swapping values: before each forward pass the stored
tensors of the model are overwritten with their quantised values (`quant.quantised_values`, the
archive's own rounding at its bits and with its per-tensor modes), the loss and its gradients are
computed at those values, and the float ("latent") values are put back before the optimiser
applies the gradients to them. That is w_hat = w + (q(w) - w).detach() without touching the
model's modules, state-dict names or DDP wrapper, and checkpoints (written between updates) hold
the latent weights.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Mapping

import torch
from torch import nn

from nvrloader.compress.quant import quantised_values


class FakeQuant:
    """The stored tensors of ``model`` held at their archive values inside :meth:`applied`.

    ``modes`` names every stored tensor (state-dict name -> `QuantizedTensor` mode, as
    `quantize_state_dict` chose them at ``bits``); ``masks`` (name -> bool keep-mask, from
    `quant.prune_`) keep pruned weights at zero in what is trained and, after :meth:`finish`, stored.
    """

    def __init__(self, model: nn.Module, bits: float, modes: Mapping[str, str],
                 masks: Mapping[str, torch.Tensor] | None = None) -> None:
        tensors = model.state_dict(keep_vars=True)
        missing = sorted(set(modes) - set(tensors))
        if missing:
            raise ValueError(f"quantisation modes name tensors the model does not have: {missing[:5]}")
        masks = masks or {}
        self.bits, self.modes = bits, dict(modes)
        self._targets = [(tensors[name], mode, masks.get(name)) for name, mode in modes.items() if mode != "raw"]

    def _masked(self, tensor: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return tensor if mask is None else tensor * mask.to(tensor.device)

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """Inside: every stored tensor holds what a decoder of the archive reconstructs. On exit
        (also by an exception) the latent values are restored bit for bit."""
        with torch.no_grad():
            latent = [tensor.detach().clone() for tensor, _, _ in self._targets]
            for tensor, mode, mask in self._targets:
                tensor.copy_(quantised_values(self._masked(tensor, mask), self.bits, mode))
        try:
            yield
        finally:
            with torch.no_grad():
                for (tensor, _, _), value in zip(self._targets, latent):
                    tensor.copy_(value)

    @torch.no_grad()
    def finish(self) -> None:
        """Zero the pruned latent weights (which kept learning), so quantising them stores what was trained."""
        for tensor, _, mask in self._targets:
            if mask is not None:
                tensor.copy_(self._masked(tensor, mask))
