"""The Haar DWT against PyWavelets, and its inverse."""
import numpy as np
import pytest
import torch

from nvrloader.models.wavelet import dwt2, idwt2

pywt = pytest.importorskip("pywt")


def test_matches_pywavelets_coefficient_by_coefficient():
    x = torch.rand(2, 3, 6, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ll, highs = dwt2(x)
    assert ll.shape == (2, 3, 3, 5) and highs.shape == (2, 3, 3, 3, 5)
    ca, (ch, cv, cd) = pywt.dwt2(x.numpy(), "haar", mode="periodization", axes=(-2, -1))
    np.testing.assert_allclose(ll.numpy(), ca, atol=1e-12)
    for band, ref in zip(highs.unbind(-3), (ch, cv, cd)):
        np.testing.assert_allclose(band.numpy(), ref, atol=1e-12)


def test_known_block():
    # one 2x2 block [[a, b], [c, d]] = [[0, 1], [2, 3]]
    ll, highs = dwt2(torch.tensor([[0.0, 1.0], [2.0, 3.0]]))
    assert ll.item() == pytest.approx(3.0)
    assert highs.flatten().tolist() == pytest.approx([-2.0, -1.0, 0.0])


def test_inverse_matches_pywavelets_and_reconstructs():
    x = torch.rand(4, 3, 8, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ll, highs = dwt2(x)
    torch.testing.assert_close(idwt2(ll, highs), x, rtol=0, atol=1e-12)
    ref = pywt.idwt2((ll.numpy(), tuple(highs.unbind(-3)[i].numpy() for i in range(3))), "haar",
                     mode="periodization", axes=(-2, -1))
    np.testing.assert_allclose(idwt2(ll, highs).numpy(), ref, atol=1e-12)


def test_orthonormal_energy_and_gradients():
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    ll, highs = dwt2(x)
    energy = ll.pow(2).sum() + highs.pow(2).sum()
    assert energy.item() == pytest.approx(x.pow(2).sum().item())
    assert torch.autograd.gradcheck(lambda t: idwt2(*dwt2(t * 2.0)), (x,))


def test_rejects_odd_sizes_and_bad_highs():
    with pytest.raises(ValueError, match="even"):
        dwt2(torch.zeros(1, 3, 5, 4))
    with pytest.raises(ValueError, match="highs"):
        idwt2(torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 2, 2, 2))
