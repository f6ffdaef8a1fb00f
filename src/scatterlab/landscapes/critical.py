"""Critical points of a small network's loss at many loss levels, and their index.

Pennington & Bahri (2017) predict the index alpha (fraction of negative Hessian eigenvalues) of
critical points from their loss eps: H = H_0 + H_1 with H_0 Wishart-like (Gauss-Newton) and H_1
Wigner-like with a scale growing with eps, so alpha = 0 below a loss eps_c and

    alpha ~ alpha_0 |(eps - eps_c) / eps_c|^{3/2},  alpha_0 = 4 sqrt(2) / (3 pi)   (eps > eps_c).

- `TwoLayerRegression`: f(x) = W_2 tanh(W_1 x + b_1) / sqrt(n) + b_2 with squared loss on fixed
  data, written on a flat parameter vector so that the exact Hessian of a batch of parameter
  vectors is one `torch.func.vmap(hessian)` call (a few hundred parameters).
- `find_critical_points`: damped Newton on the gradient, batched over starts: d = -H^+ g with
  the exact H, and a backtracking step on ||g||. d always descends ||g||^2 (Levenberg-Marquardt
  steps (H^2 + lam I)^{-1} H g, tried first, stalled at ||g|| ~ 1e-3 on most starts: for large
  lam they are gradient steps on ||g||^2, which is badly conditioned); it converges
  quadratically to saddles of any index where H is non-singular.
- `fit_index_law`: least squares of alpha = a |(eps - eps_c) / eps_c|^k on eps > eps_c.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor
from torch.func import grad, hessian, vmap

from scatterlab.errors import ConfigError

ALPHA0 = 4 * math.sqrt(2) / (3 * math.pi)  # Pennington & Bahri's prefactor of the 3/2 law


class TwoLayerRegression:
    """One hidden tanh layer, linear output, mean squared loss (1 / 2m) sum ||f(x) - y||^2 on
    m random Gaussian inputs (d) and targets (k), float64. teacher: the targets are a random
    network of the same shape plus `noise` times Gaussian noise (a loss range from the noise
    floor up to the targets' variance), else pure noise.

    Parameters are flat vectors theta of length P = n d + n + k n + k (`dim`).
    """

    def __init__(
        self,
        d: int,
        n: int,
        k: int,
        m: int,
        seed: int = 0,
        noise: float = 1.0,
        decay: float = 0.0,
        teacher: bool = False,
    ) -> None:
        if min(d, n, k, m) < 1:
            raise ConfigError(f"d, n, k, m = {d}, {n}, {k}, {m}: all must be >= 1")
        self.d, self.n, self.k, self.m = int(d), int(n), int(k), int(m)
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(m, d, generator=g, dtype=torch.float64)
        self.y = noise * torch.randn(m, k, generator=g, dtype=torch.float64)
        self.dim = n * d + n + k * n + k
        if teacher:  # y = a random network of the same shape (unit-variance weights) + noise
            t = torch.randn(self.dim, generator=g, dtype=torch.float64)
            self.y = self.outputs(t) + self.y
        # (decay / 2) ||theta||^2: keeps minima finite (random targets are fitted by saturating
        # tanh units whose weights otherwise drift to infinity: degenerate, Newton-hostile)
        self.decay = float(decay)

    def unpack(self, theta: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        d, n, k = self.d, self.n, self.k
        i = 0
        w1 = theta[i : i + n * d].reshape(n, d)
        i += n * d
        b1 = theta[i : i + n]
        i += n
        w2 = theta[i : i + k * n].reshape(k, n)
        i += k * n
        return w1, b1, w2, theta[i : i + k]

    def outputs(self, theta: Tensor) -> Tensor:
        w1, b1, w2, b2 = self.unpack(theta)
        # 1/sqrt(d), 1/sqrt(n): unit-scale pre-activations and outputs at unit-variance theta
        h = torch.tanh(self.x @ w1.T / math.sqrt(self.d) + b1)
        return h @ w2.T / math.sqrt(self.n) + b2

    def loss(self, theta: Tensor) -> Tensor:
        fit = 0.5 * ((self.outputs(theta) - self.y) ** 2).sum(-1).mean()
        return fit + 0.5 * self.decay * (theta**2).sum()

    def random_points(self, count: int, scales: Tensor, seed: int = 1) -> Tensor:
        """count parameter vectors, row i Gaussian of standard deviation scales[i % len]."""
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(count, self.dim, generator=g, dtype=torch.float64)
        s = torch.as_tensor(scales, dtype=torch.float64)
        return z * s[torch.arange(count) % len(s)][:, None]

    def losses(self, theta: Tensor) -> Tensor:
        return self._forward(theta)[-1]

    def _forward(self, theta: Tensor) -> tuple[Tensor, ...]:
        """Batched forward in the augmented form a = xt U^T, f = ht V^T with xt = [x / sqrt d, 1],
        U = [W_1, b_1], ht = [h / sqrt n, 1], V = [W_2, b_2] (the same numbers as theta)."""
        b, (n, d, k) = theta.shape[0], (self.n, self.d, self.k)
        i1, i2, i3 = n * d, n * d + n, n * d + n + k * n
        w1, b1 = theta[:, :i1].reshape(b, n, d), theta[:, i1:i2]
        w2, b2 = theta[:, i2:i3].reshape(b, k, n), theta[:, i3:]
        u = torch.cat([w1, b1[..., None]], -1)  # (B, n, d+1)
        v = torch.cat([w2, b2[..., None]], -1)  # (B, k, n+1)
        xt = torch.cat([self.x / math.sqrt(d), torch.ones(self.m, 1, dtype=theta.dtype)], -1)
        h = torch.tanh(torch.einsum("il,bjl->bij", xt, u))  # (B, m, n)
        ht = torch.cat([h / math.sqrt(n), torch.ones_like(h[..., :1])], -1)
        r = torch.einsum("bij,bcj->bic", ht, v) - self.y  # residuals (B, m, k)
        loss = 0.5 * (r**2).sum(-1).mean(-1) + 0.5 * self.decay * (theta**2).sum(-1)
        return xt, u, v, h, ht, r, loss

    def _pack(self, gu: Tensor, gv: Tensor) -> Tensor:
        """(B, n, d+1) and (B, k, n+1) blocks back to theta's order (W_1, b_1, W_2, b_2)."""
        b = gu.shape[0]
        return torch.cat(
            [
                gu[..., :-1].reshape(b, -1),
                gu[..., -1],
                gv[..., :-1].reshape(b, -1),
                gv[..., -1],
            ],
            -1,
        )

    def gradients(self, theta: Tensor) -> Tensor:
        """Closed-form gradients (B, P) of the batch of parameter vectors theta (B, P)."""
        xt, u, v, h, ht, r, _ = self._forward(theta)
        m, sn = self.m, math.sqrt(self.n)
        gv = torch.einsum("bic,bij->bcj", r, ht) / m
        back = torch.einsum("bic,bcj->bij", r, v[..., :-1]) * (1 - h**2) / sn  # dL/da * m
        gu = torch.einsum("bij,il->bjl", back, xt) / m
        return self._pack(gu, gv) + self.decay * theta

    def hessians(self, theta: Tensor) -> Tensor:
        """Closed-form Hessians (B, P, P): the Gauss-Newton part J^T J / m plus the residual
        part sum_i r_i . d^2 f_i / m (tanh'' = -2 tanh tanh'); checked against autograd."""
        xt, u, v, h, ht, r, _ = self._forward(theta)
        b, m, n, k, d1 = theta.shape[0], self.m, self.n, self.k, self.d + 1
        sn = math.sqrt(n)
        hp = 1 - h**2
        hpp = -2 * h * hp
        vn = v[..., :-1]  # (B, k, n)
        # Jacobians of f_c(x_i): wrt U[j, l] V[c, j] h'_ij xt_il / sqrt n; wrt V[c', j] d_cc' ht_ij
        ju = torch.einsum("bcj,bij,il->bicjl", vn, hp, xt) / sn  # (B, m, k, n, d+1)
        ju = ju.reshape(b, m, k, n * d1)
        huu = torch.einsum("bicp,bicq->bpq", ju, ju) / m
        rv = torch.einsum("bic,bcj->bij", r, vn)  # (B, m, n)
        res = torch.einsum("bij,il,io->bjlo", rv * hpp, xt, xt) / (sn * m)  # diagonal in j
        huu = huu.reshape(b, n, d1, n, d1)
        idx = torch.arange(n)
        huu[:, idx, :, idx, :] += res.permute(1, 0, 2, 3)
        huu = huu.reshape(b, n * d1, n * d1)
        # U-V block: J_u^T J_v / m + residual d^2 f_c / dU[j, l] dV[c, j] = h'_ij xt_il / sqrt n
        huv = torch.einsum("bicp,bij->bpcj", ju, ht) / m  # (B, n d1, k, n+1)
        cross = torch.einsum("bic,bij,il->bjlc", r, hp, xt) / (sn * m)  # (B, n, d1, k)
        huv = huv.reshape(b, n, d1, k, n + 1)
        huv[:, idx, :, :, idx] += cross.permute(1, 0, 2, 3)
        huv = huv.reshape(b, n * d1, k * (n + 1))
        hvv_block = torch.einsum("bij,bio->bjo", ht, ht) / m  # (B, n+1, n+1), same for each c
        eye = torch.eye(k, dtype=theta.dtype)
        hvv = torch.einsum("cd,bjo->bcjdo", eye, hvv_block).reshape(b, k * (n + 1), k * (n + 1))
        full = torch.cat(
            [torch.cat([huu, huv], -1), torch.cat([huv.transpose(-1, -2), hvv], -1)], -2
        )
        perm = self._perm()
        return full[:, perm][:, :, perm] + self.decay * torch.eye(self.dim, dtype=theta.dtype)

    def _perm(self) -> Tensor:
        """theta index -> position in the (U, V) block order of `hessians`."""
        n, d, k = self.n, self.d, self.k
        pos_u = torch.arange(n * (d + 1)).reshape(n, d + 1)
        pos_v = n * (d + 1) + torch.arange(k * (n + 1)).reshape(k, n + 1)
        return torch.cat(
            [pos_u[:, :-1].reshape(-1), pos_u[:, -1], pos_v[:, :-1].reshape(-1), pos_v[:, -1]]
        )

    def hessians_autograd(self, theta: Tensor) -> Tensor:
        """The same Hessians by torch.func (slow; the reference of the tests)."""
        return vmap(hessian(self.loss))(theta)

    def gradients_autograd(self, theta: Tensor) -> Tensor:
        return vmap(grad(self.loss))(theta)

    def gauss_newton(self, theta: Tensor) -> Tensor:
        """H_0 = J^T J / m (squared loss: d^2 l / df^2 = I / m), one per row of theta."""

        def h0(t: Tensor) -> Tensor:
            j = torch.func.jacrev(self.outputs)(t).reshape(self.m * self.k, self.dim)
            return j.T @ j / self.m

        return vmap(h0)(theta)

    def descend(self, theta: Tensor, lr: float, steps: int, keep_every: int) -> Tensor:
        """Full-batch gradient descent from each row; the iterates every keep_every steps
        (snapshots, shape (steps // keep_every, B, P)): starts at many loss levels."""
        out = []
        theta = theta.clone()
        for s in range(1, steps + 1):
            theta = theta - lr * self.gradients(theta)
            if s % keep_every == 0:
                out.append(theta.clone())
        return torch.stack(out) if out else theta[None]


def find_critical_points(
    model: TwoLayerRegression,
    theta: Tensor,
    iters: int = 100,
    tol: float = 1e-10,
    chunk: int = 256,
) -> dict[str, Tensor]:
    """Newton / Levenberg-Marquardt on the gradient from each row of theta (B, P): with the
    exact H's eigendecomposition, the candidates s (H^2 + lam I)^{-1} H g for lam / max|eig|^2
    in 0 (Newton, null directions dropped), 1e-10, ..., 1 and s in 1, 0.5, 0.1 are all tried
    (one batched gradient) and the one with the smallest ||g|| is taken. Each is a descent
    direction of ||g||^2 / 2 whatever H's signature, so saddles of any index attract; far off,
    the damped steps make progress, and near a non-degenerate critical point the Newton step
    converges quadratically.

    Returns theta (B, P), grad_norm (B,) (the final ||g||), converged (B,) (grad_norm < tol),
    iters (B,) (steps until converged), loss (B,).
    """
    if iters < 1 or tol <= 0:
        raise ConfigError(f"iters={iters}, tol={tol}: need iters >= 1 and tol > 0")
    outs = [_newton(model, t, iters, tol) for t in theta.split(chunk)]
    return {k: torch.cat([o[k] for o in outs]) for k in outs[0]}


# candidate steps per iteration: damping lam (relative to max|eig|^2; 0 = Newton) x step size
_LAMS = torch.tensor([0.0, 1e-10, 1e-8, 1e-6, 1e-4, 1e-2, 1.0], dtype=torch.float64)
_STEPS = torch.tensor([1.0, 0.5, 0.1], dtype=torch.float64)


def _newton(model: TwoLayerRegression, theta: Tensor, iters: int, tol: float) -> dict:
    theta = theta.clone()
    b = theta.shape[0]
    g = model.gradients(theta)
    gn = g.norm(dim=-1)
    done = gn < tol
    used = torch.zeros(b, dtype=torch.long)
    lams = _LAMS[:, None].expand(-1, len(_STEPS)).reshape(-1)
    steps = _STEPS[None, :].expand(len(_LAMS), -1).reshape(-1)
    for it in range(iters):
        act = (~done).nonzero(as_tuple=True)[0]
        if act.numel() == 0:
            break
        ev, vec = torch.linalg.eigh(model.hessians(theta[act]))
        big = ev.abs().amax(-1, keepdim=True)
        keep = ev.abs() > 1e-12 * big  # Newton (lam = 0) drops the null directions
        gv = (vec.transpose(-1, -2) @ g[act][..., None])[..., 0]  # (A, P)
        lam = lams[:, None, None] * big[None] ** 2  # (C, A, 1)
        coef = torch.where(keep[None], ev[None] / (ev[None] ** 2 + lam).clamp_min(1e-300), 0.0)
        d = -(vec[None] @ (steps[:, None, None] * coef * gv[None])[..., None])[..., 0]
        cand = theta[act][None] + d  # (C, A, P): every candidate, one batched gradient
        gc = model.gradients(cand.reshape(-1, model.dim)).reshape(len(lams), len(act), -1)
        gnc = gc.norm(dim=-1)
        best = gnc.argmin(0)
        pick = torch.arange(len(act))
        ok = gnc[best, pick] < gn[act]
        sel = act[ok]
        theta[sel] = cand[best[ok], pick[ok]]
        g[sel], gn[sel] = gc[best[ok], pick[ok]], gnc[best[ok], pick[ok]]
        newly = act[gn[act] < tol]
        used[newly] = it + 1
        done[newly] = True
    used[~done] = iters
    return {
        "theta": theta,
        "grad_norm": gn,
        "converged": done,
        "iters": used,
        "loss": model.losses(theta),
    }


def hessian_index(hess: Tensor, rel_tol: float = 1e-8) -> tuple[Tensor, Tensor]:
    """(index, eigenvalues) of a batch of symmetric matrices: the fraction of eigenvalues below
    -rel_tol * max|eig| (zero modes are not negative directions)."""
    ev = torch.linalg.eigvalsh(hess)
    thr = rel_tol * ev.abs().amax(-1, keepdim=True)
    return (ev < -thr).double().mean(-1), ev


def fit_index_law(loss: np.ndarray, alpha: np.ndarray) -> dict[str, float]:
    """Fit alpha = a ((eps - eps_c) / eps_c)^k for eps > eps_c, alpha = 0 below, by least
    squares over (a, eps_c, k) (scipy's curve_fit from a grid of eps_c starts); also the fit
    with k fixed to 3/2. Returns a, eps_c, k, rmse and a_32, eps_c_32, rmse_32."""
    from scipy.optimize import curve_fit

    eps, al = np.asarray(loss, float), np.asarray(alpha, float)
    if len(eps) < 4:
        raise ConfigError(f"{len(eps)} critical points: the index law needs at least 4")

    def law(e: np.ndarray, a: float, ec: float, k: float) -> np.ndarray:
        return a * np.clip((e - ec) / ec, 0, None) ** k

    best, best32 = None, None
    lo = max(float(eps.min()), 1e-6)
    for ec0 in np.linspace(lo, float(np.quantile(eps, 0.6)), 12):
        for k0 in (1.0, 1.5, 2.0):
            try:
                p, _ = curve_fit(
                    law,
                    eps,
                    al,
                    p0=(0.5, ec0, k0),
                    bounds=([0, 1e-9, 0.1], [10, 10 * eps.max(), 5]),
                )
            except RuntimeError:
                continue
            r = float(np.sqrt(np.mean((law(eps, *p) - al) ** 2)))
            if best is None or r < best[1]:
                best = (p, r)
        try:
            p32, _ = curve_fit(
                lambda e, a, ec: law(e, a, ec, 1.5),
                eps,
                al,
                p0=(0.5, ec0),
                bounds=([0, 1e-9], [10, 10 * eps.max()]),
            )
        except RuntimeError:
            continue
        r32 = float(np.sqrt(np.mean((law(eps, *p32, 1.5) - al) ** 2)))
        if best32 is None or r32 < best32[1]:
            best32 = (p32, r32)
    if best is None or best32 is None:
        raise ConfigError("the index law fit did not converge")
    (a, ec, k), r = best
    (a32, ec32), r32 = best32
    return {
        "a": float(a),
        "eps_c": float(ec),
        "k": float(k),
        "rmse": r,
        "a_32": float(a32),
        "eps_c_32": float(ec32),
        "rmse_32": r32,
    }


__all__ = [
    "ALPHA0",
    "TwoLayerRegression",
    "find_critical_points",
    "fit_index_law",
    "hessian_index",
]
