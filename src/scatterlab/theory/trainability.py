"""The depth up to which a random network trains (Schoenholz et al. 2017): L = factor * xi_c.

`trainable_depth` is the theory line of the trainability study's heat map
(configs/study/trainability_depth.yaml, `plot.curve`), drawn by `scatterlab-report`.
"""

from __future__ import annotations

import numpy as np
import torch

from scatterlab.ranges import NonNegative, Positive
from scatterlab.theory.meanfield import MeanField


def trainable_depth(
    sigma_w: np.ndarray | float,
    sigma_b2: NonNegative,
    activation: str = "tanh",
    factor: Positive = 6.0,
    max_depth: Positive | None = None,
) -> np.ndarray:
    """factor * xi_c at each weight STANDARD DEVIATION sigma_w (model.sigma_w; the theory's
    sigma_w^2 is its square) and bias variance sigma_b2.

    xi_c diverges on the critical line (chi_1 = 1): with `max_depth` the result is clipped to it
    (infinite values included), so a plotted line stays finite.
    """
    sw = torch.as_tensor(np.asarray(sigma_w, dtype=np.float64))
    sw2 = sw**2
    xi = MeanField(activation).xi_c(sw2, torch.full_like(sw2, float(sigma_b2)))
    out = factor * xi.numpy()
    if max_depth is not None:
        out = np.where(np.isnan(out), out, np.minimum(out, max_depth))
    return out


__all__ = ["trainable_depth"]
