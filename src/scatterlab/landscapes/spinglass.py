"""The spherical pure p-spin glass and the Auffinger-Ben Arous-Cerny complexity of its
critical points (Auffinger, Ben Arous & Cerny 2013; the spin-glass picture of loss surfaces of
Choromanska, Henaff, Mathieu, Ben Arous & LeCun 2015).

    H_N(sigma) = N^{-(p-1)/2} sum_{i_1..i_p} J_{i_1..i_p} sigma_{i_1} ... sigma_{i_p},
    sigma on the sphere |sigma|^2 = N, J i.i.d. N(0, 1).

Only the symmetric part of J enters H, so J is symmetrised once; then (Euler, H homogeneous of
degree p) grad H = p c J[sigma^{p-1}], hess H = p (p-1) c J[sigma^{p-2}] (c = N^{-(p-1)/2}),
and on the sphere the Riemannian gradient is grad H - (sigma . grad H / N) sigma and the
Riemannian Hessian the restriction of hess H - (sigma . grad H / N) I to the tangent space
(at a critical point sigma . grad H = p H).

Complexity (the exponential growth rate of the mean number of critical points of index k with
H_N / N <= u; E_inf = 2 sqrt((p-1)/p)):
    Theta_p(u) = 1/2 log(p-1) - (p-2)/(4(p-1)) u^2 - I_1(u)   for u <= -E_inf,
               = 1/2 log(p-1) - (p-2)/(4(p-1)) u^2             for -E_inf <= u <= 0,
               = 1/2 log(p-1)                                  for u >= 0;
    Theta_{k,p}(u) = 1/2 log(p-1) - (p-2)/(4(p-1)) u^2 - (k+1) I_1(u)   for u <= -E_inf,
                   = 1/2 log(p-1) - (p-2)/p                               for u >= -E_inf;
    I_1(u) = -u / E_inf^2 sqrt(u^2 - E_inf^2) - log(-u + sqrt(u^2 - E_inf^2)) + log E_inf.
The ground-state energy -E_0 is the root of Theta_p below -E_inf (E_0 = 1.657 for p = 3); the
roots -E_k of Theta_{k,p} bound the critical points of index k from below.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor
from tqdm import tqdm

from scatterlab.errors import ConfigError

MAX_ENTRIES = 2.5e8  # coupling-tensor entries (1 GB in float32): N = 630 for p = 3


def _check(p: int, n: int | None = None) -> None:
    if isinstance(p, bool) or not isinstance(p, int) or p < 2:
        raise ConfigError(f"p={p!r}: the p-spin glass needs an integer p >= 2")
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 2:
            raise ConfigError(f"N={n!r}: the sphere needs an integer dimension N >= 2")
        if float(n) ** p > MAX_ENTRIES:
            raise ConfigError(
                f"N={n}, p={p}: the coupling tensor has N^p = {float(n) ** p:.3g} entries "
                f"(> {MAX_ENTRIES:.3g}); use a smaller N"
            )


def e_inf(p: int) -> float:
    """The threshold E_inf = 2 sqrt((p-1)/p) (energies per site near -E_inf trap descent)."""
    _check(p)
    return 2 * math.sqrt((p - 1) / p)


def _i1(u: Tensor, p: int) -> Tensor:
    e = e_inf(p)
    s = (u**2 - e**2).clamp_min(0).sqrt()
    return -u / e**2 * s - torch.log(-u + s) + math.log(e)


def complexity(u: Tensor | float, p: int = 3) -> Tensor:
    """Theta_p(u) (same shape as u): growth rate of the number of critical points below u."""
    u = torch.as_tensor(u, dtype=torch.float64)
    e = e_inf(p)
    base = 0.5 * math.log(p - 1) - (p - 2) / (4 * (p - 1)) * u**2
    low = base - torch.where(u <= -e, _i1(u.clamp_max(-e), p), torch.zeros_like(u))
    return torch.where(u >= 0, torch.full_like(u, 0.5 * math.log(p - 1)), low)


def complexity_k(u: Tensor | float, k: int, p: int = 3) -> Tensor:
    """Theta_{k,p}(u) (same shape as u): the same for critical points of index k."""
    if k < 0:
        raise ConfigError(f"index k={k} must be >= 0")
    u = torch.as_tensor(u, dtype=torch.float64)
    e = e_inf(p)
    low = 0.5 * math.log(p - 1) - (p - 2) / (4 * (p - 1)) * u**2 - (k + 1) * _i1(u.clamp_max(-e), p)
    return torch.where(u <= -e, low, torch.full_like(u, 0.5 * math.log(p - 1) - (p - 2) / p))


def energy_threshold(p: int = 3, k: int | None = None) -> float:
    """E_0 (k None: the root of Theta_p below -E_inf, the ground-state energy per site is
    -E_0) or E_k (root of Theta_{k,p}), by bisection on [-E_inf - 10, -E_inf]."""
    e = e_inf(p)
    if p == 2:
        return e  # Theta is flat: no root below the threshold (E_0 = E_inf = sqrt 2)

    def f(u: float) -> float:
        t = complexity(u, p) if k is None else complexity_k(u, k, p)
        return float(t)

    lo, hi = -e - 10.0, -e  # f(lo) < 0 <= f(hi)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if f(mid) < 0 else (lo, mid)
    return -0.5 * (lo + hi)


class SphericalPSpin:
    """One sample of the p-spin Hamiltonian on the sphere of radius sqrt(N).

    n: N >= 2; p >= 2; seed: the couplings; dtype: float32 keeps N = 400, p = 3 at 256 MB.
    Methods take batches sigma (B, N) of points on the sphere.
    """

    def __init__(
        self, n: int, p: int = 3, seed: int = 0, dtype: torch.dtype = torch.float64
    ) -> None:
        _check(p, n)
        self.n, self.p, self.dtype = n, p, dtype
        gen = torch.Generator().manual_seed(seed)
        j = torch.randn((n,) * p, generator=gen, dtype=dtype)
        # symmetrise in place of the raw J: H is unchanged, and grad / Hessian become contractions
        perms = list(itertools.permutations(range(p)))
        sym = torch.zeros_like(j)
        for perm in perms:
            sym += j.permute(perm)
        self.j = sym / len(perms)
        self._j_bf16: Tensor | None = None  # bfloat16 copy for low-precision descent steps
        self.scale = n ** (-(p - 1) / 2)

    def to(self, dtype: torch.dtype) -> SphericalPSpin:
        """The same Hamiltonian (same couplings) in another dtype (float32 descent, float64
        Hessians: a fresh float64 draw from the same seed would be another sample)."""
        other = object.__new__(SphericalPSpin)
        other.__dict__.update(self.__dict__)
        other.j, other.dtype = self.j.to(dtype), dtype
        return other

    def random_points(self, batch: int, seed: int = 0) -> Tensor:
        """(batch, N) uniform on the sphere |sigma|^2 = N."""
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(batch, self.n, generator=g, dtype=self.dtype)
        return self.project(x)

    def project(self, sigma: Tensor) -> Tensor:
        return sigma * math.sqrt(self.n) / sigma.norm(dim=-1, keepdim=True)

    def _contract(self, sigma: Tensor, keep: int, low_precision: bool = False) -> Tensor:
        """J contracted with sigma on all but `keep` indices: (B,) + (N,) * keep. With
        low_precision every contraction runs in bfloat16 (fp32 accumulation inside each
        product, bfloat16 results: 3.4x faster steps on AVX-512 CPUs, gradients to ~1e-2)."""
        b, n = sigma.shape
        if low_precision:
            if self._j_bf16 is None:  # J is symmetric: its first index may be contracted
                self._j_bf16 = self.j.reshape(n, -1).to(torch.bfloat16)  # cast once, kept
            sb = sigma.to(torch.bfloat16)
            t = sb @ self._j_bf16  # (B, N^{p-1}), one per point: the rest are batched products
            for _ in range(self.p - 1 - keep):
                t = torch.bmm(t.view(b, -1, n), sb[:, :, None])
            return t.reshape(b, *(n,) * keep).to(sigma.dtype)
        t = self.j.reshape(-1, n) @ sigma.T  # (N^{p-1}, B): one matmul does the first index
        for _ in range(self.p - 1 - keep):
            t = (t.reshape(-1, n, b) * sigma.T[None]).sum(1)
        return t.reshape(*(n,) * keep, b).movedim(-1, 0)

    def energy(self, sigma: Tensor) -> Tensor:
        """H_N(sigma) (B,)."""
        return self.scale * (self._contract(sigma, 1) * sigma).sum(-1)

    def grad(self, sigma: Tensor, low_precision: bool = False) -> tuple[Tensor, Tensor]:
        """(H (B,), Euclidean gradient (B, N)); low_precision: see `_contract`."""
        g = self.p * self.scale * self._contract(sigma, 1, low_precision)
        return (g * sigma).sum(-1) / self.p, g

    def riemannian_grad(self, sigma: Tensor) -> Tensor:
        """Gradient projected on the tangent space of the sphere (B, N)."""
        _, g = self.grad(sigma)
        return g - ((g * sigma).sum(-1, keepdim=True) / self.n) * sigma

    def hessian(self, sigma: Tensor) -> Tensor:
        """Euclidean Hessian (B, N, N)."""
        if self.p == 2:
            return (2 * self.scale * self.j).expand(sigma.shape[0], -1, -1)
        return self.p * (self.p - 1) * self.scale * self._contract(sigma, 2)

    def riemannian_hessian_eigenvalues(self, sigma: Tensor) -> Tensor:
        """Eigenvalues (B, N-1) of the Riemannian Hessian on the tangent space, ascending."""
        _, g = self.grad(sigma)
        h = self.hessian(sigma) - ((g * sigma).sum(-1) / self.n)[:, None, None] * torch.eye(
            self.n, dtype=self.dtype
        )
        # orthonormal basis of the tangent space: QR of [sigma, I], dropping the first column
        eye = torch.eye(self.n, dtype=self.dtype).expand(sigma.shape[0], -1, -1)
        q, _ = torch.linalg.qr(torch.cat([sigma[:, :, None], eye[:, :, : self.n - 1]], -1))
        u = q[:, :, 1:]
        return torch.linalg.eigvalsh(u.transpose(1, 2) @ h @ u)

    def _riemannian_hessian(self, sigma: Tensor, g: Tensor) -> Tensor:
        """(B, N, N): P (hess H - (sigma . g / N) I) P + (radial penalty) sigma sigma^T / N; the
        penalty lifts the radial direction above the tangent spectrum."""
        b, n = sigma.shape
        eye = torch.eye(n, dtype=self.dtype)
        h = self.hessian(sigma) - ((g * sigma).sum(-1) / n)[:, None, None] * eye
        u = sigma / sigma.norm(dim=-1, keepdim=True)
        proj = eye - u[:, :, None] * u[:, None, :]
        h = proj @ h @ proj
        lift = h.abs().sum((1, 2)) / n + 1  # larger than any tangent eigenvalue
        return h + lift[:, None, None] * u[:, :, None] * u[:, None, :]

    def saddles(
        self,
        sigma: Tensor,
        k: int,
        lr: float = 0.05,
        steps: int = 2000,
        tol: float = 1e-6,
        progress: bool = False,
    ) -> dict[str, Tensor]:
        """Critical points of index k by eigenvector following: descend along the gradient
        with its components on the k lowest Hessian eigenvectors reversed, so that index-k
        saddles become attractors (k = 0: plain descent). Batched; a dense eigendecomposition
        per step, for N up to a few hundred.

        Returns sigma (B, N), energy per site (B,), grad_rms (B,), index (B,) (the count of
        negative tangent eigenvalues at the end), steps (int).
        """
        if k < 0 or k > self.n - 1:
            raise ConfigError(f"index k={k} must be in 0..N-1 = {self.n - 1}")
        s = sigma.clone()
        taken = 0
        for _ in tqdm(range(steps), desc=f"index-{k} saddles N={self.n}", disable=not progress):
            _, g = self.grad(s)
            rg = g - ((g * s).sum(-1, keepdim=True) / self.n) * s
            rms = rg.norm(dim=-1) / math.sqrt(self.n)
            if float(rms.max()) < tol:
                break
            if k:
                _, vec = torch.linalg.eigh(self._riemannian_hessian(s, g))
                low = vec[:, :, :k]  # (B, N, k): the k lowest tangent directions
                rg = rg - 2 * (low @ (low.transpose(1, 2) @ rg[:, :, None]))[:, :, 0]
            s = self.project(s - lr * rg)
            taken += 1
        eig = self.riemannian_hessian_eigenvalues(s)
        scale = eig.abs().amax(-1, keepdim=True)
        return {
            "sigma": s,
            "energy": self.energy(s) / self.n,
            "grad_rms": rms,
            "index": (eig < -1e-6 * scale).sum(-1),
            "steps": taken,
        }

    def descend(
        self,
        sigma: Tensor,
        lr: float = 0.1,
        steps: int = 500,
        tol: float = 1e-4,
        momentum: float = 0.0,
        chunk: int = 256,
        progress: bool = False,
        low_precision_steps: int = 0,
    ) -> dict[str, Tensor]:
        """Projected gradient descent v <- momentum v - lr grad_S H, sigma <- proj(sigma + v)
        (heavy ball; the velocity is projected on the new tangent space), batched; stops when
        the RMS Riemannian gradient per site is below tol for every point. The Riemannian
        Hessian's spectrum at the threshold spans about [0, 2 p E_inf], so plain descent is
        stable for lr < 1 / (p E_inf) (0.2 at p = 3).

        The first low_precision_steps steps contract the couplings in bfloat16 (the descent
        only needs the gradient's direction there; N = 400, 1,000 restarts: 3.4x faster per step);
        the remaining steps, the stopping test and the returned energies are in full precision.

        Returns sigma (B, N), energy per site H / N (B,), grad_rms (B,), steps (int).
        """
        out, gnorm, used = [], [], 0
        for start in tqdm(
            range(0, len(sigma), chunk), desc=f"descent N={self.n}", disable=not progress
        ):
            s = sigma[start : start + chunk].clone()
            v = torch.zeros_like(s)
            taken = 0
            for step in range(steps):
                low = step < low_precision_steps
                _, g = self.grad(s, low)
                rg = g - ((g * s).sum(-1, keepdim=True) / self.n) * s
                rms = rg.norm(dim=-1) / math.sqrt(self.n)
                if not low and float(rms.max()) < tol:
                    break
                v = momentum * v - lr * rg
                s = self.project(s + v)
                v = v - ((v * s).sum(-1, keepdim=True) / self.n) * s
                taken += 1
            used = max(used, taken)
            out.append(s)
            gnorm.append(rms)
        s = torch.cat(out)
        return {
            "sigma": s,
            "energy": self.energy(s) / self.n,
            "grad_rms": torch.cat(gnorm),
            "steps": used,
        }
