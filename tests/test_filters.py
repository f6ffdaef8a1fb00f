"""The fixed filter banks: zero mean, frame bounds, and phase collapse under translation."""

import math

import pytest
import torch

from scatterlab.models.filters import filter_bank, littlewood_paley
from scatterlab.models.scattering import Wavelet

KINDS = ["morlet", "half_octave_1", "half_octave_3_2"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("L", [4, 8])
def test_wavelets_have_zero_mean(kind: str, L: int) -> None:
    bank = filter_bank(kind, L, torch.float64)
    psi = bank[1:]
    assert psi.sum(dim=(-2, -1)).abs().max() < 1e-12
    # The low-pass has a non-zero mean: it keeps the average of the image.
    assert bank[0].sum() > 0.5 * bank[0].abs().sum()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("L", [4, 8])
def test_frame_bounds(kind: str, L: int) -> None:
    """The undecimated transform is a frame: A ||x||^2 <= ||Wx||^2 <= B ||x||^2, B = 1."""
    lp = littlewood_paley(filter_bank(kind, L, torch.float64))
    assert lp.max().item() == pytest.approx(1.0, abs=1e-9)
    # Every frequency is covered: phi at low frequencies, the wavelets elsewhere. The
    # 2^{1/2}-scale wavelets leave the highest frequencies (the corners) to the scale-1 block
    # before them, so their own lower bound is smaller.
    lower = 0.04 if kind == "half_octave_3_2" else 0.12
    assert lp.min().item() > lower


def test_frame_bounds_on_signals() -> None:
    """The energy identity behind the bounds, checked on random periodic signals."""
    bank = filter_bank("morlet", 4, torch.float64)
    lp = littlewood_paley(bank, size=32)
    x = torch.randn(16, 32, 32, dtype=torch.float64)
    k = bank.shape[-1]
    # circular correlation with the (flipped) kernels = circular convolution with the filters
    xp = torch.nn.functional.pad(x[:, None], (k // 2,) * 4, mode="circular")
    y = torch.nn.functional.conv2d(xp, bank[:, None])
    # |Re|^2 + |Im|^2 of each x * psi_theta: counted once per theta, which on real signals is
    # the symmetrized half-sum of littlewood_paley
    energy = y.pow(2).sum((1, 2, 3))
    ratio = energy / x.pow(2).sum((-2, -1))
    assert (ratio >= lp.min() - 1e-9).all() and (ratio <= lp.max() + 1e-9).all()
    assert (ratio > 0.5).all()  # random signals have most energy where the frame is tight


def _smooth_image(size: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 1, size, size, generator=g)
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
    k = (k[:, None] * k[None]) / 256
    return torch.nn.functional.conv2d(x, k[None, None], padding=2)


def test_translation_moves_phase_not_modulus() -> None:
    """A one-pixel shift rotates the phase of x * psi but barely changes |x * psi|."""
    wavelet = Wavelet(L=4, kind="morlet", subsample=False)
    x = _smooth_image()
    shifted = torch.roll(x, shifts=1, dims=-1)
    _, re, im = wavelet(x, 0)
    _, re_s, im_s = wavelet(shifted, 0)
    z = torch.complex(re, im)[..., 8:-8, 8:-8]
    z_s = torch.roll(torch.complex(re_s, im_s), shifts=-1, dims=-1)[..., 8:-8, 8:-8]
    # compare at the same spatial position as the original (undo the shift on the grid)
    z_s_unaligned = torch.complex(re_s, im_s)[..., 8:-8, 8:-8]
    linear_change = (z_s_unaligned - z).abs().norm() / z.abs().norm()
    modulus_change = (z_s_unaligned.abs() - z.abs()).norm() / z.abs().norm()
    assert linear_change > 0.5  # the phase moved a lot (xi = 3 pi / 4 per pixel)
    assert modulus_change < 0.5 * linear_change
    # undoing the shift on the grid recovers the coefficients exactly (covariance)
    assert torch.allclose(z_s, z, atol=1e-5)
    assert math.isfinite(linear_change.item())
