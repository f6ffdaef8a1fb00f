"""Periodic filters of the WPH operator, built once in Fourier on the M x N grid.

Bump-steerable wavelets (Allys et al. 2020, PyWPH's default band-pass filter):

    psi_hat_{j,theta}(k) = c exp(-(|k| - xi)^2 / (xi^2 - (|k| - xi)^2)) cos^{L-1}(arg k - theta)

on 0 < |k| < 2 xi and |arg k - theta| <= pi/2 (zero elsewhere), xi = 0.85 pi / 2^j,
theta = t pi / L, c = 2^{L-1} (L-1)! / (1.29 sqrt(L (2L-2)!)). Real in Fourier and supported on a
half-plane, so complex (analytic-like) in space. The grid filter is the periodisation of the
continuous Fourier function over the aliases k + 2 pi m, m in {-1, 0, 1}^2 (the support radius
2 xi <= 1.7 pi reaches no farther), so it is a function of k mod 2 pi: a 90-degree rotation of the
grid maps the filter of theta exactly onto the filter of theta + pi/2.

Low-pass: a periodised Gaussian of standard deviation sigma = 1.105 2^j pixels and unit sum
(phi_hat(0) = 1), j may be -1.

Axis convention: the last tensor axis is x (columns), the one before it y (rows); theta = 0
points along +x in frequency.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _freq_grid(m: int, n: int, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """Angular frequencies (ky, kx), each (M, N), in [-pi, pi)."""
    ky = 2 * math.pi * torch.fft.fftfreq(m, dtype=dtype)
    kx = 2 * math.pi * torch.fft.fftfreq(n, dtype=dtype)
    return ky[:, None].expand(m, n), kx[None, :].expand(m, n)


def bump_constant(L: int) -> float:
    """c = 2^{L-1} (L-1)! / (1.29 sqrt(L (2L-2)!)): 0.693 for L = 4, 0.599 for L = 8."""
    return 2 ** (L - 1) * math.factorial(L - 1) / (1.29 * math.sqrt(L * math.factorial(2 * L - 2)))


def bump_steerable_hat(m: int, n: int, J: int, L: int) -> Tensor:
    """Fourier transforms of the J x L bump-steerable wavelets, real, shape (J, L, M, N)."""
    ky0, kx0 = _freq_grid(m, n)
    c = bump_constant(L)
    out = torch.zeros(J, L, m, n, dtype=torch.float64)
    for j in range(J):
        xi = 0.85 * math.pi / 2**j
        for t in range(L):
            theta = t * math.pi / L
            acc = torch.zeros(m, n, dtype=torch.float64)
            # aliases k + 2 pi m reach the support (|k| < 2 xi) only where 2 xi > pi
            alias = (-1, 0, 1) if 2 * xi > math.pi else (0,)
            for my in alias:
                for mx in alias:
                    ky, kx = ky0 + 2 * math.pi * my, kx0 + 2 * math.pi * mx
                    rad = torch.sqrt(kx**2 + ky**2)
                    # cos(arg k - theta) from the dot product: no branch cut of atan2
                    cosang = (kx * math.cos(theta) + ky * math.sin(theta)) / rad.clamp_min(1e-30)
                    inside = (rad > 0) & (rad < 2 * xi) & (cosang > 0)
                    den = (xi**2 - (rad - xi) ** 2).clamp_min(1e-30)
                    val = torch.exp(-((rad - xi) ** 2) / den) * cosang.clamp_min(0) ** (L - 1)
                    acc += torch.where(inside, c * val, torch.zeros_like(val))
            out[j, t] = acc
    return out


# PyWPH's mother scaling function: sigma0 = 1 / (0.496 2^-0.55 k0), k0 = 0.85 pi (1.1054 px)
SIGMA0 = 1.0 / (0.496 * 2.0**-0.55 * 0.85 * math.pi)


def gaussian_lowpass_hat(m: int, n: int, js: list[int]) -> Tensor:
    """Periodised Gaussians of sigma = sigma0 2^j px in Fourier: (len(js), M, N), as PyWPH 1.1.3.

    The samples of exp(-|u|^2 / 2 sigma^2) / (2 pi sigma^2) (unit integral, PyWPH's
    normalisation; their sum exceeds 1 by 1% at j = -1), periodised: by Poisson summation the
    DFT is the sum over aliases of exp(-sigma^2 |k + 2 pi m|^2 / 2), real and positive.
    """
    ky0, kx0 = _freq_grid(m, n)
    out = torch.zeros(len(js), m, n, dtype=torch.float64)
    for i, j in enumerate(js):
        sigma = SIGMA0 * 2.0**j
        acc = torch.zeros(m, n, dtype=torch.float64)
        for my in range(-3, 4):  # narrow Gaussians (j = -1) have wide Fourier tails
            for mx in range(-3, 4):
                ky, kx = ky0 + 2 * math.pi * my, kx0 + 2 * math.pi * mx
                acc += torch.exp(-0.5 * sigma**2 * (kx**2 + ky**2))
        out[i] = acc
    return out
