"""Centred kernel alignment (Kornblith, Norouzi, Lee & Hinton, ICML 2019).

CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)), HSIC(K, L) = tr(K H L H) (the
1/(n-1)^2 cancels), H = I - 11^T/n. Linear CKA uses K = X X^T and reduces to
||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F) on column-centred X, Y. RBF CKA uses
k(x, x') = exp(-||x - x'||^2 / (2 sigma^2)) with sigma^2 = threshold^2 * median of the
squared distances (zero diagonal included, as Kornblith's `gram_rbf`), which keeps it
invariant to isotropic scaling. All in float64; memory O(n^2).
"""

from __future__ import annotations

import torch
from torch import Tensor


def _flat(x: Tensor) -> Tensor:
    return x.detach().flatten(1).to("cpu", torch.float64)


def linear_cka(x: Tensor, y: Tensor) -> float:
    """Linear CKA of features x (n, p1) and y (n, p2) of the same n inputs (any trailing shape)."""
    x, y = _flat(x), _flat(y)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"CKA needs the same inputs: {x.shape[0]} vs {y.shape[0]} rows")
    x, y = x - x.mean(0), y - y.mean(0)
    # n x n Grams when n < p: the same value, and cheaper for wide layers.
    if x.shape[0] < max(x.shape[1], y.shape[1]):
        return gram_cka(x @ x.T, y @ y.T, centred=True)
    num = (y.T @ x).square().sum()
    den = (x.T @ x).norm() * (y.T @ y).norm()
    return float(num / den) if den > 0 else 0.0


def _centre(k: Tensor) -> Tensor:
    return k - k.mean(0, keepdim=True) - k.mean(1, keepdim=True) + k.mean()


def gram_cka(k: Tensor, l: Tensor, centred: bool = False) -> float:  # noqa: E741
    """CKA of two n x n Gram matrices."""
    if not centred:
        k, l = _centre(k.to(torch.float64)), _centre(l.to(torch.float64))  # noqa: E741
    hsic = (k * l).sum()
    den = (k * k).sum().sqrt() * (l * l).sum().sqrt()
    return float(hsic / den) if den > 0 else 0.0


def gram_rbf(x: Tensor, threshold: float = 0.5) -> Tensor:
    """RBF Gram (n, n) with sigma^2 = threshold^2 * median squared distance."""
    x = _flat(x)
    sq = (x * x).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2 * x @ x.T).clamp_min(0)
    med = _median(d2.flatten())
    if med <= 0:
        return torch.ones_like(d2)
    return torch.exp(-d2 / (2 * threshold**2 * med))


def _median(v: Tensor) -> Tensor:
    """numpy's median (the mean of the two middle values for an even count; torch.median
    returns the lower one), as in Kornblith's reference code."""
    n = v.numel()
    hi = v.kthvalue(n // 2 + 1).values
    return hi if n % 2 else (hi + v.kthvalue(n // 2).values) / 2


def rbf_cka(x: Tensor, y: Tensor, threshold: float = 0.5) -> float:
    """RBF CKA of features x (n, ...) and y (n, ...)."""
    return gram_cka(gram_rbf(x, threshold), gram_rbf(y, threshold))


def cka_matrix(
    feats_a: dict[str, Tensor], feats_b: dict[str, Tensor] | None = None, kind: str = "linear"
) -> tuple[list[str], list[str], Tensor]:
    """CKA between every layer of `feats_a` and every layer of `feats_b` (default: a itself).

    feats: layer name -> features (n, ...) of the same n inputs. Returns (rows, cols, (R, C)).
    """
    same = feats_b is None
    feats_b = feats_a if feats_b is None else feats_b

    def gram(x: Tensor) -> Tensor:
        if kind == "rbf":
            k = gram_rbf(x)
        else:
            x = _flat(x)
            x = x - x.mean(0)
            k = x @ x.T
        k = _centre(k)
        return k / (k * k).sum().sqrt().clamp_min(1e-300)

    if kind not in ("linear", "rbf"):
        raise ValueError(f"CKA kind must be linear or rbf, got {kind!r}")
    # Each layer's centred, normalised Gram once: CKA is then their Frobenius inner product.
    ga = [gram(v) for v in feats_a.values()]
    gb = ga if same else [gram(v) for v in feats_b.values()]
    rows, cols = list(feats_a), list(feats_b)
    out = torch.stack([torch.stack([(a * b).sum() for b in gb]) for a in ga])
    return rows, cols, out
