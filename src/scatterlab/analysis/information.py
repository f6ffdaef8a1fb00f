"""Mutual information of a layer T with the input X and the label Y, in bits.

Binning (Shwartz-Ziv & Tishby 2017): every unit is discretised, each row of bins is one
symbol t; with a deterministic net and distinct inputs H(T|X) = 0, so
  I(X;T) = H(T),   I(T;Y) = H(T) - sum_y p(y) H(T | Y = y)   (plug-in entropies).
Bins: `num_bins` equal bins over a fixed range (IDNNs: 30 edges over [-1, 1], for tanh) or
a fixed `bin_size` with no range (Saxe et al.'s `floor(h / binsize)`, usable for ReLU).

KDE upper bound (Kolchinsky & Tracey 2017; Saxe et al. 2018): T + N(0, s2 I), treated as a
mixture of P Gaussians centred on the P activations h_i:
  I_up(X;T) = -(1/P) sum_i ln[(1/P) sum_j exp(-||h_i - h_j||^2 / (2 s2))],
  I(T;Y) = H_up(T) - sum_l p_l H_up(T | Y = l) (a difference of bounds, not a bound).
Both estimate the estimator's own quantity: for a deterministic injective net the true
I(X;T) is H(X) (12 bits here) at every epoch; the curves show the binning / noise choice.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

LN2 = math.log(2)


def _entropy_of_rows(symbols: Tensor) -> float:
    """Plug-in entropy (bits) of the rows of an integer matrix (N, d) seen as symbols."""
    _, counts = torch.unique(symbols, dim=0, return_counts=True)
    p = counts.to(torch.float64) / counts.sum()
    return float(-(p * p.log2()).sum())


def discretize(
    h: Tensor,
    num_bins: int | None = 30,
    value_range: tuple[float, float] | None = (-1.0, 1.0),
    bin_size: float | None = None,
) -> Tensor:
    """Bin indices (N, d) of activations h (N, ...).

    With `bin_size`: floor(h / bin_size) (no range). Otherwise `num_bins` equal bins over
    value_range (values outside fall into the end bins); value_range None: the layer's own
    [min, max].
    """
    h = h.detach().flatten(1).to("cpu", torch.float64)
    if bin_size is not None:
        return torch.floor(h / bin_size).long()
    if num_bins is None or num_bins < 1:
        raise ValueError("discretize needs num_bins >= 1 or a bin_size")
    lo, hi = value_range if value_range is not None else (float(h.min()), float(h.max()))
    if hi <= lo:
        return torch.zeros_like(h, dtype=torch.long)
    idx = torch.floor((h - lo) / (hi - lo) * num_bins).long()
    return idx.clamp(0, num_bins - 1)


def binning_mi(symbols: Tensor, y: Tensor) -> dict[str, float]:
    """I(X;T) and I(T;Y) in bits from discrete symbols (N, d) of N distinct inputs, labels (N,).

    Assumes T is a deterministic function of X and that the N inputs are distinct and equally
    likely, so I(X;T) = H(T).
    """
    h_t = _entropy_of_rows(symbols)
    cond = 0.0
    for c in y.unique():
        mask = y == c
        cond += float(mask.double().mean()) * _entropy_of_rows(symbols[mask])
    return {"ixt": h_t, "ity": h_t - cond}


def _kde_term(h: Tensor, s2: float) -> float:
    """-(1/P) sum_i ln[(1/P) sum_j exp(-||h_i - h_j||^2 / (2 s2))] in nats."""
    sq = (h * h).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2 * h @ h.T).clamp_min(0)
    P = h.shape[0]
    lse = torch.logsumexp(-d2 / (2 * s2), dim=1) - math.log(P)
    return float(-lse.mean())


def kde_mi(h: Tensor, y: Tensor, noise_variance: float = 1e-1) -> dict[str, float]:
    """KDE upper bound on I(X;T) and the KDE estimate of I(T;Y), in bits.

    h (P, ...) activations of P equally likely distinct inputs, y (P,) labels. Memory O(P^2).
    """
    h = h.detach().flatten(1).to("cpu", torch.float64)
    y = y.detach().cpu()
    ixt = _kde_term(h, noise_variance)
    cond = 0.0
    for c in y.unique():
        mask = y == c
        cond += float(mask.double().mean()) * _kde_term(h[mask], noise_variance)
    # H_up(T) - sum_l p_l H_up(T|l): the d/2 ln(2 pi e s2) terms cancel.
    return {"ixt": ixt / LN2, "ity": (ixt - cond) / LN2}


def kde_lower_mi(h: Tensor, noise_variance: float = 1e-1) -> float:
    """Pairwise-distance lower bound on I(X;T) in bits (Kolchinsky & Tracey, Bhattacharyya
    distance ||h_i - h_j||^2 / (8 s2) between equal-covariance Gaussians):
    -(1/P) sum_i ln[(1/P) sum_j exp(-||h_i - h_j||^2 / (8 s2))], the upper-bound term at 4 s2."""
    h = h.detach().flatten(1).to("cpu", torch.float64)
    return _kde_term(h, 4 * noise_variance) / LN2
