"""The depth up to which a random network trains (Schoenholz et al. 2017): L = factor * xi_c.

`trainable_depth` is the theory line of the trainability study's heat map
(configs/study/trainability_depth.yaml, `plot.curve`), drawn by `scatterlab-report`.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from scatterlab.ranges import NonNegative, Positive
from scatterlab.theory.meanfield import MeanField

# chi_1 this close to 1 is the critical line up to rounding: sqrt(2) ** 2 = 2 + 4.4e-16, so
# ReLU at sigma_w = sqrt(2) has chi_1 = 1 + 2.2e-16 (and q* = inf with sigma_b = 0); 64 ulp
# is far below any chi_1 a quadrature resolves (~1e-10) and far above the rounding of a square.
_ON_LINE = 64 * np.finfo(np.float64).eps


def trainable_depth(
    sigma_w: np.ndarray | float,
    sigma_b2: NonNegative,
    activation: str = "tanh",
    factor: Positive = 6.0,
    max_depth: Positive | None = None,
) -> np.ndarray:
    """factor * xi_c at each weight STANDARD DEVIATION sigma_w (model.sigma_w; the theory's
    sigma_w^2 is its square) and bias variance sigma_b2.

    xi_c diverges on the critical line (chi_1 = 1): the result is +inf there, including where
    sigma_w^2 misses the line by rounding (|chi_1 - 1| <= 64 ulp, e.g. ReLU at sigma_w =
    sqrt(2)). Where the length map has no fixed point (q* = inf: an unbounded phi such as ReLU
    beyond the line) xi_c is undefined and the depth scale is the gradients', 1 / ln chi_1
    (they grow like chi_1^l), finite off the line. With `max_depth` the result is clipped to it
    (infinite values included), so a plotted line stays finite.
    """
    sw = torch.as_tensor(np.asarray(sigma_w, dtype=np.float64))
    sw2 = sw**2
    sb2 = torch.full_like(sw2, float(sigma_b2))
    mf = MeanField(activation)
    q = mf.q_star(sw2, sb2)
    chi1 = mf.chi1(sw2, sb2, q)
    xi = mf.xi_c(sw2, sb2, q)
    xi = torch.where(torch.isfinite(q), xi, 1.0 / torch.log(chi1).abs())
    xi = torch.where((chi1 - 1).abs() <= _ON_LINE, math.inf, xi)
    out = factor * xi.numpy()
    if max_depth is not None:
        out = np.where(np.isnan(out), out, np.minimum(out, max_depth))
    return out


__all__ = ["trainable_depth"]
