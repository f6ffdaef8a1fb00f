"""Hessians of a loss in the parameters of any torch model, without forming them.

- `HessianOperator(model, loss_fn, batches)`: loss, gradient and Hessian-vector products
  H v = d/dt grad L(theta + t v) by double backward (any module autograd can differentiate
  twice), on flattened parameters (P,); `full()` forms H exactly (small models).
- Gauss-Newton / residual split (Pennington & Bahri 2017): for L = l(f(theta)),
    H = J^T (d^2 l / df^2) J + sum_k (dl/df_k) d^2 f_k / dtheta^2 = H_0 + H_1,
  H_0 positive semi-definite for a convex l; `gauss_newton_matvec` gives H_0 v by
  J^T (H_l (J v)) with J v from the double-vjp trick.
- `lanczos` (full re-orthogonalisation) -> `top_eigenvalues` (Ritz values) and `slq`: stochastic
  Lanczos quadrature (Ubaru, Chen & Saad 2017; PyHessian's density, with each Ritz value
  weighted by the square of its eigenvector's first component), `slq_density` (Gaussian
  smoothed), `hutchinson_trace` (Rademacher probes), `index` (fraction of negative
  eigenvalues).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from tqdm import tqdm

from scatterlab.errors import ConfigError

Batch = tuple[Tensor, Tensor]
MatVec = Callable[[Tensor], Tensor]


class HessianOperator:
    """The Hessian of the mean loss over `batches` with respect to the model's trainable
    parameters, as an operator on flat vectors (P,) of the parameters' dtype.

    loss_fn(outputs, targets) -> scalar mean loss; batches: one (x, y) or a list of them
    (weighted by their sizes). Counts its Hessian-vector products in `hvps`.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[[Tensor, Tensor], Tensor],
        batches: Batch | Sequence[Batch],
    ) -> None:
        self.model, self.loss_fn = model, loss_fn
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise ConfigError("the model has no trainable parameters: no Hessian to compute")
        if isinstance(batches, tuple) and len(batches) == 2 and isinstance(batches[0], Tensor):
            batches = [batches]
        self.batches = list(batches)
        if not self.batches:
            raise ConfigError("the Hessian needs at least one batch of data")
        total = sum(len(x) for x, _ in self.batches)
        self.fractions = [len(x) / total for x, _ in self.batches]
        self.dim = sum(p.numel() for p in self.params)
        self.dtype, self.device = self.params[0].dtype, self.params[0].device
        self.hvps = 0

    def _flat(self, tensors: Sequence[Tensor | None]) -> Tensor:
        return torch.cat(
            [
                (t if t is not None else torch.zeros_like(p)).reshape(-1)
                for t, p in zip(tensors, self.params, strict=True)
            ]
        )

    def _split(self, v: Tensor) -> list[Tensor]:
        out, i = [], 0
        for p in self.params:
            out.append(v[i : i + p.numel()].view_as(p))
            i += p.numel()
        return out

    def loss(self) -> float:
        with torch.no_grad():
            return sum(
                f * float(self.loss_fn(self.model(x), y))
                for f, (x, y) in zip(self.fractions, self.batches, strict=True)
            )

    def gradient(self) -> Tensor:
        """grad L (P,)."""
        g = torch.zeros(self.dim, dtype=self.dtype, device=self.device)
        for f, (x, y) in zip(self.fractions, self.batches, strict=True):
            grads = torch.autograd.grad(self.loss_fn(self.model(x), y), self.params)
            g += f * self._flat(grads).detach()
        return g

    def matvec(self, v: Tensor) -> Tensor:
        """H v (P,) for v (P,)."""
        self.hvps += 1
        vs = self._split(v.to(self.dtype))
        out = torch.zeros(self.dim, dtype=self.dtype, device=self.device)
        for f, (x, y) in zip(self.fractions, self.batches, strict=True):
            grads = torch.autograd.grad(
                self.loss_fn(self.model(x), y), self.params, create_graph=True
            )
            dot = sum((g * u).sum() for g, u in zip(grads, vs, strict=True))
            hv = torch.autograd.grad(dot, self.params, allow_unused=True)
            out += f * self._flat(hv).detach()
        return out

    def gauss_newton_matvec(self, v: Tensor) -> Tensor:
        """H_0 v = J^T H_l J v (P,) (the Gauss-Newton part; H_1 v = H v - H_0 v)."""
        vs = self._split(v.to(self.dtype))
        out = torch.zeros(self.dim, dtype=self.dtype, device=self.device)
        for f, (x, y) in zip(self.fractions, self.batches, strict=True):
            fx = self.model(x)
            # J v by the double-vjp trick: u -> J^T u is linear in u, so d<J^T u, v>/du = J v
            u = torch.zeros_like(fx, requires_grad=True)
            jtu = torch.autograd.grad(fx, self.params, u, create_graph=True, allow_unused=True)
            dot = sum((g * w).sum() for g, w in zip(jtu, vs, strict=True) if g is not None)
            jv = torch.autograd.grad(dot, u)[0].detach()
            # H_l (J v): Hessian of the loss in the outputs, at the outputs
            out_d = fx.detach().requires_grad_(True)
            (gl,) = torch.autograd.grad(self.loss_fn(out_d, y), out_d, create_graph=True)
            hl_jv = torch.autograd.grad((gl * jv).sum(), out_d)[0]
            jt = torch.autograd.grad(fx, self.params, hl_jv, allow_unused=True)
            out += f * self._flat(jt).detach()
        return out

    def residual_matvec(self, v: Tensor) -> Tensor:
        """H_1 v = H v - H_0 v (P,)."""
        return self.matvec(v) - self.gauss_newton_matvec(v)

    def full(self, part: str = "full") -> Tensor:
        """The exact Hessian (P, P) (part: full | gauss_newton | residual), column by column:
        P Hessian-vector products, for models of up to a few thousand parameters."""
        mv = {
            "full": self.matvec,
            "gauss_newton": self.gauss_newton_matvec,
            "residual": self.residual_matvec,
        }[part]
        eye = torch.eye(self.dim, dtype=self.dtype, device=self.device)
        h = torch.stack([mv(eye[i]) for i in range(self.dim)], 1)
        return 0.5 * (h + h.T)  # symmetric up to round-off


def lanczos(
    matvec: MatVec, v0: Tensor, steps: int, reorthogonalize: bool = True
) -> tuple[Tensor, Tensor]:
    """Lanczos tridiagonalisation from v0 (P,): alpha (k,), beta (k-1,), k <= steps (stops
    early on an invariant subspace). Full re-orthogonalisation keeps the Ritz values free of
    ghost copies (it stores k vectors of size P)."""
    if steps < 1:
        raise ConfigError(f"Lanczos needs steps >= 1, got {steps}")
    q = v0 / v0.norm()
    basis = [q]
    alphas, betas = [], []
    prev, beta = torch.zeros_like(q), 0.0
    for j in range(min(steps, v0.numel())):
        w = matvec(q)
        alpha = float(w @ q)
        w = w - alpha * q - beta * prev
        if reorthogonalize:
            qs = torch.stack(basis)
            w = w - qs.T @ (qs @ w)  # twice is enough (Kahan-Parlett)
            w = w - qs.T @ (qs @ w)
        alphas.append(alpha)
        beta = float(w.norm())
        if j == steps - 1 or beta < 1e-10 * max(abs(alpha), 1e-30):
            break
        betas.append(beta)
        prev, q = q, w / beta
        basis.append(q)
    dt = torch.float64
    return torch.tensor(alphas, dtype=dt), torch.tensor(betas[: len(alphas) - 1], dtype=dt)


def ritz(alpha: Tensor, beta: Tensor) -> tuple[Tensor, Tensor]:
    """Ritz values (k,) and quadrature weights (k,): eigenvalues of the tridiagonal T and the
    squared first components of its eigenvectors (they sum to 1)."""
    t = torch.diag(alpha) + torch.diag(beta, 1) + torch.diag(beta, -1)
    vals, vecs = torch.linalg.eigh(t)
    return vals, vecs[0] ** 2


def _probe(dim: int, gen: torch.Generator, dtype: torch.dtype, device) -> Tensor:
    """A Rademacher vector (P,): E[v v^T] = I."""
    v = torch.randint(0, 2, (dim,), generator=gen, dtype=torch.int64).to(dtype) * 2 - 1
    return v.to(device)


def top_eigenvalues(
    op: HessianOperator | MatVec, k: int = 1, steps: int | None = None, seed: int = 0, dim=None
) -> Tensor:
    """The k largest eigenvalues (k,), descending, as Lanczos Ritz values (steps: default
    max(2k + 20, 30), capped at P); extreme eigenvalues converge first."""
    mv, dim, dtype, dev = _as_matvec(op, dim)
    steps = min(steps or max(2 * k + 20, 30), dim)
    gen = torch.Generator().manual_seed(seed)
    v0 = torch.randn(dim, generator=gen, dtype=torch.float64).to(dtype).to(dev)
    vals, _ = ritz(*lanczos(mv, v0, steps))
    return vals.flip(0)[:k]


def _as_matvec(op: HessianOperator | MatVec, dim: int | None):
    if isinstance(op, HessianOperator):
        return op.matvec, op.dim, op.dtype, op.device
    if dim is None:
        raise ConfigError("a bare matvec needs its dimension dim")
    return op, dim, torch.float64, "cpu"


def hutchinson_trace(
    op: HessianOperator | MatVec, samples: int = 100, seed: int = 0, dim=None, progress=False
) -> tuple[float, float]:
    """tr H estimated as the mean of v^T H v over Rademacher v, and its standard error."""
    mv, dim, dtype, dev = _as_matvec(op, dim)
    gen = torch.Generator().manual_seed(seed)
    vals = []
    for _ in tqdm(range(samples), desc="hutchinson", disable=not progress, leave=False):
        v = _probe(dim, gen, dtype, dev)
        vals.append(float(v @ mv(v)))
    t = torch.tensor(vals, dtype=torch.float64)
    se = float(t.std() / math.sqrt(samples)) if samples > 1 else math.nan
    return float(t.mean()), se


def slq(
    op: HessianOperator | MatVec,
    steps: int = 80,
    probes: int = 4,
    seed: int = 0,
    dim=None,
    progress=False,
) -> tuple[Tensor, Tensor]:
    """Stochastic Lanczos quadrature: nodes (probes, k) and weights (probes, k), each probe's
    weights summing to 1; the spectral measure (1/P) sum_i delta(x - lambda_i) is approximated
    by the mean over probes of sum_j w_j delta(x - node_j)."""
    mv, dim, dtype, dev = _as_matvec(op, dim)
    gen = torch.Generator().manual_seed(seed)
    steps = min(steps, dim)
    nodes = torch.full((probes, steps), math.nan, dtype=torch.float64)
    weights = torch.zeros((probes, steps), dtype=torch.float64)
    for i in tqdm(range(probes), desc="lanczos", disable=not progress, leave=False):
        vals, w = ritz(*lanczos(mv, _probe(dim, gen, dtype, dev), steps))
        nodes[i, : len(vals)], weights[i, : len(vals)] = vals, w
    return nodes, weights


def slq_density(nodes: Tensor, weights: Tensor, grid: Tensor, sigma: float) -> Tensor:
    """Gaussian-smoothed SLQ density on grid (n,): mean over probes of sum_j w_j N(x; node_j,
    sigma^2) -> (n,)."""
    ok = torch.isfinite(nodes)
    n, w = nodes[ok], weights[ok] / nodes.shape[0]
    g = torch.exp(-0.5 * ((grid[:, None] - n[None]) / sigma) ** 2) / (
        sigma * math.sqrt(2 * math.pi)
    )
    return g @ w


def slq_trace(nodes: Tensor, weights: Tensor, dim: int) -> float:
    """tr H = P * mean over probes of sum_j w_j node_j."""
    ok = torch.isfinite(nodes)
    return float(dim * (torch.where(ok, nodes, 0) * weights).sum() / nodes.shape[0])


def slq_index(nodes: Tensor, weights: Tensor, tol: float = 0.0) -> float:
    """Fraction of negative eigenvalues (below -tol) from the SLQ measure."""
    ok = torch.isfinite(nodes)
    return float((weights * (ok & (nodes < -tol))).sum() / nodes.shape[0])


def index(eigenvalues: Tensor, tol: float = 0.0) -> float:
    """Fraction of eigenvalues below -tol (the index of a critical point, normalised)."""
    return float((torch.as_tensor(eigenvalues) < -tol).double().mean())


def wasserstein1(
    eigenvalues: Tensor, nodes: Tensor, weights: Tensor | None = None, points: int = 20001
) -> float:
    """W_1 distance between the eigenvalue measure (1/P) sum delta(lambda_i) and a weighted
    measure (nodes (..., k), weights (..., k), averaged over leading dims; None: uniform),
    int |F_1 - F_2| dx on a fine grid. Unlike a KS distance it does not blow up on the spike of
    near-zero eigenvalues that a smoothed density cannot resolve."""
    ev = torch.as_tensor(eigenvalues, dtype=torch.float64).reshape(-1)
    n = torch.as_tensor(nodes, dtype=torch.float64)
    w = torch.full_like(n, 1.0 / n.shape[-1]) if weights is None else weights.to(torch.float64)
    ok = torch.isfinite(n)
    n, w = n[ok], w[ok] / w[ok].sum()
    lo, hi = float(min(ev.min(), n.min())), float(max(ev.max(), n.max()))
    x = torch.linspace(lo, hi, points, dtype=torch.float64)
    f1 = torch.searchsorted(torch.sort(ev).values, x, right=True).double() / len(ev)
    order = torch.argsort(n)
    cw = torch.cumsum(w[order], 0)
    idx = torch.searchsorted(n[order], x, right=True)
    f2 = torch.where(idx > 0, cw[(idx - 1).clamp_min(0)], torch.zeros_like(x))
    return float(torch.trapezoid((f1 - f2).abs(), x))
