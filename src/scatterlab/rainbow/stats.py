"""Streaming activation statistics and orthogonal (Procrustes) alignment.

Conventions of the rainbow reference (docs/rainbow.md): moments are **uncentred**, spatial
positions count as extra samples ((B, C, H, W) -> (B H W, C)), and the alignment of a new
representation psi onto a reference phi is A = U V^T from the SVD of M = E[phi psi^T]
(D_ref x D_new), so that A psi ~ phi. Complex tensors use E[phi psi^H] and A = U V^H (unitary).

Per batch the products run in the compute dtype (float32 by default: fast, and a batch sums
at most a few thousand terms); the running sums are float64, so the result does not lose
precision when the data set grows to millions of samples (50,000 images x 4 positions).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def space_to_batch(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B H W, C); (B, C) is returned as is."""
    if x.ndim == 2:
        return x
    if x.ndim != 4:
        raise ValueError(f"expected (B, C) or (B, C, H, W) activations, got shape {tuple(x.shape)}")
    return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])


class MomentAccumulator:
    """Streaming uncentred moments of x (D_x features) and optionally y (D_y features).

    Accumulates, in float64: the count, sums of x and y (first moments), per-feature sums of
    |x|^2 and |y|^2, the full second moment of x when `full_x`, and the cross moment
    sum x y^H (D_x, D_y) when `dim_y` is given. Memory is O(D_x D_y), independent of the
    number of samples. Complex inputs give complex moments.
    """

    def __init__(
        self,
        dim_x: int,
        dim_y: int | None = None,
        *,
        full_x: bool = False,
        complex: bool = False,
        device: torch.device | str | None = None,
        compute_dtype: torch.dtype = torch.float32,
    ) -> None:
        acc = torch.complex128 if complex else torch.float64
        self.compute_dtype = (
            (torch.complex64 if compute_dtype == torch.float32 else torch.complex128)
            if complex
            else compute_dtype
        )
        self.dim_x, self.dim_y, self.full_x = dim_x, dim_y, full_x
        self.count = 0
        self.sum_x = torch.zeros(dim_x, dtype=acc, device=device)
        self.sq_x = torch.zeros(dim_x, dtype=torch.float64, device=device)
        self.xx = torch.zeros(dim_x, dim_x, dtype=acc, device=device) if full_x else None
        if dim_y is not None:
            self.sum_y = torch.zeros(dim_y, dtype=acc, device=device)
            self.sq_y = torch.zeros(dim_y, dtype=torch.float64, device=device)
            self.xy = torch.zeros(dim_x, dim_y, dtype=acc, device=device)

    @torch.no_grad()
    def update(self, x: Tensor, y: Tensor | None = None) -> None:
        """Add a batch: x (B, D_x) or (B, D_x, H, W); y likewise with D_y, same samples."""
        x = space_to_batch(x).to(self.compute_dtype)
        if x.shape[1] != self.dim_x:
            raise ValueError(f"x has {x.shape[1]} features, expected {self.dim_x}")
        self.count += x.shape[0]
        self.sum_x += x.sum(0).to(self.sum_x.dtype)
        self.sq_x += (x.abs() ** 2).sum(0).double()
        if self.xx is not None:
            self.xx += (x.T @ x.conj()).to(self.xx.dtype)
        if self.dim_y is None:
            return
        if y is None:
            raise ValueError("this accumulator has a y side: pass y")
        y = space_to_batch(y).to(self.compute_dtype)
        if y.shape != (x.shape[0], self.dim_y):
            raise ValueError(f"y has shape {tuple(y.shape)}, expected ({x.shape[0]}, {self.dim_y})")
        self.sum_y += y.sum(0).to(self.sum_y.dtype)
        self.sq_y += (y.abs() ** 2).sum(0).double()
        self.xy += (x.T @ y.conj()).to(self.xy.dtype)

    def _n(self) -> int:
        if self.count == 0:
            raise ValueError("no samples were accumulated")
        return self.count

    @property
    def mean_x(self) -> Tensor:
        """E[x], (D_x,)."""
        return self.sum_x / self._n()

    @property
    def mean_y(self) -> Tensor:
        """E[y], (D_y,)."""
        return self.sum_y / self._n()

    @property
    def second_x(self) -> Tensor:
        """Uncentred second moment E[x x^H], (D_x, D_x) (needs full_x)."""
        if self.xx is None:
            raise ValueError("built without full_x=True")
        return self.xx / self._n()

    @property
    def power_x(self) -> Tensor:
        """E|x_i|^2 per feature, (D_x,)."""
        return self.sq_x / self._n()

    @property
    def power_y(self) -> Tensor:
        """E|y_i|^2 per feature, (D_y,)."""
        return self.sq_y / self._n()

    @property
    def cross(self) -> Tensor:
        """Uncentred cross moment E[x y^H], (D_x, D_y)."""
        return self.xy / self._n()


def procrustes(cross: Tensor) -> tuple[Tensor, Tensor]:
    """Alignment A = U V^H from the SVD of M = E[phi psi^H] = U S V^H.

    cross: (D_ref, D_new). Returns (A (D_ref, D_new), singular values S (min(D_ref, D_new),)).
    A minimizes E|A psi - phi|^2 among matrices with orthonormal columns (or rows).
    """
    u, s, vh = torch.linalg.svd(cross, full_matrices=False)
    return u @ vh, s


@dataclass
class Alignment:
    """An alignment A (D_ref, D_new) with its quality measures.

    error: relative mean-square alignment error E|A psi - phi|^2 / E|phi|^2;
    r2: explained variance tr S / sqrt(E|phi|^2 E|psi|^2) (1 for a perfect alignment).
    """

    matrix: Tensor
    singular_values: Tensor
    error: float
    r2: float


def align(cross: Tensor, power_ref: float, power_new: float) -> Alignment:
    """Procrustes alignment and its quality from the moments.

    cross: E[phi psi^H] (D_ref, D_new); power_ref = E|phi|^2, power_new = E|psi|^2.
    With A orthogonal, E|A psi - phi|^2 = E|phi|^2 + E|psi|^2 - 2 tr S (when D_new <= D_ref;
    otherwise A drops the part of psi outside its row space, and the formula is a bound).
    """
    a, s = procrustes(cross)
    tr = float(s.sum())
    err = max(power_ref + power_new - 2 * tr, 0.0) / max(power_ref, 1e-300)
    r2 = tr / max((power_ref * power_new) ** 0.5, 1e-300)
    return Alignment(a, s, err, r2)


def standardized_alignment(
    acc: MomentAccumulator, pool: callable | None = None, eps: float = 1e-5
) -> tuple[Alignment, Tensor, Tensor]:
    """Align a raw new representation that a standardization will re-centre and re-scale.

    acc holds x = phi (the reference, already standardized by its own fixed statistics) and
    y = the new network's raw (pre-standardization) features. The new statistics are the
    exact mean and variance of y (`pool` maps per-feature variances to the layer's pooled
    ones, e.g. one variance per complex channel), and the cross moment of the standardized
    y' = (y - mu) / sqrt(var + eps) follows from the raw moments without a second pass:
    E[phi y'^T] = (E[phi y^T] - E[phi] mu^T) / sqrt(var + eps).
    Returns (alignment, new mean (D_y,), new variance (D_y,)), float64.
    """
    mu = acc.mean_y
    var = (acc.power_y - mu.abs() ** 2).clamp_min(0)
    if pool is not None:
        var = pool(var)
    scale = (var + eps).rsqrt()
    cross = (acc.cross - acc.mean_x[:, None] * mu.conj()[None, :]) * scale[None, :]
    power_new = float(((acc.power_y - mu.abs() ** 2).clamp_min(0) * scale**2).sum())
    return align(cross, float(acc.power_x.sum()), power_new), mu, var
