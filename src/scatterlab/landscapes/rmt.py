"""Random-matrix spectra and free probability, in plain torch (float64 / complex128).

A `Spectrum` is a probability measure rho on R known through its Stieltjes transform
    G(z) = int rho(t) / (z - t) dt,        z in C+,
from which the density comes back by inversion, rho(x) = -Im G(x + i eta) / pi, eta -> 0+.
Closed forms: `Semicircle` (Wigner) and `MarchenkoPastur` (Wishart, any ratio, atom at 0);
`Atoms` is a finite discrete measure (empirical spectra, D^2 of a network, sigma^2 I).

Free probability (Voiculescu; the formulas of the theory-of-deep-learning lectures):
- additive: R_{A+B} = R_A + R_B with R(G(z)) + 1/G(z) = z. Solved for any two spectra through
  the subordination functions (Belinschi & Bercovici 2007), the fixed point
  w_A = z + h_B(z + h_A(w_A)), h(w) = 1/G(w) - w, which converges on all of C+;
  G_{A+B}(z) = G_A(w_A(z)).
- multiplicative: S_{AB} = S_A S_B, with M(z) = z G(z) - 1 = sum_k m_k z^-k and
  S(m) = (1 + m) / (m M^{-1}(m)). `FreeProduct` solves z m S(m) = 1 + m for m = M(z) by Newton's
  method, continued along a log-spaced grid from above the spectrum (where m ~ m_1 / z) down,
  with the logs of the factors unwrapped between grid points so that powers S^L stay on the
  physical branch (Im m <= 0 on C+).
"""

from __future__ import annotations

import cmath
import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from scatterlab.errors import ConfigError

CDTYPE = torch.complex128


def _z(z: Tensor | complex | float) -> Tensor:
    return torch.as_tensor(z).to(CDTYPE)


def _sqrt_pair(z: Tensor, a: float, b: float) -> Tensor:
    """sqrt(z - a) sqrt(z - b) with principal roots: the branch ~ z at infinity, cut on [a, b]."""
    return torch.sqrt(z - a) * torch.sqrt(z - b)


class Spectrum:
    """A probability measure on R. Subclasses give `stieltjes`; closed forms where known.

    atom0: the mass of an atom at 0 (Marchenko-Pastur with ratio > 1, D^2 of a ReLU network).
    """

    atom0: float = 0.0

    def stieltjes(self, z: Tensor) -> Tensor:
        """G(z) for complex z (any shape, Im z > 0 or z real outside the support) -> same shape."""
        raise NotImplementedError

    def density(self, x: Tensor, eta: float = 1e-10) -> Tensor:
        """rho(x) = -Im G(x + i eta) / pi (the continuous part; atoms show as spikes of height
        mass / (pi eta)): x real, any shape -> same shape."""
        x = torch.as_tensor(x, dtype=torch.float64)
        return -self.stieltjes(x.to(CDTYPE) + 1j * eta).imag / math.pi

    def support(self) -> tuple[float, float]:
        raise NotImplementedError

    def moment(self, k: int) -> float:
        raise NotImplementedError

    def log_s(self, m: complex, state: object) -> tuple[complex, complex, object]:
        """log S(m), its derivative in m, and the state of a numerical inversion (the warm
        start of the next call)."""
        raise NotImplementedError(f"{type(self).__name__} has no S-transform here")

    def r_transform(self, g: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no closed-form R-transform")


class Semicircle(Spectrum):
    """Wigner semicircle of variance `var` centred at `center`: support center +- 2 sqrt(var).

    rho(x) = sqrt(4 var - (x - c)^2) / (2 pi var);  G(z) = (w - sqrt(w^2 - 4 var)) / (2 var),
    w = z - c;  R(g) = c + var g;  moments of (x - c): m_2k = Catalan(k) var^k.
    """

    def __init__(self, var: float = 1.0, center: float = 0.0) -> None:
        if not var > 0 or not math.isfinite(var):
            raise ConfigError(f"semicircle variance must be finite and > 0, got {var}")
        self.var, self.center = float(var), float(center)
        self.radius = 2 * math.sqrt(self.var)

    def stieltjes(self, z: Tensor) -> Tensor:
        w = _z(z) - self.center
        return (w - _sqrt_pair(w, -self.radius, self.radius)) / (2 * self.var)

    def density(self, x: Tensor, eta: float = 0.0) -> Tensor:
        w = torch.as_tensor(x, dtype=torch.float64) - self.center
        return (4 * self.var - w**2).clamp_min(0).sqrt() / (2 * math.pi * self.var)

    def support(self) -> tuple[float, float]:
        return self.center - self.radius, self.center + self.radius

    def moment(self, k: int) -> float:
        """Central moments for center 0 (E x^k); Catalan numbers times var^(k/2)."""
        if self.center != 0:
            raise NotImplementedError("moments of a shifted semicircle: shift first")
        if k % 2:
            return 0.0
        j = k // 2
        return math.comb(2 * j, j) / (j + 1) * self.var**j

    def r_transform(self, g: Tensor) -> Tensor:
        return self.center + self.var * _z(g)


class MarchenkoPastur(Spectrum):
    """Eigenvalues of W = X X^T / n, X a (p, n) matrix of i.i.d. N(0, var), ratio c = p / n.

    Support [var (1 - sqrt c)^2, var (1 + sqrt c)^2], density
    rho(x) = sqrt((l+ - x)(x - l-)) / (2 pi var c x), plus an atom 1 - 1/c at 0 when c > 1.
    G(z) = (z - var (1 - c) - sqrt((z - l-)(z - l+))) / (2 var c z);
    R(g) = var / (1 - var c g);  S(m) = 1 / (var (1 + c m));  m_1 = var, m_2 = var^2 (1 + c).
    """

    def __init__(self, ratio: float = 1.0, var: float = 1.0) -> None:
        if not ratio > 0 or not math.isfinite(ratio):
            raise ConfigError(f"Marchenko-Pastur ratio p/n must be finite and > 0, got {ratio}")
        if not var > 0 or not math.isfinite(var):
            raise ConfigError(f"Marchenko-Pastur variance must be finite and > 0, got {var}")
        self.c, self.var = float(ratio), float(var)
        self.lo = self.var * (1 - math.sqrt(self.c)) ** 2
        self.hi = self.var * (1 + math.sqrt(self.c)) ** 2
        self.atom0 = max(0.0, 1 - 1 / self.c)

    def stieltjes(self, z: Tensor) -> Tensor:
        z = _z(z)
        root = _sqrt_pair(z, self.lo, self.hi)
        return (z - self.var * (1 - self.c) - root) / (2 * self.var * self.c * z)

    def density(self, x: Tensor, eta: float = 0.0) -> Tensor:
        """The continuous part only (the atom 1 - 1/c at 0 is `atom0`)."""
        x = torch.as_tensor(x, dtype=torch.float64)
        inside = ((self.hi - x) * (x - self.lo)).clamp_min(0).sqrt()
        return torch.where(
            x > 0, inside / (2 * math.pi * self.var * self.c * x.clamp_min(1e-300)), 0
        )

    def support(self) -> tuple[float, float]:
        return (0.0 if self.atom0 > 0 else self.lo), self.hi

    def moment(self, k: int) -> float:
        """E x^k = var^k sum_j c^j N(k, j+1) / ... (Narayana numbers), k >= 1."""
        if k == 0:
            return 1.0
        s = sum(math.comb(k, j) * math.comb(k, j + 1) / k * self.c**j for j in range(k))
        return self.var**k * s

    def r_transform(self, g: Tensor) -> Tensor:
        return self.var / (1 - self.var * self.c * _z(g))

    def log_s(self, m: complex, state: object = None) -> tuple[complex, complex, object]:
        return -math.log(self.var) - cmath.log(1 + self.c * m), -self.c / (1 + self.c * m), None


class Atoms(Spectrum):
    """sum_i w_i delta(x - a_i): an empirical spectrum, a quadrature of a law, or sigma^2 I.

    values (n,), weights (n,) (default uniform; normalised to sum 1). The S-transform of a
    law on [0, inf) with one non-zero atom a (mass p) is closed, S(m) = (1 + m) / (a (m + p));
    otherwise M(y) = m is solved for y by Newton's method from the previous y.
    """

    def __init__(self, values: Tensor | Sequence[float], weights: Tensor | None = None) -> None:
        self.values = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
        if self.values.numel() == 0 or not torch.isfinite(self.values).all():
            raise ConfigError("Atoms needs at least one finite value")
        w = torch.ones_like(self.values) if weights is None else torch.as_tensor(weights)
        w = w.to(torch.float64).reshape(-1)
        if w.shape != self.values.shape or (w < 0).any() or not w.sum() > 0:
            raise ConfigError("Atoms weights must be >= 0, not all 0, one per value")
        self.weights = w / w.sum()
        self.atom0 = float(self.weights[self.values == 0].sum())
        nz = self.values != 0
        # numpy copies: the Newton inversion below runs per grid point, where torch's per-call
        # overhead would dominate
        self._nz_v, self._nz_w = self.values[nz].numpy(), self.weights[nz].numpy()
        self._single = int(nz.sum()) == 1

    def stieltjes(self, z: Tensor) -> Tensor:
        z = _z(z)
        return (self.weights / (z.unsqueeze(-1) - self.values)).sum(-1)

    def support(self) -> tuple[float, float]:
        return float(self.values.min()), float(self.values.max())

    def moment(self, k: int) -> float:
        return float((self.weights * self.values**k).sum())

    def _m(self, y: complex) -> tuple[complex, complex]:
        """M(y) = sum w a / (y - a) and its derivative."""
        d = 1 / (y - self._nz_v)
        t = self._nz_w * self._nz_v * d
        return complex(t.sum()), complex(-(t * d).sum())

    def log_s(self, m: complex, state: object = None) -> tuple[complex, complex, object]:
        if (self.values < 0).any():
            raise ConfigError("the S-transform is for spectra on [0, inf)")
        if self._single:  # closed form: M(y) = p a / (y - a)
            a, p = float(self._nz_v[0]), float(self._nz_w[0])
            value = cmath.log(1 + m) - math.log(a) - cmath.log(m + p)
            return value, 1 / (1 + m) - 1 / (m + p), None
        m1, m2 = self.moment(1), self.moment(2)
        y = state if isinstance(state, complex) else m1 / m + m2 / m1  # large-|y| expansion
        for _ in range(100):
            f, df = self._m(y)
            step = (f - m) / df
            lim = 0.5 * max(abs(y), 1e-300)  # damped: y must not jump across the atoms
            if abs(step) > lim:
                step *= lim / abs(step)
            y -= step
            if abs(step) < 1e-13 * abs(y):
                break
        _, df = self._m(y)
        # S = (1 + m) / (m y(m)), y' = 1 / M'(y)
        value = cmath.log(1 + m) - cmath.log(m) - cmath.log(y)
        return value, 1 / (1 + m) - 1 / m - 1 / (y * df), y


def _unwrap(v: complex, ref: complex | None) -> complex:
    """v + 2 pi i k nearest to ref (continuity of a log along a path)."""
    if ref is None:
        return v
    k = round((ref.imag - v.imag) / (2 * math.pi))
    return v + 2j * math.pi * k


class FreeSum(Spectrum):
    """The free additive convolution A boxplus B of two spectra (e.g. H_0 + H_1, Wigner +
    Wishart), by the subordination fixed point (converges for every z in C+)."""

    def __init__(self, a: Spectrum, b: Spectrum, tol: float = 1e-13, max_iter: int = 20000):
        self.a, self.b, self.tol, self.max_iter = a, b, tol, max_iter

    def stieltjes(self, z: Tensor) -> Tensor:
        z = _z(z)
        if (z.imag <= 0).any():
            raise ValueError("FreeSum.stieltjes needs Im z > 0")

        def h(s: Spectrum, w: Tensor) -> Tensor:
            return 1 / s.stieltjes(w) - w

        wa = z.clone()
        for _ in range(self.max_iter):
            new = z + h(self.b, z + h(self.a, wa))
            done = (new - wa).abs().max() <= self.tol * (1 + new.abs().max())
            wa = new
            if done:
                break
        return self.a.stieltjes(wa)

    def density(self, x: Tensor, eta: float = 1e-6) -> Tensor:
        return super().density(x, eta)

    def support(self) -> tuple[float, float]:
        (a0, a1), (b0, b1) = self.a.support(), self.b.support()
        return a0 + b0, a1 + b1

    def r_transform(self, g: Tensor) -> Tensor:
        return self.a.r_transform(g) + self.b.r_transform(g)


class FreeProduct(Spectrum):
    """prod_i A_i^{k_i} for free positive spectra A_i: S = prod_i S_i^{k_i}.

    factors: [(spectrum, power), ...] (power an integer >= 1: S^L of L free copies). The density
    is computed on a whole grid at once by continuation (`solve`), so `stieltjes` is only for
    single points far from the support; use `density_on_grid`.
    """

    def __init__(self, factors: Sequence[tuple[Spectrum, int]]) -> None:
        if not factors:
            raise ConfigError("FreeProduct needs at least one factor")
        self.factors = [(s, int(k)) for s, k in factors]
        if any(k < 1 for _, k in self.factors):
            raise ConfigError("FreeProduct powers must be integers >= 1")
        self.atom0 = max(s.atom0 for s, _ in self.factors)  # atom of a free product at 0
        self.m1 = math.prod(s.moment(1) ** k for s, k in self.factors)

    def _log_s(self, m: complex, states: list, refs: list | None):
        """sum_i k_i log S_i(m) (each log unwrapped against refs), its m-derivative, the new
        states and the logs."""
        total, deriv, new_states, logs = 0j, 0j, [], []
        for i, (s, k) in enumerate(self.factors):
            v, dv, st = s.log_s(m, states[i])
            v = _unwrap(v, None if refs is None else refs[i])
            total, deriv = total + k * v, deriv + k * dv
            new_states.append(st)
            logs.append(v)
        return total, deriv, new_states, logs

    def solve(self, x: Tensor, eta: float = 1e-4) -> Tensor:
        """G(x (1 + i eta)) on a grid x > 0 (any order; solved from the largest down) -> (n,)."""
        x = torch.as_tensor(x, dtype=torch.float64).reshape(-1)
        if not (x > 0).all():
            raise ConfigError("FreeProduct.solve needs a grid of positive x")
        order = torch.argsort(x, descending=True)
        out = torch.full(x.shape, complex("nan"), dtype=CDTYPE)
        states: list = [None] * len(self.factors)
        refs: list | None = None
        m = None
        for idx in order.tolist():
            z = complex(float(x[idx]), float(x[idx]) * eta)
            if m is None:
                m = 1 / (z / self.m1 - 1)  # M(z) ~ m_1 / z above the spectrum (S(0) = 1 / m_1)
            m_new, st, logs, ok = self._newton(z, m, states, refs)
            if ok:  # a failed point keeps the previous branch as the next starting point
                out[idx] = (1 + m_new) / z
                m, states, refs = m_new, st, logs
        return out

    def _newton(self, z: complex, m: complex, states: list, refs: list | None):
        """Solve log z + log m - log(1 + m) + log S(m) = 0 for m = M(z) near the start m."""
        lz = cmath.log(z)
        r_m = r_1m = None
        if refs is not None:
            r_m, r_1m = refs[-2], refs[-1]
        for _ in range(60):
            ls, dls, st, logs = self._log_s(m, states, refs)
            lm, l1m = _unwrap(cmath.log(m), r_m), _unwrap(cmath.log(1 + m), r_1m)
            r = lz + lm - l1m + ls
            step = r / (1 / m - 1 / (1 + m) + dls)
            if abs(step) > 0.3 * abs(m):  # damped: stay near the continued branch
                step *= 0.3 * abs(m) / abs(step)
            m -= step
            states = st
            if abs(step) < 1e-12 * abs(m):
                ls, _, st, logs = self._log_s(m, states, refs)
                lm, l1m = _unwrap(cmath.log(m), r_m), _unwrap(cmath.log(1 + m), r_1m)
                ok = abs(lz + lm - l1m + ls) < 1e-8 and m.imag <= 1e-9 * abs(m)
                return m, st, [*logs, lm, l1m], ok
        return m, states, refs, False

    def density_on_grid(self, x: Tensor, eta: float = 1e-4) -> Tensor:
        """rho(x) = -Im G / pi on the grid x (continuous part; the atom at 0 is `atom0`)."""
        return -self.solve(x, eta).imag / math.pi

    def support(self) -> tuple[float, float]:
        return 0.0, math.inf

    def moment(self, k: int) -> float:
        if k == 1:
            return self.m1
        raise NotImplementedError("FreeProduct moments beyond the first: integrate the density")


# --- sampled matrices (the Monte Carlo side of every closed form) ---------------------------


def wigner_eigenvalues(
    n: int, var: float = 1.0, generator: torch.Generator | None = None
) -> Tensor:
    """Eigenvalues (n,) of a GOE matrix with off-diagonal variance var / n (semicircle var)."""
    a = torch.randn(n, n, dtype=torch.float64, generator=generator)
    return torch.linalg.eigvalsh((a + a.T) * math.sqrt(var / (2 * n)))


def wishart_eigenvalues(
    p: int, n: int, var: float = 1.0, generator: torch.Generator | None = None
) -> Tensor:
    """Eigenvalues (p,) of X X^T / n, X (p, n) i.i.d. N(0, var): Marchenko-Pastur(p / n, var)."""
    x = torch.randn(p, n, dtype=torch.float64, generator=generator) * math.sqrt(var)
    return torch.linalg.eigvalsh(x @ x.T / n).clamp_min(0)


def haar_orthogonal(n: int, generator: torch.Generator | None = None) -> Tensor:
    """A Haar-distributed orthogonal (n, n) matrix (QR with the sign fix of R's diagonal)."""
    q, r = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64, generator=generator))
    return q * torch.sign(torch.diagonal(r))


def empirical_cdf_distance(samples: Tensor, x: Tensor, cdf: Tensor) -> float:
    """Kolmogorov-Smirnov distance sup |F_emp - F| between samples and a CDF tabulated on x.

    x increasing (n,), cdf (n,), F piecewise linear between grid points. Samples at or below
    x[0] count as one lump (an atom at 0, or the mass below a log grid, measured as 1e-30 in
    float arithmetic): F jumps from 0 to cdf[0] there.
    """
    s = torch.sort(torch.as_tensor(samples, dtype=torch.float64).reshape(-1)).values.numpy()
    n = len(s)
    xs, fs = np.asarray(x, dtype=np.float64), np.asarray(cdf, dtype=np.float64)
    low = s <= xs[0]
    f_right = np.where(low, fs[0], np.interp(s, xs, fs))
    f_left = np.where(low, 0.0, f_right)
    emp_hi = np.arange(1, n + 1) / n
    emp_lo = np.arange(0, n) / n
    return float(np.maximum(emp_hi - f_right, f_left - emp_lo).max())


def cdf_from_density(x: Tensor, rho: Tensor) -> Tensor:
    """CDF on a grid x (increasing) by the trapezoid rule, integrated from the top: the mass
    below x[0] (an atom at 0, a divergence at 0 on a log grid) is what the grid misses."""
    x = torch.as_tensor(x, dtype=torch.float64)
    rho = torch.nan_to_num(torch.as_tensor(rho, dtype=torch.float64))
    inc = 0.5 * (rho[1:] + rho[:-1]) * (x[1:] - x[:-1])
    tail = torch.cat([inc.flip(0).cumsum(0).flip(0), torch.zeros(1, dtype=torch.float64)])
    return (1 - tail).clamp(0, 1)
