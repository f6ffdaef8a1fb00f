"""The full spectral density of J J^T for a deep random network (Pennington, Schoenholz &
Ganguli 2017, "Resurrecting the sigmoid"), by free multiplicative convolution.

J = D^L W^L ... D^1 W^1 at the fixed point q*; the D^l and W^l are asymptotically free, so
    S_{J J^T}(m) = S_{D^2}(m)^L S_{W^T W}(m)^L.
- W Gaussian (entries N(0, sigma_w^2 / N)): W^T W is Marchenko-Pastur(1, sigma_w^2),
  S = 1 / (sigma_w^2 (1 + m)).  W orthogonal (sigma_w Q): W^T W = sigma_w^2 I, S = 1 / sigma_w^2.
- D^2 = diag(phi'(h)^2), h ~ N(0, q*): linear 1; ReLU Bernoulli(1/2) on {0, 1}; hard-tanh
  Bernoulli(p) with p = erf(1 / sqrt(2 q*)); tanh / erf: the law of phi'(sqrt(q*) z)^2 by an
  n-point Gauss-Hermite rule (an `Atoms` measure, S by Newton inversion of M).
The squared singular values lambda = s^2 have density rho(lambda); s has 2 s rho(s^2).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from scatterlab.errors import ConfigError
from scatterlab.landscapes.rmt import (
    Atoms,
    FreeProduct,
    MarchenkoPastur,
    cdf_from_density,
    empirical_cdf_distance,
)
from scatterlab.theory.activations import check_depth, check_variances, get_phi
from scatterlab.theory.jacobian import first_layer_q, spectrum_theory
from scatterlab.theory.meanfield import MeanField
from scatterlab.theory.networks import check_weights
from scatterlab.theory.quadrature import gauss_hermite

PHIS = ("linear", "relu", "hardtanh", "tanh", "erf")


def d2_spectrum(phi: str, q: float, nodes: int = 200) -> Atoms:
    """The law of phi'(h)^2, h ~ N(0, q), as an `Atoms` measure."""
    if phi == "linear":
        return Atoms([1.0])
    if phi == "relu":
        return Atoms([0.0, 1.0], torch.tensor([0.5, 0.5]))
    if phi == "hardtanh":
        p = math.erf(1 / math.sqrt(2 * q))
        return Atoms([0.0, 1.0], torch.tensor([1 - p, p]))
    z, w = gauss_hermite(nodes)
    return Atoms(get_phi(phi).d1(math.sqrt(q) * z) ** 2, w)


def critical_point(phi: str, q_star: float = 1 / 64) -> tuple[float, float]:
    """(sigma_w^2, sigma_b^2) on the critical line chi_1 = 1: linear (1, 0), ReLU (2, 0), the
    others at the given q* (small q*: near dynamical isometry)."""
    if phi == "linear":
        return 1.0, 0.0
    if phi == "relu":
        return 2.0, 0.0
    sw2, sb2 = MeanField(phi).critical_line(torch.tensor(float(q_star), dtype=torch.float64))
    return float(sw2), float(sb2)


def jacobian_free_product(
    phi: str, sw2: float, sb2: float, depth: int, weights: str = "gaussian", nodes: int = 200
) -> FreeProduct:
    """The free product D^2 ^L x (W^T W)^L whose density is that of J J^T."""
    if phi not in PHIS:
        raise ConfigError(f"phi={phi!r}: the Jacobian density is implemented for {PHIS}")
    check_variances(sw2, sb2)
    depth = check_depth(depth)
    check_weights(weights)
    q = first_layer_q(phi, sw2, sb2)
    w = MarchenkoPastur(1.0, sw2) if weights == "gaussian" else Atoms([sw2])
    return FreeProduct([(d2_spectrum(phi, q, nodes), depth), (w, depth)])


def jacobian_density(
    phi: str,
    sw2: float,
    sb2: float,
    depth: int,
    weights: str = "gaussian",
    points: int = 1500,
    nodes: int = 50,
) -> dict[str, Tensor | float]:
    """Density of lambda = s^2 (eigenvalues of J J^T) on a grid, its CDF and the atom at 0.

    The grid follows the theory's mean m_1 and variance (`scatterlab.theory.spectrum_theory`):
    linear around m_1 +- 12 sd when the spectrum is narrow (sd < 0.3 m_1: near isometry), else
    log-spaced over [1e-12 m_1, 40 L m_1 + 10]; a zero variance (linear, orthogonal) is the
    point mass at m_1. Returns lam (n,), rho (n,) (continuous part), cdf (n,) (cdf[0]: the
    mass below the grid, the atom at 0 included), atom0, mass (continuous mass on the grid),
    m1, var (theory moments).
    """
    fp = jacobian_free_product(phi, sw2, sb2, depth, weights, nodes)
    th = spectrum_theory(phi, sw2, sb2, depth, weights)
    m1, sd = th["m1"], math.sqrt(max(th["var"], 0.0))
    out = {"atom0": fp.atom0, "m1": m1, "var": th["var"]}
    if sd <= 1e-6 * m1:  # a point mass (to float precision): no density to solve for
        lam = torch.tensor([m1 * (1 - 1e-9), m1], dtype=torch.float64)
        return {
            **out,
            "lam": lam,
            "rho": torch.zeros(2, dtype=torch.float64),
            "cdf": torch.tensor([fp.atom0, 1.0], dtype=torch.float64),
            "mass": 0.0,
        }
    if sd < 0.3 * m1:
        lam = torch.linspace(
            max(m1 - 12 * sd, 1e-3 * m1), m1 + 12 * sd, points, dtype=torch.float64
        )
    else:
        top = 40 * depth * m1 + 10
        lam = torch.logspace(math.log10(1e-12 * m1), math.log10(top), points, dtype=torch.float64)
    # eta (relative to lambda): small, since the Cauchy tails of a larger one bias the moments
    # (eta = 1e-3 puts m_1 of ReLU at L = 4 5 % high); at most half a grid step
    rel_step = float(((lam[1:] - lam[:-1]) / lam[1:]).min())
    rho = fp.density_on_grid(lam, eta=min(1e-5, 0.5 * rel_step)).clamp_min(0)
    cdf = cdf_from_density(lam, rho)
    return {**out, "lam": lam, "rho": rho, "cdf": cdf, "mass": float(cdf[-1] - cdf[0])}


def ks_distance(singular_values: Tensor, theory: dict) -> float:
    """Kolmogorov-Smirnov distance between the measured s^2 and the theory CDF of lambda.

    A point mass (linear orthogonal networks): the fraction of s^2 farther than 1e-6 m_1 from
    m_1 (float round-off spreads the measured values by ~1e-15).
    """
    lam = torch.as_tensor(singular_values, dtype=torch.float64).reshape(-1) ** 2
    if theory["mass"] == 0.0 and len(theory["lam"]) == 2:
        return float(((lam - theory["m1"]).abs() > 1e-6 * theory["m1"]).double().mean())
    return empirical_cdf_distance(lam, theory["lam"], theory["cdf"])
