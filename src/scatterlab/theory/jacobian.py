"""Input-output Jacobians of finite random networks and the free-probability theory of their
spectra (Pennington, Schoenholz & Ganguli 2017).

J = dx^L/dx^0 = D^L W^L ... D^1 W^1 with x^l = phi(h^l), h^l = W^l x^{l-1} + b^l and
D^l = diag(phi'(h^l)). The product is formed once, left to right: L matrix products of
(N, N) matrices, not one backward pass per column. Theory, at the fixed point q*:
  mu_k = E[phi'(sqrt(q*) z)^(2k)],  m_1 = (sigma_w^2 mu_1)^L,
  sigma^2_{JJ^T} = m_1^2 L (mu_2 / mu_1^2 - 1 - s_1)   (= L (...) at criticality, m_1 = 1),
with s_1 = -1 for Gaussian and 0 for orthogonal weights (the S-transform's first coefficient).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from scatterlab.errors import ConfigError
from scatterlab.theory.activations import Phi, check_depth, check_variances, get_phi
from scatterlab.theory.meanfield import MeanField
from scatterlab.theory.networks import check_weights, check_width, random_layers
from scatterlab.theory.quadrature import expect1

S1 = {"gaussian": -1.0, "orthogonal": 0.0}


def _real_phi(phi: str | Phi) -> Phi:
    p = get_phi(phi)
    if p.complex_input:
        raise ConfigError(
            "the Jacobian spectra are for real networks: the modulus's D^l W^l is not square "
            "in real coordinates; use tanh, erf, relu, hardtanh or linear"
        )
    return p


def mu_k(phi: str | Phi, q: float, k: int, n: int = 100) -> float:
    """mu_k = E[phi'(sqrt(q) z)^(2k)] (closed forms for linear, relu, hard-tanh)."""
    p = _real_phi(phi)
    if p.name == "linear":
        return 1.0
    if p.name == "relu":
        return 0.5
    if p.name == "hardtanh":
        return math.erf(1 / math.sqrt(2 * q))
    return float(expect1(lambda x: p.d1(x) ** (2 * k), torch.tensor(float(q)), n))


def first_layer_q(phi: str | Phi, sw2: float, sb2: float) -> float:
    """q^1 the network is started at: q* when finite and > 0, else 1 (homogeneous phi)."""
    q = float(MeanField(phi).q_star(sw2, sb2))
    if math.isfinite(q) and q > 0:
        return q
    return 1.0


def spectrum_theory(
    phi: str | Phi, sw2: float, sb2: float, depth: int, weights: str = "gaussian"
) -> dict[str, float]:
    """Theory mean m_1 and variance of the eigenvalues of J J^T (squared singular values)."""
    check_variances(sw2, sb2)
    depth = check_depth(depth)
    check_weights(weights)
    q = first_layer_q(phi, sw2, sb2)
    mu1, mu2 = mu_k(phi, q, 1), mu_k(phi, q, 2)
    m1 = (sw2 * mu1) ** depth
    var = m1**2 * depth * (mu2 / mu1**2 - 1 - S1[weights])
    return {"q_star": q, "mu1": mu1, "mu2": mu2, "chi": sw2 * mu1, "m1": m1, "var": var}


def jacobian(
    phi: str | Phi,
    sw2: float,
    sb2: float,
    width: int,
    depth: int,
    weights: str = "gaussian",
    seed: int = 0,
    q1: float | None = None,
    device: torch.device | str = "cpu",
) -> Tensor:
    """J = D^L W^L ... D^1 W^1 (width, width), float64, at an input x^0 whose h^1 has length q1
    (default: the fixed point q*, see `first_layer_q`)."""
    p = _real_phi(phi)
    check_variances(sw2, sb2)
    depth, width = check_depth(depth), check_width(width)
    q1 = first_layer_q(p, sw2, sb2) if q1 is None else q1
    g = torch.Generator(device=device).manual_seed(10_000 + seed)
    x = torch.randn(width, dtype=torch.float64, generator=g, device=device)
    # ||x||^2 / N such that q^1 = sw2 ||x||^2 / N + sb2 equals q1 (sb2 part comes from b)
    x = x / x.norm() * math.sqrt(width * max(q1 - sb2, 1e-12) / sw2)
    jac = None
    for w, b in random_layers(width, depth, sw2, sb2, weights, seed, device):
        h = w @ x + b
        d = p.d1(h)
        jac = d[:, None] * w if jac is None else d[:, None] * (w @ jac)
        x = p.f(h)
    return jac


def jacobian_spectrum(
    phi: str | Phi,
    sw2: float,
    sb2: float,
    width: int,
    depth: int,
    weights: str = "gaussian",
    seeds: int = 1,
    device: torch.device | str = "cpu",
) -> dict[str, object]:
    """Singular values of J over `seeds` networks and the measured moments of J J^T.

    Returns singular_values (seeds, width) and m1 / var: the mean over seeds of each network's
    mean and variance of the eigenvalues s^2 of J J^T, with their standard errors.
    """
    svs = []
    for s in range(seeds):
        jac = jacobian(phi, sw2, sb2, width, depth, weights, s, device=device)
        svs.append(torch.linalg.svdvals(jac))
    sv = torch.stack(svs)
    lam = sv**2
    m1 = lam.mean(-1)
    var = lam.var(-1, unbiased=False)

    def se(t: Tensor) -> float:
        return float(t.std() / math.sqrt(len(t))) if len(t) > 1 else math.nan

    return {
        "singular_values": sv,
        "m1": float(m1.mean()),
        "m1_se": se(m1),
        "var": float(var.mean()),
        "var_se": se(var),
    }
