"""Random features of width m, their kernels, and the rainbow alignment of two feature maps.

phi(x) = m^{-1/2} (rho(<w_i, x>))_{i <= m}, w_i i.i.d. Gaussian (Rahimi & Recht 2007), so that
<phi(x), phi(x')> -> k(x, x') = E_w[rho(<w, x>) rho(<w, x'>)] as m -> infinity, with a
Monte-Carlo error O(m^{-1/2}). Weights: real w ~ N(0, I_d) for relu and erf; circular complex
w = (g + i g') / sqrt(2), E|w_k|^2 = 1, for the modulus rho = |.| of the scattering networks.
So <w, x> has variance |x|^2 and the limit kernels are the closed forms of
`scatterlab.theory.closed_forms` with q = |x|^2 and c = cos(angle(x, x')):
  relu:    |x||x'| (sin t + (pi - t) cos t) / (2 pi)        (arc-cosine of order 1, Cho & Saul)
  erf:     (2/pi) arcsin(2 <x,x'> / sqrt((1 + 2|x|^2)(1 + 2|x'|^2)))   (Williams 1997)
  modulus: |x||x'| [2 E(c) - (1 - c^2) K(c)] / 2   (complete elliptic integrals of modulus |c|)
All computations are float64.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from scatterlab.rainbow import MomentAccumulator, align
from scatterlab.theory.closed_forms import erf_vc, modulus_vc, relu_vc

Activation = Literal["relu", "erf", "modulus"]
ACTIVATIONS: tuple[str, ...] = ("relu", "erf", "modulus")
BLOCK = 2048  # features formed at a time: memory n x BLOCK, whatever m is


def sphere(n: int, d: int, generator: torch.Generator | None = None) -> Tensor:
    """n points uniform on the unit sphere S^{d-1}: (n, d) float64."""
    x = torch.randn(n, d, dtype=torch.float64, generator=generator)
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-300)


def sample_weights(
    m: int, d: int, activation: Activation, generator: torch.Generator | None = None
) -> Tensor:
    """m weights (m, d): real N(0, I_d), or circular complex with E|w_k|^2 = 1 for modulus."""
    w = torch.randn(m, d, dtype=torch.float64, generator=generator)
    if activation != "modulus":
        return w
    im = torch.randn(m, d, dtype=torch.float64, generator=generator)
    return torch.complex(w, im) / math.sqrt(2)


def rho(u: Tensor, activation: Activation) -> Tensor:
    """The non-linearity applied to pre-activations u (real, or complex for modulus)."""
    if activation == "relu":
        return torch.relu(u)
    if activation == "erf":
        return torch.erf(u)
    if activation == "modulus":
        return u.abs()
    raise ValueError(f"unknown activation {activation!r}: use one of {ACTIVATIONS}")


def preactivations(x: Tensor, w: Tensor) -> Tensor:
    """<w_i, x_k>: x (n, d) real, w (m, d) real or complex -> (n, m)."""
    return x.to(w.dtype) @ w.T


def feature_map(x: Tensor, w: Tensor, activation: Activation, m: int | None = None) -> Tensor:
    """phi(x) = rho(x w^T) / sqrt(m): x (n, d), w (m_b, d) -> (n, m_b) real float64.

    m: the total width used for the 1/sqrt(m) normalisation (default: the rows of w), so
    that blocks of one map can be formed separately."""
    m = w.shape[0] if m is None else m
    return rho(preactivations(x, w), activation).real.double() / math.sqrt(m)


def limit_kernel(x: Tensor, y: Tensor, activation: Activation) -> Tensor:
    """Closed-form k(x, y) = E_w[rho(<w,x>) rho(<w,y>)]: x (n, d), y (n', d) -> (n, n')."""
    x, y = x.double(), y.double()
    qx, qy = (x * x).sum(1)[:, None], (y * y).sum(1)[None, :]
    c = (x @ y.T) / (qx * qy).sqrt().clamp_min(1e-300)  # zero inputs: c = 0, k = rho(0)^2 = 0
    if activation == "relu":
        return relu_vc(qx, qy, c.clamp(-1, 1))
    if activation == "erf":
        return erf_vc(qx, qy, c.clamp(-1, 1))
    if activation == "modulus":
        return modulus_vc(qx, qy, c.clamp(-1, 1))
    raise ValueError(f"unknown activation {activation!r}: use one of {ACTIVATIONS}")


def empirical_kernel(
    x: Tensor,
    y: Tensor,
    m: int,
    activation: Activation,
    generator: torch.Generator | None = None,
    block: int = BLOCK,
) -> Tensor:
    """<phi(x), phi(y)> for one random map of width m: (n, n'), one feature block at a time."""
    return next(iter(kernel_path(x, y, [m], activation, generator, block)))[1]


def kernel_path(
    x: Tensor,
    y: Tensor,
    widths: Sequence[int],
    activation: Activation,
    generator: torch.Generator | None = None,
    block: int = BLOCK,
):
    """Yield (m, K_m) for increasing widths of ONE random feature sequence (nested maps).

    K_m = (1/m) sum_{i <= m} rho(<w_i, x>) rho(<w_i, y>)^T, (n, n'); only one block of
    at most `block` features is materialised at a time, so m = 16384 and n = 2000 need
    n x block memory, not n x m.
    """
    widths = sorted(int(m) for m in widths)
    d = x.shape[1]
    total = torch.zeros(x.shape[0], y.shape[0], dtype=torch.float64)
    done = 0
    for m in widths:
        while done < m:
            b = min(block, m - done)
            w = sample_weights(b, d, activation, generator)
            fx = _block_features(x, w, activation)
            # K(x, x): one block of features, not two; addmm_: no n x n' temporary
            fy = fx if y is x else _block_features(y, w, activation)
            total.addmm_(fx, fy.T)
            del fx, fy
            done += b
        yield m, total / m


def _block_features(x: Tensor, w: Tensor, activation: Activation) -> Tensor:
    """rho(x w^T) for one block of weights, in place where rho allows (relu): (n, b) real."""
    pre = preactivations(x, w)
    if activation == "relu":
        return pre.relu_()
    return rho(pre, activation).real


def relative_error(k_m: Tensor, k: Tensor) -> float:
    """||K_m - K||_F / ||K||_F."""
    return float((k_m - k).norm() / k.norm().clamp_min(1e-300))


def kernel_errors(
    x: Tensor,
    widths: Sequence[int],
    activation: Activation,
    seeds: int,
    seed: int = 0,
) -> np.ndarray:
    """Relative Frobenius error of the empirical kernel on x (n, d): (seeds, len(widths)).

    E ||K_m - K||_F^2 = (1/m) sum_{jk} Var_w[rho(<w,x_j>) rho(<w,x_k>)] exactly, so the RMS
    over seeds decays as m^{-1/2}; the fitted exponent measures how close we are to that.
    """
    k = limit_kernel(x, x, activation)
    out = np.zeros((seeds, len(widths)))
    order = np.argsort(widths)
    for s in range(seeds):
        gen = torch.Generator().manual_seed(seed * 100_003 + s)
        for j, (_, k_m) in zip(order, kernel_path(x, x, widths, activation, gen), strict=True):
            out[s, j] = relative_error(k_m, k)
    return out


def fit_exponent(widths: Sequence[float], values: np.ndarray) -> dict[str, float]:
    """Least-squares slope of log(values) against log(widths).

    values: (len(widths),) or (seeds, len(widths)); with seeds, the slope of the RMS over
    seeds (`slope`) and the mean and standard error of the per-seed slopes
    (`slope_mean`, `slope_se`)."""
    logw = np.log(np.asarray(widths, dtype=float))
    v = np.atleast_2d(np.asarray(values, dtype=float)).clip(1e-300)  # an exact 0: no -inf
    rms = np.sqrt((v**2).mean(0))
    out = {"slope": float(np.polyfit(logw, np.log(rms), 1)[0])}
    per_seed = [float(np.polyfit(logw, np.log(row), 1)[0]) for row in v]
    out["slope_mean"] = float(np.mean(per_seed))
    out["slope_se"] = float(np.std(per_seed) / math.sqrt(len(per_seed))) if len(v) > 1 else 0.0
    return out


def alignment(
    x_fit: Tensor,
    x_test: Tensor,
    m: int,
    activation: Activation,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """Rainbow alignment of two independent random-feature maps of width m.

    phi = feature_map(., W_1), psi = feature_map(., W_2), W_1, W_2 independent. The orthogonal
    A (m, m) minimising E|A psi - phi|^2 on x_fit (n, d) is the Procrustes solution of
    `scatterlab.rainbow` (SVD of E[phi psi^T]). Returns the relative mean-square error
    E|A psi - phi|^2 / E|phi|^2 on x_fit (`fit_error`) and on the held-out x_test
    (`test_error`), and the explained variance r2. On x_fit with m >= n the error is the
    squared Bures distance between the two Gram matrices, divided by the trace of the first.
    """
    d = x_fit.shape[1]
    w1 = sample_weights(m, d, activation, generator)
    w2 = sample_weights(m, d, activation, generator)
    acc = MomentAccumulator(m, m)  # float32 products, float64 sums (rainbow.stats)
    for start in range(0, x_fit.shape[0], BLOCK):
        xb = x_fit[start : start + BLOCK]
        acc.update(feature_map(xb, w1, activation), feature_map(xb, w2, activation))
    al = align(acc.cross, float(acc.power_x.sum()), float(acc.power_y.sum()))
    phi, psi = feature_map(x_test, w1, activation), feature_map(x_test, w2, activation)
    test = float(((psi @ al.matrix.T - phi) ** 2).sum() / (phi**2).sum().clamp_min(1e-300))
    return {"fit_error": al.error, "test_error": test, "r2": al.r2}


def bures_error(k1: Tensor, k2: Tensor) -> float:
    """[tr K1 + tr K2 - 2 tr (K1^{1/2} K2 K1^{1/2})^{1/2}] / tr K1 for PSD (n, n) matrices:
    the best orthogonal alignment error of two feature maps with these Gram matrices."""

    def sqrtm(k: Tensor) -> Tensor:
        vals, vecs = torch.linalg.eigh(k.double())
        return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T

    r = sqrtm(k1)
    fid = torch.linalg.eigvalsh(r @ k2.double() @ r).clamp_min(0).sqrt().sum()
    return float((k1.trace() + k2.trace() - 2 * fid) / k1.trace())
