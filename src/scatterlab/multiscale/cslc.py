"""Score matching of the finest-scale conditional energy of phi^4 (CSLC / WC-RG, reduced).

Model (the phi^4 family, linear in its parameters theta = (kinetic, quadratic, quartic)):

    E_theta(x) = theta_kin sum_edges (x(u) - x(v))^2 / 2
                 + theta_2 sum_u x(u)^2 + theta_4 sum_u x(u)^4,

as a conditional energy of the details xbar_1 given x_1, x = W_1^T (x_1, xbar_1). phi^4 itself
is theta = (beta, -2, 1) (up to a constant), so at the finest scale the fit can be checked
against the true couplings. Hyvarinen's score matching of the conditional,

    J(theta) = E[ |grad_xbar E_theta|^2 / 2 - Laplacian_xbar E_theta ],

is quadratic in theta: theta* = E[G^T G]^{-1} E[h], with G = (W_d grad Phi_i) (the detail rows
W_d of the one-level transform applied to each feature's gradient) and h_i = tr(W_d Hess Phi_i
W_d^T): for the kinetic term tr(W_d (-Delta) W_d^T), for x^2: 2 * (3/4) L^2, for x^4:
sum_u 12 x(u)^2 (W_d^T W_d)_uu. At the coarser scales the same three features model the renormalised
energy of x_{j-1} (an ansatz: the true renormalised energy has more couplings, so these fits
have no truth to compare with), and the coarsest x_J gets the unconditional fit (the projector
is the identity). ``sample_cascade`` then samples coarse to fine with MALA (Metropolis-adjusted
Langevin), the authors' sampler for these conditionals, reporting the acceptance per scale.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from scatterlab.multiscale.hessian import neg_laplacian
from scatterlab.multiscale.wavelets import MAX_DENSE_SIZE, wavelet_blocks, wavelet_matrix
from scatterlab.wsgm.dwt import DWT2d

FEATURES = ("kinetic", "quadratic", "quartic")


def feature_gradients(x: Tensor) -> Tensor:
    """Gradients of the three features. x: (B, L, L) -> (B, 3, L, L), float64."""
    x = x.double()
    nb = sum(torch.roll(x, s, d) for s in (1, -1) for d in (-1, -2))
    return torch.stack([4 * x - nb, 2 * x, 4 * x.pow(3)], dim=1)


def _detail_terms(x: Tensor, wavelet: str) -> tuple[Tensor, Tensor, Tensor, int]:
    """The detail-projected terms of ``fit_conditional_phi4`` without dense matrices (L > 64):
    the feature gradients' details by one DWT level (the same subspace as W_d's rows); the
    diagonal of the detail projector, 1 - sum_k phi_k(u)^2 (a 2 x 2 periodic pattern: 3/4
    everywhere for Haar, not for db4); tr(W_d (-Delta) W_d^T) = 4 L^2 - (L/2)^2
    <phi, -Delta phi>; phi a low-pass atom (the low-pass atoms are its shifts by 2 sites)."""
    b, size = x.shape[0], x.shape[-1]
    dwt = DWT2d(wavelet, 1)
    grads = feature_gradients(x).reshape(b * 3, 1, size, size)
    g = dwt.forward_level(grads)[1].reshape(b, 3, -1)
    low = torch.zeros(1, 1, size // 2, size // 2, dtype=torch.float64)
    low[0, 0, 0, 0] = 1.0
    phi = dwt.inverse_level(low, torch.zeros(1, 3, size // 2, size // 2, dtype=torch.float64))
    phi = phi[0, 0]
    lap_phi = 4 * phi - sum(torch.roll(phi, sh, d) for sh in (1, -1) for d in (0, 1))
    t_kin = 4.0 * size * size - (size // 2) ** 2 * (phi * lap_phi).sum()
    # low-pass projector diagonal: sum over the atoms' shifts by 2 of phi^2, a 2 x 2 pattern
    pattern = phi.pow(2).reshape(size // 2, 2, size // 2, 2).sum(dim=(0, 2))
    diag = 1 - pattern.repeat(size // 2, size // 2).reshape(-1)
    return g, diag, t_kin, 3 * (size // 2) ** 2


def fit_conditional_phi4(
    x: Tensor, wavelet: str = "haar", conditional: bool = True
) -> dict[str, Tensor]:
    """Score-matching estimate of theta for E(xbar_1 | x_1) from fields x (B, L, L); with
    ``conditional=False`` for E(x) itself (the coarsest scale of a cascade).

    Returns {"theta": (3,), "se": (3,) standard errors from the per-sample spread of the
    estimating equations, "a": (3, 3), "h": (3,)}."""
    size = x.shape[-1]
    if conditional and size > MAX_DENSE_SIZE:
        g, diag, t_kin, n_d = _detail_terms(x, wavelet)
    else:
        if conditional:
            w = wavelet_matrix(size, 1, wavelet)
            wd = w[wavelet_blocks(size, 1)["detail_1"]]  # (3 L^2 / 4, L^2)
        else:
            wd = torch.eye(size * size, dtype=torch.float64)
        g = feature_gradients(x).reshape(x.shape[0], 3, -1) @ wd.T  # (B, 3, n_d)
        diag = (wd * wd).sum(0)  # (W_d^T W_d)_uu, (L^2,)
        t_kin = torch.trace(wd @ neg_laplacian(size) @ wd.T)
        n_d = wd.shape[0]
    a_s = g @ g.transpose(-1, -2)  # (B, 3, 3)
    x2 = x.double().reshape(x.shape[0], -1).pow(2)
    h_s = torch.stack(
        [
            t_kin.expand(x.shape[0]),
            torch.full((x.shape[0],), 2.0 * n_d, dtype=torch.float64),
            12 * (x2 * diag).sum(-1),
        ],
        dim=-1,
    )  # (B, 3)
    a, h = a_s.mean(0), h_s.mean(0)
    theta = torch.linalg.solve(a, h)
    # sandwich standard errors of the M-estimator: per-sample residuals A_s theta - h_s
    res = (a_s @ theta - h_s).reshape(x.shape[0], 3)
    cov = torch.linalg.inv(a) @ (res.T @ res / x.shape[0]) @ torch.linalg.inv(a).T
    return {"theta": theta, "se": (cov.diagonal() / x.shape[0]).sqrt(), "a": a, "h": h}


def phi4_family_energy(x: Tensor, theta: Tensor) -> tuple[Tensor, Tensor]:
    """E_theta and its gradient. x: (B, L, L) -> ((B,), (B, L, L)), float64."""
    x = x.double()
    kin = (torch.roll(x, -1, -1) - x).pow(2) + (torch.roll(x, -1, -2) - x).pow(2)
    e = (0.5 * theta[0] * kin + theta[1] * x.pow(2) + theta[2] * x.pow(4)).sum(dim=(-2, -1))
    return e, (feature_gradients(x) * theta.view(1, 3, 1, 1)).sum(1)


def mala(
    energy: Callable[[Tensor], tuple[Tensor, Tensor]],
    x: Tensor,
    n_steps: int,
    step: float = 0.01,
    target: float = 0.574,
    adapt: int | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, float, float]:
    """Metropolis-adjusted Langevin chains, one per batch element.

    energy(x) -> (E (B,), grad E (x's shape)); x: (B, ...) start. The step is adapted towards
    the ``target`` acceptance during the first ``adapt`` steps (default: half), then frozen.
    Returns (x after n_steps, acceptance rate after adaptation, final step)."""
    adapt = n_steps // 2 if adapt is None else adapt
    e, g = energy(x)
    n_acc = n_prop = 0
    dims = tuple(range(1, x.dim()))
    for k in range(n_steps):
        z = torch.randn(x.shape, dtype=x.dtype, generator=generator)
        y = x - step * g + math.sqrt(2 * step) * z
        ey, gy = energy(y)
        # log q(x | y) - log q(y | x) for the Gaussian Langevin proposals
        fwd = (y - x + step * g).pow(2).sum(dims)
        bwd = (x - y + step * gy).pow(2).sum(dims)
        log_a = (e - ey + (fwd - bwd) / (4 * step)).nan_to_num(nan=-math.inf)
        u = torch.rand(log_a.shape, dtype=x.dtype, generator=generator)
        acc = torch.log(u) < log_a
        shape = (-1,) + (1,) * (x.dim() - 1)
        x = torch.where(acc.view(shape), y, x)
        e = torch.where(acc, ey, e)
        g = torch.where(acc.view(shape), gy, g)
        rate = float(acc.double().mean())
        if k < adapt:
            step *= math.exp(rate - target)  # multiplicative Robbins-Monro adaptation
        else:
            n_acc += int(acc.sum())
            n_prop += acc.numel()
    return x, n_acc / max(n_prop, 1), step


def fit_cascade(x: Tensor, levels: int, wavelet: str = "haar") -> list[dict[str, Tensor]]:
    """Score-matching fits of a CSLC cascade on fields x (B, L, L): [coarsest (unconditional,
    on x_J), scale J, ..., scale 1] (each conditional fitted on x_{j-1} of the data)."""
    dwt = DWT2d(wavelet, levels)
    lows = dwt.lowpass_pyramid(x.double()[:, None])  # [x_0, ..., x_J], (B, 1, n, n)
    fits = [fit_conditional_phi4(lows[levels][:, 0], wavelet, conditional=False)]
    for j in range(levels, 0, -1):
        fits.append(fit_conditional_phi4(lows[j - 1][:, 0], wavelet))
    return fits


def sample_cascade(
    fits: list[dict[str, Tensor]],
    size: int,
    n: int,
    n_steps: int,
    wavelet: str = "haar",
    seed: int = 0,
    progress: bool = False,
) -> tuple[Tensor, list[float]]:
    """Coarse-to-fine MALA sampling of a fitted cascade (``fit_cascade``).

    Returns samples (n, 1, size, size) and the acceptance rate at [coarsest, J, ..., 1]."""
    from tqdm.auto import tqdm

    levels = len(fits) - 1
    dwt = DWT2d(wavelet, 1)
    g = torch.Generator().manual_seed(seed)
    m = size >> levels
    x = torch.randn(n, m, m, dtype=torch.float64, generator=g)
    theta = fits[0]["theta"]
    x, rate, _ = mala(lambda v: phi4_family_energy(v, theta), x, n_steps, generator=g)
    rates = [rate]
    bar = tqdm(range(levels, 0, -1), desc="MALA cascade", disable=not progress, leave=False)
    for j in bar:
        theta, low = fits[levels - j + 1]["theta"], x[:, None]

        def energy(d: Tensor, theta=theta, low=low) -> tuple[Tensor, Tensor]:
            # E(IDWT(x_j, xbar)); its gradient in xbar: the detail part of the DWT of grad_x E
            e, gx = phi4_family_energy(dwt.inverse_level(low, d)[:, 0], theta)
            return e, dwt.forward_level(gx[:, None])[1]

        d0 = torch.zeros(n, 3, *low.shape[-2:], dtype=torch.float64)
        d, rate, _ = mala(energy, d0, n_steps, generator=g)
        rates.append(rate)
        x = dwt.inverse_level(low, d)[:, 0]
    return x[:, None].float(), rates
