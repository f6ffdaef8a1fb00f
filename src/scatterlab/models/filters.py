"""Morlet wavelets and Gaussian low-pass filters of one-scale scattering blocks.

Filters are built once, in the spatial domain, as small real kernels: the low-pass phi and the
real and imaginary parts of L oriented Morlet wavelets psi_theta, theta = k pi / L.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SIGMA = 0.8
XI = 3 * math.pi / 4


@dataclass(frozen=True)
class FilterSpec:
    """Parameters of a one-scale filter bank.

    sigma_phi: width of the Gaussian low-pass; sigma_psi, xi: width and centre frequency of
    the Morlet wavelets; slant: ratio of the envelope widths (4 / L as in kymatio).
    """

    sigma_phi: float
    sigma_psi: float
    xi: float
    slant: float


def filter_spec(kind: str, L: int) -> FilterSpec:
    """The filter banks of the phase-collapse networks.

    "morlet": the J=1 scattering filters (phi and psi at sigma 0.8, xi 3pi/4), used with
    subsampling. "half_octave_1" / "half_octave_3_2": the factorized filters, psi at scale 1
    (no subsampling) and at scale 2^{1/2} (with subsampling), both with phi at sigma 0.8/sqrt(2),
    so that two blocks make one octave.
    """
    slant = 4.0 / L
    if kind == "morlet":
        return FilterSpec(SIGMA, SIGMA, XI, slant)
    if kind == "half_octave_1":
        return FilterSpec(SIGMA / math.sqrt(2), SIGMA, XI, slant)
    if kind == "half_octave_3_2":
        return FilterSpec(
            SIGMA / math.sqrt(2), SIGMA * math.sqrt(1.5), math.pi / math.sqrt(2), slant
        )
    raise ValueError(f"unknown filter kind {kind!r}: use morlet, half_octave_1 or half_octave_3_2")


def _grid(radius: int) -> tuple[torch.Tensor, torch.Tensor]:
    r = torch.arange(-radius, radius + 1, dtype=torch.float64)
    return torch.meshgrid(r, r, indexing="ij")


def gaussian_2d(sigma: float, radius: int) -> torch.Tensor:
    """Gaussian low-pass of unit sum, shape (2 radius + 1, 2 radius + 1)."""
    y, x = _grid(radius)
    g = torch.exp(-(x**2 + y**2) / (2 * sigma**2))
    return g / g.sum()


def morlet_2d(sigma: float, xi: float, theta: float, slant: float, radius: int) -> torch.Tensor:
    """Complex Morlet wavelet of exactly zero mean, shape (2 radius + 1, 2 radius + 1).

    A Gabor wave exp(i xi u) under an elliptic Gaussian envelope (wide sigma / slant across the
    wave), minus the multiple of the envelope that cancels its mean.
    """
    y, x = _grid(radius)
    u = x * math.cos(theta) + y * math.sin(theta)
    v = -x * math.sin(theta) + y * math.cos(theta)
    envelope = torch.exp(-(u**2 + (slant * v) ** 2) / (2 * sigma**2))
    gabor = envelope * torch.exp(1j * xi * u)
    psi = gabor - envelope * (gabor.sum() / envelope.sum())
    return psi / envelope.sum()


def kernel_radius(spec: FilterSpec) -> int:
    """Radius holding 3 standard deviations of the widest envelope."""
    widest = max(spec.sigma_phi, spec.sigma_psi / min(spec.slant, 1.0))
    return max(1, math.ceil(3 * widest))


def littlewood_paley(filters: torch.Tensor, size: int = 64) -> torch.Tensor:
    """Frame sum |phi^(w)|^2 + 1/2 sum_theta (|psi_theta^(w)|^2 + |psi_theta^(-w)|^2).

    filters: (1 + 2L, k, k) as returned by `filter_bank`. The half-sum over +-w is the frame
    operator on real signals, since theta only covers [0, pi). Returns (size, size).
    """
    L = (filters.shape[0] - 1) // 2
    hat = torch.fft.fft2(filters.to(torch.float64), s=(size, size))
    phi = hat[0]
    psi = hat[1 : 1 + L] + 1j * hat[1 + L :]
    psi_neg = torch.roll(torch.flip(psi, dims=(-2, -1)), shifts=(1, 1), dims=(-2, -1))
    return phi.abs() ** 2 + 0.5 * (psi.abs() ** 2 + psi_neg.abs() ** 2).sum(0)


def filter_bank(kind: str, L: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Real kernels [phi, Re psi_1..L, Im psi_1..L], shape (1 + 2L, k, k).

    Scaled so that the upper frame bound (max of `littlewood_paley`) is 1: the transform is
    non-expansive. Kernels are stored for cross-correlation (as conv2d computes), i.e. flipped.
    """
    spec = filter_spec(kind, L)
    radius = kernel_radius(spec)
    phi = gaussian_2d(spec.sigma_phi, radius)
    psis = [
        morlet_2d(spec.sigma_psi, spec.xi, k * math.pi / L, spec.slant, radius) for k in range(L)
    ]
    psi = torch.stack(psis)
    bank = torch.cat([phi[None], psi.real, psi.imag])
    bank = bank / littlewood_paley(bank).max().sqrt()
    return torch.flip(bank, dims=(-2, -1)).to(dtype)
