"""Exact sampling error of SGM and WSGM with exact scores on stationary Gaussian fields.

With the exact score of a Gaussian target, every step of the DDPM ancestral sampler of
``scatterlab.wsgm.diffusion.OUDiffusion`` is affine in x, so the law of the samples is Gaussian
and computable in closed form: no Monte-Carlo floor, any lattice size in seconds.

Scalar case (one eigen-direction, target N(mu, sigma) in standardised units). With
a_k = e^{-t_k}, s_k^2 = 1 - a_k^2, beta_k = 1 - a_k^2 / a_{k-1}^2, the exact noise prediction
eps = s_k (x - a_k mu) / (a_k^2 sigma + s_k^2) turns the update into

    x_{k-1} = m_k x_k + b_k mu + sqrt(v_k) z,
    m_k = (1 - beta_k / (a_k^2 sigma + s_k^2)) / sqrt(1 - beta_k),
    b_k = beta_k a_k / ((a_k^2 sigma + s_k^2) sqrt(1 - beta_k)),

with v_k = beta_k (``variance="large"``) or the posterior variance (``"small"``), v_1 = 0. From
x_N ~ N(0, 1): the samples are N(gamma mu, c) with c and gamma from the recursion
(``ddpm_gaussian``). The error is the Kullback-Leibler divergence KL(data || samples).

* SGM on a field of power spectrum P(k): the modes are independent with sigma = P(k) / var
  (var the pixel variance, the standardisation), so KL = sum_k kl(sigma_k, c_k).
* WSGM: the chain rule,
  KL(p || q) = KL(p(x_J) || q(x_J)) + sum_j E_p KL(p(xbar_j | x_j) || q(xbar_j | x_j)).
  The coarsest term is the SGM formula on x_J's spectrum. Given x_j, the standardised details
  at the coarse frequency kappa are N(g(kappa) A(kappa), Sigma(kappa)) (3 x 3, from
  ``scatterlab.wsgm.oracle.level_cross_spectrum``); all the sampler's matrices are functions
  of Sigma, so in the eigenbasis of Sigma the recursion is the scalar one per eigenvalue, and
  the mean term averages |gamma_i - 1|^2 |(U^H g)_i|^2 S_A(kappa) / c_i over A.
The condition numbers: SGM's is max sigma / min sigma over all modes (about L^2 for the
critical-like field); WSGM's is the largest over the scales of its conditional covariances.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from scatterlab.wsgm.diffusion import time_grid
from scatterlab.wsgm.dwt import DWT2d
from scatterlab.wsgm.metrics import radial_average
from scatterlab.wsgm.oracle import level_cross_spectrum
from scatterlab.wsgm.phi4 import laplacian_eigenvalues


def ddpm_gaussian(
    sigma: Tensor, n_steps: int, T: float, grid: str = "uniform", variance: str = "large"
) -> tuple[Tensor, Tensor]:
    """Output variance c and mean gain gamma of the exact-score DDPM sampler, per target
    variance sigma (any shape, float64, > 0). Returns (c, gamma), each sigma's shape."""
    ts = time_grid(n_steps, T, grid)
    sigma = sigma.double()
    c = torch.ones_like(sigma)
    gamma = torch.zeros_like(sigma)
    for k in range(n_steps, 0, -1):
        t, t_prev = float(ts[k]), float(ts[k - 1])
        dt = t - t_prev
        ak2 = math.exp(-2 * t)
        beta = -math.expm1(-2 * dt)  # 1 - abar_k / abar_{k-1}, exact for tiny steps
        den = ak2 * sigma + (1 - ak2)
        # m = (1 - beta / den) / sqrt(1 - beta), with den - beta = ak2 (sigma + e^{2 t_prev} - 1)
        # written out so that large T or few steps do not cancel to 0
        m = ak2 * (sigma + math.expm1(2 * t_prev)) / den * math.exp(dt)
        b = beta * math.sqrt(ak2) / den * math.exp(dt)
        v = 0.0
        if k > 1:
            v = beta if variance == "large" else beta * (-math.expm1(-2 * t_prev)) / (1 - ak2)
        c = m * m * c + v
        gamma = m * gamma + b
    return c, gamma


def kl_gauss(sigma: Tensor, c: Tensor) -> Tensor:
    """KL(N(0, sigma) || N(0, c)) per direction (elementwise)."""
    r = sigma / c
    return 0.5 * (r - 1 - torch.log(r))


def power_law_spectrum(size: int, eta: float, mass_L: float = 1.0) -> Tensor:
    """P(k) = (lambda(k) + (2 pi mass_L / L)^2)^(-eta/2), (L, L) float64: lambda the lattice
    Laplacian's eigenvalue. eta = 2 is the critical-like mass-term field (correlation length
    L / (2 pi mass_L)); the condition number max P / min P grows like L^eta."""
    lam = laplacian_eigenvalues(size, dtype=torch.float64)
    return (lam + (2 * math.pi * mass_L / size) ** 2) ** (-eta / 2)


def unique_modes(
    sigma: Tensor, weights: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Distinct values of sigma (to 1e-10 relative), their multiplicities, the sums of
    ``weights`` over each (zeros if None) and the index of each entry's value: the lattice
    symmetries repeat most modes, and the sampler's output depends on sigma only, so the
    recursion runs once per distinct value."""
    sigma = sigma.reshape(-1)
    keys = torch.round(torch.log(sigma) * 1e10)
    _, inv = torch.unique(keys, return_inverse=True)
    n = int(inv.max()) + 1
    counts = torch.zeros(n, dtype=torch.float64).index_add_(0, inv, torch.ones_like(sigma))
    vals = torch.zeros(n, dtype=torch.float64).index_add_(0, inv, sigma) / counts
    w = torch.zeros(n, dtype=torch.float64)
    if weights is not None:
        w.index_add_(0, inv, weights.reshape(-1).double())
    return vals, counts, w, inv


class SGMTerms:
    """Exact-score SGM on a field of spectrum spec (L, L), standardised by its pixel variance
    (as ``scatterlab.wsgm.oracle.oracle_sgm``): per-mode variances sigma = P(k) / var."""

    def __init__(self, spec: Tensor) -> None:
        sigma = spec.double() / spec.double().mean()
        self.sigma, self.counts, _, self.index = unique_modes(sigma)
        self.shape = spec.shape
        self.pixels = spec.numel()
        self.condition = float(sigma.max() / sigma.min())

    def kl(self, n_steps: int, T: float, grid: str = "uniform", variance: str = "large") -> float:
        """KL(data || samples) per pixel after n_steps sampling steps."""
        c, _ = ddpm_gaussian(self.sigma, n_steps, T, grid, variance)
        return float((kl_gauss(self.sigma, c) * self.counts).sum()) / self.pixels

    def spectrum_error(
        self, n_steps: int, T: float, grid: str = "uniform", variance: str = "large"
    ) -> float:
        """The exact value of ``scatterlab.wsgm.metrics.spectrum_error`` (per-bin relative L2
        error of the radial power spectrum) of the samples, i.e. its infinite-sample limit."""
        c, _ = ddpm_gaussian(self.sigma, n_steps, T, grid, variance)
        gen = radial_average(c[self.index].reshape(self.shape))
        ref = radial_average(self.sigma[self.index].reshape(self.shape))
        return float(((gen - ref) / ref).pow(2).mean().sqrt())


class WSGMTerms:
    """Exact-score WSGM (as ``scatterlab.wsgm.oracle.oracle_wsgm``) with J levels on a field of
    spectrum spec (L, L): per level, the eigenvalues of the standardised conditional covariance
    of the details (m, m, 3) and the mean term's weights; the coarsest low-pass as SGMTerms."""

    def __init__(self, spec: Tensor, levels: int, wavelet: str = "haar") -> None:
        dwt = DWT2d(wavelet, 1)
        self.pixels = spec.numel()
        p = spec.double()
        self.levels: list[tuple[Tensor, Tensor, Tensor]] = []
        self.conditions: list[float] = []
        for _ in range(levels):
            S = level_cross_spectrum(dwt, p).permute(2, 3, 0, 1)  # (m, m, 4, 4)
            var = torch.stack([S[..., i, i].real.mean() for i in range(4)])
            std = var.sqrt()
            saa, sda = S[..., :1, :1], S[..., 1:, :1]
            inv = (1 / std[1:]).to(torch.complex128)
            sig = S[..., 1:, 1:] - sda @ S[..., :1, 1:] / saa
            sig = inv[:, None] * sig * inv[None, :]  # standardised details given the low-pass
            sig = 0.5 * (sig + sig.conj().transpose(-1, -2))
            gain = sda[..., 0] / saa[..., 0] * std[0] * inv  # per standardised low-pass
            evals, evecs = torch.linalg.eigh(sig)
            proj = (evecs.conj().transpose(-1, -2) @ gain[..., None])[..., 0]
            s_a = S[..., 0, 0].real / var[0]  # spectrum of the standardised low-pass
            evals = evals.clamp(min=1e-300)
            self.levels.append(unique_modes(evals, proj.abs().pow(2) * s_a[..., None])[:3])
            self.conditions.append(float(evals.max() / evals.min()))
            p = S[..., 0, 0].real
        self.low = SGMTerms(p)
        self.condition = max([*self.conditions, self.low.condition])

    def kl_terms(
        self, n_steps: int, T: float, grid: str = "uniform", variance: str = "large"
    ) -> list[float]:
        """KL per pixel of [the coarsest low-pass, xbar_J, ..., xbar_1] (chain rule terms)."""
        out = [self.low.kl(n_steps, T, grid, variance) * self.low.pixels / self.pixels]
        for sig, counts, mean2 in reversed(self.levels):
            c, gamma = ddpm_gaussian(sig, n_steps, T, grid, variance)
            kl = counts * kl_gauss(sig, c) + 0.5 * (gamma - 1).pow(2) * mean2 / c
            out.append(float(kl.sum()) / self.pixels)
        return out

    def kl(self, n_steps: int, T: float, grid: str = "uniform", variance: str = "large") -> float:
        """KL(data || samples) per pixel after n_steps sampling steps at every scale."""
        return sum(self.kl_terms(n_steps, T, grid, variance))


def steps_needed(kl_at: Callable[[int], float], eps: float, n_max: int = 1 << 14) -> int | None:
    """Smallest N (to within 1/32) with kl_at(N) <= eps, assuming kl_at decreases in N; None
    when even n_max steps do not reach eps (e.g. the horizon T is too short)."""
    lo, hi = 0, 1
    while kl_at(hi) > eps:
        lo, hi = hi, 2 * hi
        if hi > n_max:
            return None if kl_at(n_max) > eps else n_max
    while hi - lo > max(1, lo // 32):
        mid = (lo + hi) // 2
        if kl_at(mid) > eps:
            lo = mid
        else:
            hi = mid
    return hi
