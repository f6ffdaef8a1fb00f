"""Closed forms of the Gaussian integrals, for ReLU (arc-cosine kernel), erf, linear, modulus.

All with q11 = q1, q22 = q2, correlation c (q12 = c sqrt(q1 q2)); tensors broadcast; float64.
Sources: Cho & Saul 2009 (ReLU, degree-1 arc-cosine kernel), Williams 1997 (erf).

The complex modulus: pre-activations h are circular complex Gaussians, E|h|^2 = q, and a pair
(h_a, h_b) has E[h_a conj(h_b)] = c sqrt(q_a q_b) with c real (after the first modulus every
layer's inputs are real, so the correlation stays real). Then
  E|h_a| |h_b| = sqrt(q_a q_b) (pi/4) 2F1(-1/2, -1/2; 1; c^2)
             = sqrt(q_a q_b) [2 E(c) - (1 - c^2) K(c)] / 2,
with K, E the complete elliptic integrals of modulus c, and its c-derivative
  d/dc E|h_a||h_b| = sqrt(q_a q_b) [E(c) - (1 - c^2) K(c)] / (2 c),  -> sqrt(q_a q_b)/2 at c = 1.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from scatterlab.theory.quadrature import C_MAX


def _t(x: object) -> Tensor:
    return torch.as_tensor(x, dtype=torch.float64)


# ReLU ---------------------------------------------------------------------------------------
def relu_vq(q: Tensor) -> Tensor:
    """E[relu(sqrt(q) z)^2] = q / 2."""
    return _t(q) / 2


def relu_vc(q1: Tensor, q2: Tensor, c: Tensor) -> Tensor:
    """E[relu(u1) relu(u2)] = sqrt(q1 q2)/(2 pi) [sin(theta) + (pi - theta) cos(theta)]."""
    c = _t(c).clamp(-1, 1)
    th = torch.arccos(c)
    return (_t(q1) * _t(q2)).sqrt() / (2 * math.pi) * (torch.sin(th) + (math.pi - th) * c)


def relu_dc(c: Tensor) -> Tensor:
    """E[1{u1 > 0} 1{u2 > 0}] = (pi - arccos c) / (2 pi) (independent of q1, q2)."""
    return (math.pi - torch.arccos(_t(c).clamp(-1, 1))) / (2 * math.pi)


# erf ----------------------------------------------------------------------------------------
def erf_vq(q: Tensor) -> Tensor:
    """E[erf(sqrt(q) z)^2] = (2/pi) arcsin(2q / (1 + 2q))."""
    q = _t(q)
    return 2 / math.pi * torch.arcsin(2 * q / (1 + 2 * q))


def erf_vc(q1: Tensor, q2: Tensor, c: Tensor) -> Tensor:
    """E[erf(u1) erf(u2)] = (2/pi) arcsin(2 q12 / sqrt((1 + 2 q1)(1 + 2 q2)))."""
    q1, q2, c = _t(q1), _t(q2), _t(c)
    q12 = c * (q1 * q2).sqrt()
    return 2 / math.pi * torch.arcsin(2 * q12 / ((1 + 2 * q1) * (1 + 2 * q2)).sqrt())


def erf_dc(q1: Tensor, q2: Tensor, c: Tensor) -> Tensor:
    """E[erf'(u1) erf'(u2)] = (4/pi) / sqrt((1 + 2 q1)(1 + 2 q2) - 4 q12^2)."""
    q1, q2, c = _t(q1), _t(q2), _t(c)
    return 4 / math.pi / ((1 + 2 * q1) * (1 + 2 * q2) - 4 * c**2 * q1 * q2).sqrt()


def erf_d1(q: Tensor) -> Tensor:
    """E[erf'(sqrt(q) z)^2] = (4/pi) / sqrt(1 + 4q)."""
    return 4 / math.pi / (1 + 4 * _t(q)).sqrt()


def erf_d2(q: Tensor) -> Tensor:
    """E[erf''(sqrt(q) z)^2] = (16/pi) q (1 + 4q)^(-3/2)."""
    q = _t(q)
    return 16 / math.pi * q * (1 + 4 * q) ** -1.5


# hard-tanh (1D only: the 2D map has no short closed form) -----------------------------------
def hardtanh_d1(q: Tensor) -> Tensor:
    """E[hardtanh'(sqrt(q) z)^2k] = P(|sqrt(q) z| < 1) = erf(1 / sqrt(2q)), every k."""
    return torch.erf(1 / (2 * _t(q)).sqrt())


# complex modulus ----------------------------------------------------------------------------
def ellipk_ellipe(k: Tensor, iters: int = 40) -> tuple[Tensor, Tensor]:
    """Complete elliptic integrals K(k), E(k) of modulus k in [0, 1) by the AGM (float64)."""
    k = _t(k)
    a, b = torch.ones_like(k), (1 - k**2).sqrt()
    cn, s, p = k.clone(), 0.5 * k**2, 0.5
    for _ in range(iters):
        a, b, cn = (a + b) / 2, (a * b).sqrt(), (a - b) / 2
        p *= 2
        s = s + p * cn**2
    kk = math.pi / (2 * a)
    return kk, kk * (1 - s)


def modulus_vc(q1: Tensor, q2: Tensor, c: Tensor) -> Tensor:
    """E[|h_1| |h_2|] for circular complex Gaussians: sqrt(q1 q2) [2E(c) - (1-c^2)K(c)] / 2."""
    c = _t(c).abs().clamp(max=C_MAX)
    kk, ee = ellipk_ellipe(c)
    return (_t(q1) * _t(q2)).sqrt() * (2 * ee - (1 - c**2) * kk) / 2


def modulus_dc(c: Tensor) -> Tensor:
    """(d/dc) E[|h_1||h_2|] / sqrt(q1 q2) = [E(c) - (1 - c^2) K(c)] / (2c); 1/2 at c = 1."""
    c = _t(c).abs().clamp(1e-6, C_MAX)
    kk, ee = ellipk_ellipe(c)
    return (ee - (1 - c**2) * kk) / (2 * c)
