"""Measured signal propagation through finite random networks, to put beside the theory.

Inputs are given as first-layer pre-activations h^1 (as in Poole et al.), then
h^{l+1} = W^{l+1} phi(h^l) + b^{l+1} with the weights of `networks.random_layers`.
Per layer, with N the width:  q^l = |h^l|^2 / N,  c^l = <h_a, h_b> / (N sqrt(q_a q_b)),
and along a propagated circle the metric per neuron g_bar = |dh/dtheta|^2 / N, the curvature
kappa_bar = sqrt(N) kappa, kappa = sqrt(|v|^2 |a|^2 - (v.a)^2) / |v|^3 (v, a: first and second
theta-derivatives, propagated exactly in forward mode), and the curve length.
For the modulus, weights and h are complex (circular) and <h_a, h_b> is Re sum h_a conj(h_b).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from scatterlab.errors import ConfigError
from scatterlab.theory.activations import Phi, check_depth, check_variances, get_phi
from scatterlab.theory.meanfield import MeanField
from scatterlab.theory.networks import check_weights, check_width, random_layers


def _orthonormal(width: int, k: int, gen: torch.Generator, complex_: bool, device) -> Tensor:
    """k orthonormal vectors of length `width` as columns: (width, k)."""
    a = torch.randn(width, k, dtype=torch.float64, generator=gen, device=device)
    if complex_:
        a = torch.complex(
            a, torch.randn(width, k, dtype=torch.float64, generator=gen, device=device)
        )
    return torch.linalg.qr(a)[0]


def input_pair(
    width: int,
    q1: float,
    c1: float,
    seed: int = 0,
    complex_: bool = False,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Two pre-activations with exactly |h|^2/N = q1 and correlation c1: (2, width)."""
    if not -1 <= c1 <= 1 or q1 <= 0:
        raise ConfigError(f"need q1 > 0 and -1 <= c1 <= 1, got q1={q1}, c1={c1}")
    g = torch.Generator(device=device).manual_seed(20_000 + seed)
    u = _orthonormal(width, 2, g, complex_, device) * math.sqrt(width * q1)
    return torch.stack([u[:, 0], c1 * u[:, 0] + math.sqrt(1 - c1**2) * u[:, 1]])


def propagate_pair(
    phi: str | Phi,
    sw2: float,
    sb2: float,
    width: int,
    depth: int,
    q1: float,
    c1: float,
    weights: str = "gaussian",
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> dict[str, Tensor]:
    """Measured q^l (mean of the two inputs) and c^l, l = 1..depth, of one random network."""
    p = get_phi(phi)
    check_variances(sw2, sb2)
    depth, width = check_depth(depth), check_width(width)
    check_weights(weights)
    if p.complex_input and weights != "gaussian":
        raise ConfigError("the modulus networks are simulated with complex Gaussian weights only")
    h = input_pair(width, q1, c1, seed, p.complex_input, device)
    qs, cs = [], []

    def measure(h: Tensor) -> None:
        qa = (h.abs() ** 2).mean(-1)
        qab = (h[0] * h[1].conj()).real.mean() if p.complex_input else (h[0] * h[1]).mean()
        qs.append(qa.mean())
        cs.append(qab / qa.prod().sqrt())

    measure(h)
    layers = random_layers(width, depth - 1, sw2, sb2, weights, seed, device, p.complex_input)
    for w, b in layers:
        x = p.f(h)
        h = x.to(w.dtype) @ w.T + b
        measure(h)
    return {"q": torch.stack(qs), "c": torch.stack(cs)}


def propagate_circle(
    phi: str | Phi,
    sw2: float,
    sb2: float,
    width: int,
    depth: int,
    n_angles: int = 256,
    weights: str = "gaussian",
    seed: int = 0,
    pca_layers: tuple[int, ...] = (),
    device: torch.device | str = "cpu",
) -> dict[str, Tensor]:
    """A great circle h^1(theta) = sqrt(N q*)(u0 cos theta + u1 sin theta) pushed through.

    Returns per layer l = 1..depth (shape (depth,)): q, g_bar, kappa_bar (means over theta),
    length (curve length / sqrt(N)); and pca[l] (n_angles, 3): the points of layer l projected
    on their top three principal components, for l in pca_layers. Needs a twice
    differentiable phi (tanh, erf, linear).
    """
    p = get_phi(phi)
    check_variances(sw2, sb2)
    depth, width = check_depth(depth), check_width(width)
    if p.d2 is None or p.complex_input:
        raise ConfigError(
            f"the circle's curvature needs a real, twice differentiable phi, not {p.name}: "
            f"use tanh, erf or linear"
        )
    q = float(MeanField(p).q_star(sw2, sb2))
    if not math.isfinite(q) or q <= 0:
        raise ConfigError(f"q* = {q:g}: the circle needs a finite q* > 0 (take sigma_b^2 > 0)")
    g = torch.Generator(device=device).manual_seed(30_000 + seed)
    u = _orthonormal(width, 2, g, False, device) * math.sqrt(width * q)
    th = torch.arange(n_angles, dtype=torch.float64, device=device) * (2 * math.pi / n_angles)
    cos, sin = th.cos()[:, None], th.sin()[:, None]
    h = cos * u[:, 0] + sin * u[:, 1]  # (n_angles, width)
    v = -sin * u[:, 0] + cos * u[:, 1]  # dh/dtheta
    a = -h  # d2h/dtheta2
    out: dict[str, list] = {"q": [], "g_bar": [], "kappa_bar": [], "length": []}
    pca: dict[int, Tensor] = {}

    def measure(layer: int) -> None:
        vv, aa, va = (v * v).sum(-1), (a * a).sum(-1), (v * a).sum(-1)
        kappa = (vv * aa - va**2).clamp_min(0).sqrt() / vv**1.5
        out["q"].append((h * h).mean())
        out["g_bar"].append(vv.mean() / width)
        out["kappa_bar"].append(kappa.mean() * math.sqrt(width))
        out["length"].append(vv.sqrt().mean() * 2 * math.pi / math.sqrt(width))
        if layer in pca_layers:
            centred = h - h.mean(0)
            _, _, vt = torch.linalg.svd(centred, full_matrices=False)
            pca[layer] = centred @ vt[:3].T

    measure(1)
    for layer, (w, b) in enumerate(
        random_layers(width, depth - 1, sw2, sb2, weights, seed, device), 2
    ):
        d1, d2 = p.d1(h), p.d2(h)
        a = (d2 * v * v + d1 * a) @ w.T
        v = (d1 * v) @ w.T
        h = p.f(h) @ w.T + b
        measure(layer)
    res = {k: torch.stack(vals) for k, vals in out.items()}
    res["pca"] = pca
    res["q_star"] = torch.tensor(q)
    return res
