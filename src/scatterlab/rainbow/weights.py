"""Weight covariances, their spectra, Gaussian sampling, clipping and controls.

A layer's weight matrix W is (N, D): N neurons (rows), D input features. The covariance is the
reference's C = W^T W / N, **uncentred** and divided by the number of neurons; with several
networks their aligned rows are concatenated (N_tot = M N). All results are float64.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from scatterlab.rainbow.stats import procrustes


def weight_covariance(weights: Sequence[Tensor] | Tensor) -> Tensor:
    """C = W^T W / N_tot over the rows of all given (N_m, D) matrices -> (D, D) float64."""
    if isinstance(weights, Tensor):
        weights = [weights]
    w = torch.cat([x.detach().double().reshape(x.shape[0], -1) for x in weights])
    return w.T @ w / w.shape[0]


def spectrum(cov: Tensor) -> tuple[Tensor, Tensor]:
    """Eigenvalues in decreasing order (D,) and eigenvectors as columns (D, D)."""
    vals, vecs = torch.linalg.eigh(cov.double())
    return vals.flip(0).clamp_min(0), vecs.flip(1)


def sample_rows(cov: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
    """n i.i.d. rows w ~ N(0, C): W = G Lambda^{1/2} V^T with G white. (n, D) float64."""
    vals, vecs = spectrum(cov)
    g = torch.randn(n, cov.shape[0], dtype=torch.float64, generator=generator)
    return (g * vals.sqrt()) @ vecs.T.to(g.device)


def clip_to_top_k(weight: Tensor, cov: Tensor, k: int) -> Tensor:
    """Project the rows of weight (N, D) onto the top-k eigenvectors of C: W V_k V_k^T."""
    _, vecs = spectrum(cov)
    vk = vecs[:, :k].to(weight.device, torch.float64)
    return (weight.double() @ vk @ vk.T).to(weight.dtype)


def random_orthogonal(d: int, generator: torch.Generator | None = None) -> Tensor:
    """A Haar-distributed random orthogonal matrix (d, d) float64 (QR with sign fix)."""
    q, r = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64, generator=generator))
    return q * torch.sign(torch.diagonal(r))[None, :]


def mean_network_alignments(pairwise: Tensor, num_iters: int = 2) -> list[Tensor]:
    """Align M networks to their iteratively computed mean network.

    pairwise: (M, M, D, D) with pairwise[a, b] = E[psi_a psi_b^T] (the representations of the
    M networks at one layer). Iteration 0 aligns every network to network 0; then the mean
    network phi = (1/M) sum_k A_k psi_k is formed and every network realigned to it, using
    E[phi psi_m^T] = (1/M) sum_k A_k E[psi_k psi_m^T] (no new pass over the data).
    Returns A_m (D, D) with A_m psi_m ~ phi_mean.
    """
    m = pairwise.shape[0]
    aligns = [procrustes(pairwise[0, b])[0] for b in range(m)]
    for _ in range(num_iters):
        cross_mean = [sum(aligns[k] @ pairwise[k, b] for k in range(m)) / m for b in range(m)]
        aligns = [procrustes(c)[0] for c in cross_mean]
    return aligns


def whitened_components(weight: Tensor, cov: Tensor) -> Tensor:
    """G = W V Lambda^{-1/2} (N, D): the rows of W on the eigenvectors of C (decreasing),
    each component divided by its standard deviation; white i.i.d. N(0, 1) when the rows of W
    are N(0, C). Components with zero eigenvalue are left at 0."""
    vals, vecs = spectrum(cov)
    inv = torch.where(vals > vals[0] * 1e-12, vals.clamp_min(1e-300).rsqrt(), 0.0)
    return weight.detach().double().to(vecs.device) @ vecs * inv


def marchenko_pastur_outside(weight: Tensor) -> float:
    """Fraction of the nonzero eigenvalues of W^T W / N (per-entry variance 1) outside the
    Marchenko-Pastur bulk [(1 - sqrt(q))^2, (1 + sqrt(q))^2], q = D / N, of a white matrix."""
    w = weight.detach().double()
    n, d = w.shape
    gram = w.T @ w / n if d <= n else w @ w.T / n  # same nonzero eigenvalues, smaller side
    vals = torch.linalg.eigvalsh(gram)
    vals = vals / (vals.sum() / d)  # per-entry variance = trace / D
    q = d / n
    lo, hi = (1 - q**0.5) ** 2, (1 + q**0.5) ** 2
    return float(((vals < lo) | (vals > hi)).double().mean())


def gaussianity(weight: Tensor, cov: Tensor, components: Sequence[int] = (1, 10, 100)) -> dict:
    """Tests of "the rows of W are N(0, C)" (the rainbow paper's Gaussianity checks).

    ks_p/r{r}: Kolmogorov-Smirnov p-value of whitened component r (1-based, by decreasing
    eigenvalue of C) against N(0, 1); mp_outside_colored / mp_outside_whitened: fractions of
    eigenvalues outside the Marchenko-Pastur bulk before and after whitening by C. With C
    estimated from this W alone the whitened matrix is exactly white: use C from several
    networks (the paper: 50). Components beyond the rank of C are not tested.
    """
    from scipy.stats import kstest

    g = whitened_components(weight, cov)
    vals = spectrum(cov)[0]
    rank = int((vals > vals[0] * 1e-12).sum())  # C from few rows: the rest is not sampled
    out = {
        f"ks_p/r{r}": float(kstest(g[:, r - 1].cpu().numpy(), "norm").pvalue)
        for r in components
        if r <= rank
    }
    out["mp_outside_colored"] = marchenko_pastur_outside(weight)
    out["mp_outside_whitened"] = marchenko_pastur_outside(g[:, :rank])
    return out
