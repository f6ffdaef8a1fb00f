"""Finite random networks h^l = W^l phi(h^{l-1}) + b^l, layer by layer, float64.

The weights come from `scatterlab.models.mlp.init_weights` (the shared MLP's mean-field
initialisation: W ~ N(0, sigma_w^2 / N) or sigma_w times a Haar orthogonal matrix, with the
sign fix of torch's QR, b ~ N(0, sigma_b^2)), drawn one layer at a time so that a deep wide net
never holds all its matrices at once, under a fixed seed (the global RNG is forked, not moved).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from scatterlab.errors import ConfigError
from scatterlab.models.mlp import init_weights

WEIGHTS = ("gaussian", "orthogonal")


def check_weights(weights: str) -> str:
    if weights not in WEIGHTS:
        raise ConfigError(f"weights={weights!r} is unknown: use gaussian or orthogonal")
    return weights


def check_width(width: object) -> int:
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ConfigError(f"width must be an integer >= 1 (neurons per layer), got {width!r}")
    return width


def random_layers(
    width: int,
    depth: int,
    sw2: float,
    sb2: float,
    weights: str = "gaussian",
    seed: int = 0,
    device: torch.device | str = "cpu",
    complex_weights: bool = False,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield depth pairs (W (width, width), b (width,)), float64 (complex128 if complex_weights).

    Complex weights (the modulus networks): W = (A + iB)/sqrt(2) with A, B drawn as real
    weights, so E|W_ij|^2 = sigma_w^2 / N, and b circular with E|b_i|^2 = sigma_b^2 (Gaussian
    weights only).
    """
    check_weights(weights)
    sigma_w, sigma_b = math.sqrt(sw2), math.sqrt(sb2)
    gen_device = [torch.device(device)] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=gen_device):
        torch.manual_seed(seed)
        # one nn.Linear re-initialised per layer (its default init is drawn once, not per layer)
        lin = nn.Linear(width, width, dtype=torch.float64, device=device)
        for _ in range(depth):
            parts = []
            for _ in range(2 if complex_weights else 1):
                with torch.no_grad():
                    init_weights(lin, sigma_w, sigma_b, weights)
                parts.append((lin.weight.detach().clone(), lin.bias.detach().clone()))
            if complex_weights:
                (a, ba), (b, bb) = parts
                yield torch.complex(a, b) / math.sqrt(2), torch.complex(ba, bb) / math.sqrt(2)
            else:
                yield parts[0]
