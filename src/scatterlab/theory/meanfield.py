"""Mean-field signal propagation through deep random networks (Poole et al. 2016, Schoenholz
et al. 2017), vectorized over whole (sigma_w^2, sigma_b^2) grids, float64.

Network: h^l = W^l phi(h^{l-1}) + b^l, W_ij ~ N(0, sigma_w^2 / N), b_i ~ N(0, sigma_b^2).
Arguments are *variances* sw2 = sigma_w^2, sb2 = sigma_b^2 (tensors that broadcast; a grid is
`sw2[:, None], sb2[None, :]`). Two inputs of equal length q (the fixed-point setting) have
  length map   q^l  = sw2 E[phi(sqrt(q^{l-1}) z)^2] + sb2,             fixed point q*,
  C-map        c^l  = (sw2 E[phi(u1) phi(u2)] + sb2) / q^l,             fixed point c*,
  chi_1 = sw2 E[phi'(sqrt(q*) z)^2],  chi_c = sw2 E[phi'(u1) phi'(u2)] at (q*, c*),
  xi_q = -1 / ln(dq^l/dq^{l-1} at q*),  xi_c = -1 / ln chi_c,  chi_2 = sw2 E[phi''(sqrt(q*) z)^2],
with u1 = sqrt(q) z1, u2 = sqrt(q)(c z1 + sqrt(1 - c^2) z2). The integrals are closed forms for
relu / erf / linear / modulus (method="auto") and Gauss-Hermite quadrature otherwise (or always,
method="quadrature", which the tests compare with the closed forms).

For the complex modulus (phi = |.| on circular complex Gaussians, complex W with
E|W_ij|^2 = sw2 / N, E|b_i|^2 = sb2): q^l = sw2 q^{l-1} + sb2 (E|h|^2 = q), the C-map uses the
elliptic closed form of `closed_forms.modulus_vc`, and chi_1 = sw2 / 2 (the modulus passes the
radial half of a complex perturbation and kills the phase half).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from scatterlab.errors import ConfigError
from scatterlab.theory import closed_forms as cf
from scatterlab.theory.activations import Phi, check_depth, check_variances, get_phi
from scatterlab.theory.quadrature import (
    C_MAX,
    expect1,
    expect2,
    hermite_coefficients,
    power_series,
)

Method = Literal["auto", "quadrature"]
_CLOSED = ("relu", "erf", "linear", "modulus")


def _t(x: object) -> Tensor:
    return torch.as_tensor(x, dtype=torch.float64)


def depth_scale(chi: Tensor) -> Tensor:
    """xi = -1 / ln chi, the depth over which a perturbation decays as chi^l; +inf where
    chi >= 1 (at criticality, chi = 1, ln chi is 0 or -0 in floating point: -1/ln would give
    -inf there, or a negative depth)."""
    return torch.where(chi >= 1, math.inf, -1.0 / torch.log(chi))


class MeanField:
    """The mean-field maps of one non-linearity.

    phi: a name of `scatterlab.theory.activations.PHIS` (tanh, erf, relu, hardtanh, linear,
      modulus) or a Phi. n1, n2: Gauss-Hermite nodes of the 1D and the 2D (n2 x n2) rules.
    method: "auto" (closed forms where they exist) or "quadrature" (always quadrature).
    series: for smooth phi, evaluate the 2D integral at equal lengths by Mehler's expansion
      (`quadrature.hermite_coefficients`: one 1D rule per q, exact to ~1e-9 for tanh at q <= 4),
      which is how whole grids stay fast; False uses the n2 x n2 rule (slower, and less
      accurate for tanh at large q).
    """

    def __init__(
        self,
        phi: str | Phi = "tanh",
        n1: int = 100,
        n2: int = 48,
        method: Method = "auto",
        series: bool = True,
    ) -> None:
        self.phi = get_phi(phi)
        if method not in ("auto", "quadrature"):
            raise ConfigError(f"method={method!r} is unknown: use auto or quadrature")
        if method == "quadrature" and self.phi.complex_input:
            raise ConfigError("the modulus maps are closed forms only: use method=auto")
        self.n1, self.n2 = int(n1), int(n2)
        self.closed = method == "auto" and self.phi.name in _CLOSED
        self.series = bool(series) and self.phi.smooth and not self.closed

    # ---- the Gaussian integrals (q11 = q22 = q) ----------------------------------------------
    def vq(self, q: Tensor) -> Tensor:
        """E[phi(sqrt(q) z)^2], shape of q."""
        q, name = _t(q), self.phi.name
        if self.closed:
            if name == "relu":
                return cf.relu_vq(q)
            if name == "erf":
                return cf.erf_vq(q)
            return q.clone()  # linear, modulus
        return expect1(lambda x: self.phi.f(x) ** 2, q, self.n1)

    def vc(self, c: Tensor, q: Tensor) -> Tensor:
        """E[phi(u1) phi(u2)] at correlation c, both lengths q (broadcast)."""
        c, q, name = _t(c), _t(q), self.phi.name
        if self.closed:
            if name == "relu":
                return cf.relu_vc(q, q, c)
            if name == "erf":
                return cf.erf_vc(q, q, c)
            if name == "modulus":
                return cf.modulus_vc(q, q, c)
            return c * q  # linear
        if self.series:
            return power_series(hermite_coefficients(self.phi.f, q) ** 2, c)[0]
        return expect2(self.phi.f, self.phi.f, q, q, c, self.n2)

    def dc(self, c: Tensor, q: Tensor) -> Tensor:
        """E[phi'(u1) phi'(u2)] (chi_c / sw2) at correlation c, lengths q."""
        c, q, name = _t(c), _t(q), self.phi.name
        if self.closed:
            if name == "relu":
                return torch.broadcast_to(cf.relu_dc(c), torch.broadcast_shapes(c.shape, q.shape))
            if name == "erf":
                return cf.erf_dc(q, q, c)
            if name == "modulus":
                return torch.broadcast_to(
                    cf.modulus_dc(c), torch.broadcast_shapes(c.shape, q.shape)
                ).clone()
            return torch.ones(torch.broadcast_shapes(c.shape, q.shape), dtype=torch.float64)
        if self.series:
            return power_series(hermite_coefficients(self.phi.d1, q) ** 2, c)[0]
        return expect2(self.phi.d1, self.phi.d1, q, q, c, self.n2)

    def d1(self, q: Tensor) -> Tensor:
        """E[phi'(sqrt(q) z)^2] (chi_1 / sw2)."""
        q, name = _t(q), self.phi.name
        if self.closed:
            if name == "erf":
                return cf.erf_d1(q)
            return torch.full_like(q, {"relu": 0.5, "linear": 1.0, "modulus": 0.5}[name])
        return expect1(lambda x: self.phi.d1(x) ** 2, q, self.n1)

    def d2(self, q: Tensor) -> Tensor:
        """E[phi''(sqrt(q) z)^2] (chi_2 / sw2); inf where phi'' is a Dirac mass."""
        q = _t(q)
        if self.phi.d2 is None:
            return torch.full_like(q, math.inf)
        if self.closed and self.phi.name == "erf":
            return cf.erf_d2(q)
        return expect1(lambda x: self.phi.d2(x) ** 2, q, self.n1)

    def q_slope(self, q: Tensor, sw2: Tensor) -> Tensor:
        """dq^l/dq^{l-1} = sw2 d/dq E[phi(sqrt(q) z)^2] = sw2 E[phi phi' z] / sqrt(q) (Stein)."""
        q, sw2 = _t(q), _t(sw2)
        if self.phi.homogeneous:
            return sw2 * self.vq(torch.ones_like(q))
        if self.closed and self.phi.name == "erf":  # d/dq (2/pi) arcsin(2q/(1+2q))
            return sw2 * 4 / math.pi / ((1 + 2 * q) * (1 + 4 * q).sqrt())
        # E[phi'^2] + E[phi phi''] would need phi'' (a Dirac mass for hard-tanh); the Stein form
        # E[z phi phi'] / sqrt(q) needs phi' only. Below q = 1e-12 use its q -> 0 limit phi'(0)^2.
        qs = q.clamp_min(1e-12)
        zpp = expect1(lambda x: x * self.phi.f(x) * self.phi.d1(x), qs, self.n1) / qs
        return sw2 * zpp

    # ---- fixed points -----------------------------------------------------------------------
    def q_map(self, q: Tensor, sw2: Tensor, sb2: Tensor) -> Tensor:
        """One layer of the length map: sw2 E[phi(sqrt(q) z)^2] + sb2."""
        return _t(sw2) * self.vq(q) + _t(sb2)

    def q_star(self, sw2: Tensor, sb2: Tensor, iters: int = 200, tol: float = 1e-14) -> Tensor:
        """Fixed point q* of the length map, broadcast shape of (sw2, sb2); inf if it diverges.

        Homogeneous phi: q* = sb2 / (1 - sw2 E[phi(z)^2]). Bounded phi (|phi| <= 1: tanh, erf,
        hard-tanh): Newton from q0 = sw2 + sb2 >= q*; the map is concave, so the iterates fall
        monotonically onto q* (linearly where q* = 0 is a double root, sb2 = 0, sw2 chi = 1;
        q* = 0 is set exactly where sb2 = 0 and sw2 phi'(0)^2 <= 1).
        """
        check_variances(sw2, sb2)
        sw2, sb2 = torch.broadcast_tensors(_t(sw2), _t(sb2))
        if self.phi.homogeneous:
            slope = sw2 * self.vq(torch.ones_like(sw2))
            q = torch.where(slope < 1, sb2 / (1 - slope).clamp_min(1e-300), math.inf)
            return torch.where((slope >= 1) & (sb2 == 0) & (slope == 1), 0.0, q)
        shape = sw2.shape
        sw2, sb2 = sw2.reshape(-1), sb2.reshape(-1)
        q = sw2 + sb2
        active = torch.arange(q.numel())  # points still moving: only those are iterated
        for _ in range(iters):
            qa, wa, ba = q[active], sw2[active], sb2[active]
            f = self.q_map(qa, wa, ba) - qa
            fp = self.q_slope(qa, wa) - 1
            step = torch.where(fp < 0, f / fp, -qa / 2)  # fp >= 0 cannot happen right of q*
            q_new = (qa - step).clamp_min(0)
            q[active] = q_new
            active = active[(q_new - qa).abs() > tol * (1 + qa)]
            if active.numel() == 0:
                break
        # sb2 = 0, phi(0) = 0: q = 0 is a fixed point, and q* when the concave map's slope
        # there, sw2 phi'(0)^2, is <= 1. At slope 1 (tanh's sw2 = 1) Newton only crawls to it
        # (a double root: q ~ 1e-14 at the stop, chi_1 = 1 - 1e-13); set it exactly.
        zero = torch.zeros(1, dtype=q.dtype)
        if self.phi.f(zero).item() == 0:
            slope0 = sw2 * self.phi.d1(zero) ** 2
            q = torch.where((sb2 == 0) & (slope0 <= 1), 0.0, q)
        return q.reshape(shape)

    def c_map(self, c: Tensor, q: Tensor, sw2: Tensor, sb2: Tensor) -> Tensor:
        """One layer of the C-map at length q (both inputs): (sw2 E[phi phi] + sb2) / q^l."""
        q_next = self.q_map(q, sw2, sb2)
        return ((_t(sw2) * self.vc(c, q) + _t(sb2)) / q_next).clamp(-1, 1)

    def chi1(self, sw2: Tensor, sb2: Tensor, q: Tensor | None = None) -> Tensor:
        """chi_1 = sw2 E[phi'(sqrt(q*) z)^2] (q* of (sw2, sb2) unless q is given)."""
        q = self.q_star(sw2, sb2) if q is None else _t(q)
        return _t(sw2) * self.d1(q)

    def chi2(self, sw2: Tensor, sb2: Tensor, q: Tensor | None = None) -> Tensor:
        """chi_2 = sw2 E[phi''(sqrt(q*) z)^2]; inf for ReLU / hard-tanh."""
        q = self.q_star(sw2, sb2) if q is None else _t(q)
        return _t(sw2) * self.d2(q)

    def chi_c(self, c: Tensor, q: Tensor, sw2: Tensor) -> Tensor:
        """dc^l/dc^{l-1} = sw2 E[phi'(u1) phi'(u2)] at (c, q)."""
        return _t(sw2) * self.dc(c, q)

    def c_star(self, sw2: Tensor, sb2: Tensor, q: Tensor | None = None, iters: int = 80) -> Tensor:
        """Stable fixed point c* of the C-map at q* (broadcast shape of sw2, sb2).

        E[phi(u1) phi(u2)] is a power series in c with non-negative coefficients (Hermite
        expansion), so g(c) = C(c) - c is convex on [0, 1] with g(1) = 0: c* = 1 when
        chi_1 <= 1, else the unique root in [0, 1), reached monotonically by Newton from c = 0.
        Only the chaotic points are iterated.
        """
        check_variances(sw2, sb2)
        sw2, sb2 = torch.broadcast_tensors(_t(sw2), _t(sb2))
        shape = sw2.shape
        q = self.q_star(sw2, sb2) if q is None else torch.broadcast_to(_t(q), shape)
        sw2, sb2, q = sw2.reshape(-1), sb2.reshape(-1), q.reshape(-1)
        chi = sw2 * self.d1(q)
        out = torch.ones_like(sw2)
        out[~torch.isfinite(q)] = math.nan
        idx = ((chi > 1) & torch.isfinite(q) & (q > 0)).nonzero(as_tuple=True)
        if idx[0].numel() == 0:
            return out.reshape(shape)
        w, b, qq = sw2[idx], sb2[idx], q[idx]
        q_next = self.q_map(qq, w, b)
        # Mehler series: the coefficients once, then every Newton step is a polynomial
        coef = hermite_coefficients(self.phi.f, qq) ** 2 if self.series else None
        c = torch.zeros_like(w)
        for _ in range(iters):
            if coef is not None:
                v, dv = power_series(coef, c)
                g = (w * v + b) / q_next - c
                gp = w * dv / q_next - 1
            else:
                g = self.c_map(c, qq, w, b) - c
                gp = self.chi_c(c, qq, w) * qq / q_next - 1
            c_new = (c - g / gp.clamp(max=-1e-12)).clamp(0, 1)
            done = bool(torch.all((c_new - c).abs() < 1e-13))
            c = c_new
            if done:
                break
        out[idx] = c
        return out.reshape(shape)

    def xi_q(self, sw2: Tensor, sb2: Tensor, q: Tensor | None = None) -> Tensor:
        """Depth scale of the length map, -1 / ln(dq^l/dq^{l-1} at q*)."""
        q = self.q_star(sw2, sb2) if q is None else _t(q)
        return depth_scale(self.q_slope(q, sw2))

    def xi_c(
        self, sw2: Tensor, sb2: Tensor, q: Tensor | None = None, c: Tensor | None = None
    ) -> Tensor:
        """Depth scale of correlations, -1 / ln chi_c at (q*, c*); chi_c = chi_1 when c* = 1."""
        q = self.q_star(sw2, sb2) if q is None else _t(q)
        c = self.c_star(sw2, sb2, q) if c is None else _t(c)
        chi = torch.where(c >= 1, self.chi1(sw2, sb2, q), self.chi_c(c.clamp(max=C_MAX), q, sw2))
        return depth_scale(chi)

    # ---- whole grids and lines --------------------------------------------------------------
    def phase_diagram(self, sw2: Tensor, sb2: Tensor) -> dict[str, Tensor]:
        """q*, chi_1, c*, chi_c, xi_q, xi_c on the broadcast grid of (sw2, sb2).

        sw2 of shape (A, 1) and sb2 of shape (1, B) give (A, B) tensors.
        """
        check_variances(sw2, sb2)
        sw2, sb2 = torch.broadcast_tensors(_t(sw2), _t(sb2))
        q = self.q_star(sw2, sb2)
        chi1 = self.chi1(sw2, sb2, q)
        c = self.c_star(sw2, sb2, q)
        chic = torch.where(c >= 1, chi1, self.chi_c(c.clamp(max=C_MAX), q, sw2))
        return {
            "sw2": sw2,
            "sb2": sb2,
            "q_star": q,
            "chi1": chi1,
            "c_star": c,
            "chi_c": chic,
            "xi_q": depth_scale(self.q_slope(q, sw2)),
            "xi_c": depth_scale(chic),
        }

    def critical_line(self, q_star: Tensor) -> tuple[Tensor, Tensor]:
        """(sw2, sb2) with chi_1 = 1 at the fixed point q*: sw2 = 1 / E[phi'^2],
        sb2 = q* - sw2 E[phi^2] (points with sb2 < 0 do not exist: nan)."""
        q = _t(q_star)
        sw2 = 1.0 / self.d1(q)
        sb2 = q - sw2 * self.vq(q)
        sb2 = torch.where(sb2 < -1e-12, math.nan, sb2.clamp_min(0))
        return sw2, sb2

    def critical_sw2(self, sb2: Tensor) -> Tensor:
        """sigma_w^2 of the critical line chi_1 = 1 at given sigma_b^2 (shape of sb2).

        Bisection in log q* on the line's parametrisation (sb2(q*) = q* - E[phi^2] / E[phi'^2]
        increases with q*), so no fixed point is solved inside the loop. sb2 = 0 gives the
        q* -> 0 limit 1 / phi'(0)^2 (1 for tanh and erf ... times its constants).
        """
        sb2 = _t(sb2)
        check_variances(torch.ones_like(sb2), sb2)
        if self.phi.homogeneous:  # chi_1 = sw2 E[phi'^2] does not depend on q
            return torch.full_like(sb2, 1.0) / self.d1(torch.ones_like(sb2))
        lo, hi = torch.full_like(sb2, math.log(1e-14)), torch.full_like(sb2, math.log(1e3))
        for _ in range(64):
            mid = (lo + hi) / 2
            below = self.critical_line(mid.exp())[1] < sb2
            lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
        return self.critical_line(((lo + hi) / 2).exp())[0]

    # ---- trajectories through depth ---------------------------------------------------------
    def q_trajectory(self, q1: float, sw2: float, sb2: float, depth: int) -> Tensor:
        """q^1..q^depth (shape (depth,)) from the first-layer length q^1."""
        check_variances(sw2, sb2)
        depth = check_depth(depth)
        qs = [_t(q1)]
        for _ in range(depth - 1):
            qs.append(self.q_map(qs[-1], sw2, sb2))
        return torch.stack(qs)

    def c_trajectory(self, q1: float, c1: float, sw2: float, sb2: float, depth: int) -> Tensor:
        """c^1..c^depth of two inputs of equal length q^1 and correlation c^1 (shape (depth,))."""
        qs = self.q_trajectory(q1, sw2, sb2, depth)
        cs = [_t(c1)]
        for q in qs[:-1]:
            cs.append(self.c_map(cs[-1], q, sw2, sb2))
        return torch.stack(cs)

    def curvature_trajectory(self, sw2: float, sb2: float, depth: int) -> dict[str, Tensor]:
        """Poole et al.'s length and curvature of a great circle of radius sqrt(N q*) at layer 1.

        g_bar^l = chi_1 g_bar^{l-1} (g_bar^1 = q*), the metric per neuron, and
        kappa_bar^l^2 = 3 chi_2 / chi_1^2 + kappa_bar^{l-1}^2 / chi_1 (kappa_bar^1^2 = 1/q*),
        kappa_bar = sqrt(N) kappa. Needs a twice differentiable phi. Shapes (depth,).
        """
        check_variances(sw2, sb2)
        depth = check_depth(depth)
        if self.phi.d2 is None:
            raise ConfigError(
                f"the curvature recursion needs a twice differentiable phi (phi'' of "
                f"{self.phi.name} is a Dirac mass): use tanh, erf or linear"
            )
        q = self.q_star(sw2, sb2)
        if not bool(torch.isfinite(q)) or float(q) <= 0:
            raise ConfigError(
                f"q* = {float(q):g} at sigma_w^2={sw2}, sigma_b^2={sb2}: the circle needs a "
                f"finite q* > 0 (take sigma_b^2 > 0)"
            )
        chi1, chi2 = self.chi1(sw2, sb2, q), self.chi2(sw2, sb2, q)
        g, k2 = [q], [1.0 / q]
        for _ in range(depth - 1):
            g.append(chi1 * g[-1])
            k2.append(3 * chi2 / chi1**2 + k2[-1] / chi1)
        return {"g_bar": torch.stack(g), "kappa_bar": torch.stack(k2).sqrt(), "q_star": q}
