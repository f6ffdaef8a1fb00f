"""The optimal information-bottleneck curve of a known p(x, y) (Tishby, Pereira & Bialek 1999).

For a trade-off beta, the IB encoder p(t|x) minimises I(X;T) - beta I(T;Y). Its stationary
points satisfy the self-consistent equations, iterated here (a Blahut-Arimoto scheme):

    p(t|x) = p(t) exp(-beta KL[p(y|x) || p(y|t)]) / Z(x, beta),
    p(t)   = sum_x p(x) p(t|x),
    p(y|t) = sum_x p(y|x) p(t|x) p(x) / p(t).

Sweeping beta upwards, each solution warm-starting the next (deterministic annealing, with a
small perturbation so clusters can split), traces (I(X;T), I(T;Y)): the IB curve, the most
information about Y that any representation with a given I(X;T) can keep. Every point is
achievable, so a finite-cardinality encoder (`n_clusters` values of T) gives a curve on or just
under the optimum. At beta -> 0: I(X;T) = I(T;Y) = 0; at large beta: I(T;Y) -> I(X;Y).

Deterministic labels (y = f(x), the 12-bit task as generated): the curve is known in closed
form, I(T;Y) = min(I(X;T), H(Y)) (Kolchinsky, Tracey & Van Kuyk, ICLR 2019), and the
Lagrangian only finds its corners. `deterministic_bound` gives it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

LN2 = math.log(2)


def _entropy_bits(p: Tensor) -> float:
    p = p[p > 0]
    return float(-(p * p.log2()).sum())


def mutual_information(p_x: Tensor, p_y_x: Tensor) -> float:
    """I(X;Y) in bits of p(x) (n,) and p(y|x) (n, m)."""
    return _entropy_bits(p_x @ p_y_x) - sum(
        float(px) * _entropy_bits(row) for px, row in zip(p_x, p_y_x, strict=True)
    )


def _information(p_x: Tensor, q: Tensor, p_y_x: Tensor) -> tuple[float, float]:
    """(I(X;T), I(T;Y)) in bits of the encoder q = p(t|x) (n, k)."""
    tiny = torch.finfo(q.dtype).tiny
    p_t = p_x @ q
    ixt = (p_x[:, None] * q * (q.clamp_min(tiny) / p_t.clamp_min(tiny)).log()).sum()
    p_ty = (q * p_x[:, None]).T @ p_y_x  # joint p(t, y) (k, m)
    p_y = p_ty.sum(0)
    ratio = p_ty.clamp_min(tiny) / (p_t[:, None] * p_y[None, :]).clamp_min(tiny)
    ity = (p_ty * ratio.log()).sum()
    return float(ixt) / LN2, float(ity) / LN2


def iterative_ib(
    p_x: Tensor,
    p_y_x: Tensor,
    beta: float,
    q: Tensor,
    max_iter: int = 500,
    tol: float = 1e-9,
) -> tuple[Tensor, int]:
    """Iterate the IB equations at one beta from the encoder q (n, k); returns (q, iterations).

    p_x (n,), p_y_x (n, m) rows summing to 1. Stops when max |q_new - q| < tol.
    """
    tiny = torch.finfo(q.dtype).tiny
    # sum_y p(y|x) log p(y|x): the part of the KL that does not depend on t
    neg_h = (p_y_x * p_y_x.clamp_min(tiny).log()).sum(1, keepdim=True)
    it = 0
    while it < max_iter:
        it += 1
        p_t = p_x @ q
        p_y_t = ((q * p_x[:, None]).T @ p_y_x) / p_t.clamp_min(tiny)[:, None]
        kl = neg_h - p_y_x @ p_y_t.clamp_min(tiny).log().T  # (n, k)
        logits = p_t.clamp_min(tiny).log()[None, :] - beta * kl
        new = torch.softmax(logits, dim=1)
        delta = float((new - q).abs().max())
        q = new
        if delta < tol:
            break
    return q, it


def ib_curve(
    p_x: Tensor,
    p_y_x: Tensor,
    betas: Tensor,
    n_clusters: int = 64,
    max_iter: int = 500,
    tol: float = 1e-9,
    seed: int = 0,
) -> dict[str, list[float]]:
    """The IB curve over increasing `betas`: {"beta", "ixt", "ity", "iterations"} (bits).

    p_x (n,), p_y_x (n, m) (float64 is used); `n_clusters` values of T. Each beta starts from
    the previous solution, with duplicate clusters merged and empty ones split off used ones
    (deterministic annealing, `_resplit`).
    A point whose Lagrangian is worse than the previous encoder's at the same beta (a worse
    local optimum) is replaced by the previous point, which is achievable too.
    """
    # inputs with the same p(y|x) merged: a sufficient statistic, the curve is unchanged
    # (deterministic labels: 2 rows instead of 4096)
    p_y_x = p_y_x.to(torch.float64)
    p_y_x = p_y_x / p_y_x.sum(1, keepdim=True)  # rows sum to 1 in float64 too
    p_y_x, inv = torch.unique(p_y_x, dim=0, return_inverse=True)
    p_x = torch.zeros(len(p_y_x), dtype=torch.float64).index_add_(0, inv, p_x.to(torch.float64))
    p_x = p_x / p_x.sum()
    g = torch.Generator().manual_seed(seed)
    n = p_x.shape[0]
    q = torch.full((n, n_clusters), 1.0 / n_clusters, dtype=torch.float64)
    out: dict[str, list[float]] = {"beta": [], "ixt": [], "ity": [], "iterations": []}
    best = (0.0, 0.0)
    for beta in torch.as_tensor(betas, dtype=torch.float64).sort().values.tolist():
        q, iters = iterative_ib(p_x, p_y_x, beta, _resplit(q, p_x, p_y_x, g), max_iter, tol)
        ixt, ity = _information(p_x, q, p_y_x)
        # keep the curve monotone: the previous encoder is feasible at this beta as well
        if ity - ixt / beta < best[1] - best[0] / beta:
            ixt, ity = best
        best = (ixt, ity)
        out["beta"].append(beta)
        out["ixt"].append(ixt)
        out["ity"].append(ity)
        out["iterations"].append(iters)
    return out


def _resplit(q: Tensor, p_x: Tensor, p_y_x: Tensor, g: torch.Generator) -> Tensor:
    """Annealing step between two betas: clusters with the same p(y|t) are merged (they are
    one value of T), then every empty cluster takes a random share of a used one (the most
    spread first), so that a cluster can split when beta passes its critical value; 1% noise
    on top."""
    q = q.clone()
    n, k = q.shape
    p_t = p_x @ q
    p_y_t = ((q * p_x[:, None]).T @ p_y_x) / p_t.clamp_min(1e-300)[:, None]
    live = [t for t in range(k) if p_t[t] > 1e-12]
    for i, a in enumerate(live):
        for b in live[i + 1 :]:
            if p_t[b] > 0 and float((p_y_t[a] - p_y_t[b]).abs().max()) < 1e-7:
                q[:, a] += q[:, b]
                q[:, b] = 0
                p_t[a], p_t[b] = p_t[a] + p_t[b], 0.0
    # split the clusters that hold the most of X first: largest p(t) H(X | T = t)
    p_xt = q * p_x[:, None]
    p_x_t = p_xt / p_t.clamp_min(1e-300)[None, :]
    spread = -(p_xt * p_x_t.clamp_min(1e-300).log()).sum(0)
    used = sorted((t for t in range(k) if p_t[t] > 1e-12), key=lambda t: -float(spread[t]))
    empty = [t for t in range(k) if p_t[t] <= 1e-12]
    for j, d in enumerate(empty):
        src = used[j % len(used)]
        share = torch.where(torch.rand(n, generator=g) < 0.5, 0.6, 0.4).to(q.dtype)
        q[:, d] = q[:, src] * (1 - share)
        q[:, src] = q[:, src] * share
    q = q * (1 + 0.01 * torch.rand(n, k, generator=g, dtype=q.dtype))
    return q / q.sum(1, keepdim=True)


def deterministic_bound(ixt: Tensor, h_y: float) -> Tensor:
    """The IB curve of deterministic labels: I(T;Y) = min(I(X;T), H(Y)) (bits)."""
    return torch.clamp(torch.as_tensor(ixt, dtype=torch.float64), max=h_y)


def infoplane_distribution(
    sharpness: float | None = None,
    coupling: float = 2.5,
    positive_fraction: float = 0.517,
    points_seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """p(x) (4096,) uniform and p(y|x) (4096, 2) of the generated 12-bit task.

    sharpness None: the labels of `scatterlab.data.infoplane` (deterministic, y = 1[f > theta]).
    Otherwise p(y=1|x) = sigmoid(sharpness * (f(x) - theta) / std(f)): a noisy version of the
    same rule whose I(X;Y) < H(Y), for a curve that is not piecewise linear.
    """
    from scatterlab.data.infoplane import labels, patterns, sphere_points

    x = patterns()
    points = sphere_points(points_seed)
    y = labels(x, points, coupling, positive_fraction)
    p_x = torch.full((len(y),), 1.0 / len(y), dtype=torch.float64)
    if sharpness is None:
        p1 = y.to(torch.float64)
    else:
        xf = x.to(torch.float64)
        k = xf.sum(1)
        f = k * (k - 1) / 2 + coupling * ((xf @ points).square().sum(1) - k) / 2
        theta = torch.quantile(f, 1 - positive_fraction)
        p1 = torch.sigmoid(sharpness * (f - theta) / f.std())
    return p_x, torch.stack((p1, 1 - p1), dim=1)
