"""Large-scale statistics that the power spectrum does not see: the mean magnetisation."""

from __future__ import annotations

import torch
from torch import Tensor


def abs_magnetization(x: Tensor) -> Tensor:
    """|m| = |spatial mean| of each field. x: (N, [1,] L, L) -> (N,)."""
    return x.double().flatten(1).mean(dim=1).abs()


def wasserstein1(a: Tensor, b: Tensor, n_quantiles: int = 512) -> float:
    """W1 distance between the empirical laws of two 1D samples (quantile functions).

    W1 = int_0^1 |F_a^{-1}(q) - F_b^{-1}(q)| dq, approximated on a midpoint grid of q.
    """
    q = (torch.arange(n_quantiles, dtype=torch.float64) + 0.5) / n_quantiles
    return float((torch.quantile(a.double(), q) - torch.quantile(b.double(), q)).abs().mean())
