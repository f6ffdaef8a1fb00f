"""The pointwise non-linearities of the mean-field theory, with their derivatives.

Every phi is a named `Phi`: the function, phi', phi'' (None where phi'' is a Dirac mass, so
chi_2 and the curvature are undefined), and flags the solvers use. Names are those of
`scatterlab.models.mlp.ACTIVATIONS` that are pointwise and almost everywhere differentiable,
plus `modulus`: phi(h) = |h| on circular complex Gaussian pre-activations (the scattering
networks' non-linearity), whose maps are closed forms (see `scatterlab.theory.closed_forms`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from scatterlab.errors import ConfigError

Fn = Callable[[Tensor], Tensor]
_SQRT_2_OVER_PI = 2.0 / math.sqrt(math.pi)


@dataclass(frozen=True)
class Phi:
    """A pointwise non-linearity and what the theory needs to know about it.

    f, d1, d2: phi, phi', phi'' on real tensors (any shape -> same shape); d2 None when phi''
      is a Dirac mass (ReLU, hard-tanh kinks): chi_2 is then infinite / undefined.
    homogeneous: phi(a x) = a phi(x) for a > 0, so the C-map does not depend on q.
    smooth: Gauss-Hermite quadrature converges exponentially (no kink).
    complex_input: phi acts on complex pre-activations (the modulus).
    """

    name: str
    f: Fn
    d1: Fn
    d2: Fn | None
    homogeneous: bool = False
    smooth: bool = True
    complex_input: bool = False


def _tanh_d1(x: Tensor) -> Tensor:
    return 1.0 - torch.tanh(x) ** 2


def _tanh_d2(x: Tensor) -> Tensor:
    t = torch.tanh(x)
    return -2.0 * t * (1.0 - t**2)


def _erf_d1(x: Tensor) -> Tensor:
    return _SQRT_2_OVER_PI * torch.exp(-(x**2))


def _erf_d2(x: Tensor) -> Tensor:
    return -2.0 * x * _SQRT_2_OVER_PI * torch.exp(-(x**2))


PHIS: dict[str, Phi] = {
    "tanh": Phi("tanh", torch.tanh, _tanh_d1, _tanh_d2),
    "erf": Phi("erf", torch.erf, _erf_d1, _erf_d2),
    "relu": Phi(
        "relu", torch.relu, lambda x: (x > 0).to(x.dtype), None, homogeneous=True, smooth=False
    ),
    "hardtanh": Phi(
        "hardtanh",
        lambda x: x.clamp(-1.0, 1.0),
        lambda x: (x.abs() < 1).to(x.dtype),
        None,
        smooth=False,
    ),
    "linear": Phi("linear", lambda x: x, torch.ones_like, torch.zeros_like, homogeneous=True),
    # |h| of a complex h; d1 is the derivative along the radial direction (|h|' = 1 there, 0
    # along the phase): the maps of this phi use closed forms, not these functions.
    "modulus": Phi(
        "modulus",
        torch.abs,
        torch.ones_like,
        None,
        homogeneous=True,
        smooth=False,
        complex_input=True,
    ),
}

# names a user might try that the theory cannot handle, with the reason
_REJECTED = {
    "softmax": "it is not pointwise (each output depends on the whole vector)",
    "layernorm": "it is not pointwise (each output depends on the whole vector)",
    "maxout": "it is not pointwise (each output depends on several inputs)",
    "sign": "it is not differentiable (phi' is a Dirac mass, so chi_1 is undefined)",
    "step": "it is not differentiable (phi' is a Dirac mass, so chi_1 is undefined)",
    "heaviside": "it is not differentiable (phi' is a Dirac mass, so chi_1 is undefined)",
}


def get_phi(phi: str | Phi, where: str = "phi") -> Phi:
    """The `Phi` named `phi` (or `phi` itself); an unknown or unusable name is a ConfigError."""
    if isinstance(phi, Phi):
        return phi
    if not isinstance(phi, str):
        raise ConfigError(
            f"{where} must be the name of an activation ({', '.join(PHIS)}), got {phi!r}"
        )
    key = phi.lower()
    if key in PHIS:
        return PHIS[key]
    if key in _REJECTED:
        raise ConfigError(
            f"{where}={phi!r} cannot be used by the mean-field theory: {_REJECTED[key]}; "
            f"use one of {', '.join(PHIS)}"
        )
    raise ConfigError(f"{where}={phi!r} is unknown: use one of {', '.join(PHIS)}")


def check_variances(sw2: object, sb2: object) -> None:
    """ConfigError unless sigma_w^2 > 0 and sigma_b^2 >= 0 everywhere (floats or tensors)."""
    w = torch.as_tensor(sw2, dtype=torch.float64)
    b = torch.as_tensor(sb2, dtype=torch.float64)
    if not bool(torch.all(w > 0)) or not bool(torch.all(torch.isfinite(w))):
        raise ConfigError(
            f"sigma_w^2 must be finite and > 0 (a variance), got min {float(w.min()):g}"
        )
    if not bool(torch.all(b >= 0)) or not bool(torch.all(torch.isfinite(b))):
        raise ConfigError(
            f"sigma_b^2 must be finite and >= 0 (a variance), got min {float(b.min()):g}"
        )


def check_depth(depth: object, where: str = "depth") -> int:
    """The depth as an int; ConfigError unless it is an integer >= 1."""
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ConfigError(f"{where} must be an integer >= 1 (number of layers), got {depth!r}")
    return depth
