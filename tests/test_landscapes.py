"""Random matrices, free probability, Hessians and spin glasses (scatterlab.landscapes):
closed forms against sampled matrices, numerics against exact cases, Hessian estimators
against exact eigendecompositions."""

from __future__ import annotations

import cmath
import math

import pytest
import torch
from torch import nn

from scatterlab.errors import ConfigError
from scatterlab.landscapes import hessian as hs
from scatterlab.landscapes.jacobian_density import jacobian_density, ks_distance
from scatterlab.landscapes.rmt import (
    Atoms,
    FreeProduct,
    FreeSum,
    MarchenkoPastur,
    Semicircle,
    cdf_from_density,
    empirical_cdf_distance,
    wigner_eigenvalues,
    wishart_eigenvalues,
)
from scatterlab.landscapes.spinglass import (
    SphericalPSpin,
    complexity,
    complexity_k,
    e_inf,
    energy_threshold,
)
from scatterlab.theory import jacobian_spectrum


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- closed forms against Monte Carlo (N = 1000) ---------------------------------------------


def test_semicircle_moments_and_ks():
    ev = wigner_eigenvalues(1000, 2.0, gen())
    sc = Semicircle(2.0)
    for k, tol in ((2, 0.02), (4, 0.05), (6, 0.1)):
        assert (ev**k).mean() == pytest.approx(sc.moment(k), rel=tol)
    x = torch.linspace(-sc.radius, sc.radius, 4001, dtype=torch.float64)
    assert empirical_cdf_distance(ev, x, cdf_from_density(x, sc.density(x))) < 0.02


@pytest.mark.parametrize("c", [0.5, 2.0])
def test_marchenko_pastur_moments_atom_and_ks(c):
    n = 1000
    ev = wishart_eigenvalues(n, round(n / c), 1.0, gen(1))
    mp = MarchenkoPastur(c)
    for k in (1, 2, 3):
        assert (ev**k).mean() == pytest.approx(mp.moment(k), rel=0.03)
    # the atom 1 - 1/c at 0: exactly n - n/c zero eigenvalues
    assert float((ev < 1e-9).double().mean()) == pytest.approx(mp.atom0, abs=1e-3)
    x = mp.hi * torch.linspace(0, 1, 4001, dtype=torch.float64) ** 2
    ev = torch.where(ev < 1e-9, 0.0, ev)
    assert empirical_cdf_distance(ev, x, cdf_from_density(x, mp.density(x))) < 0.02


def test_stieltjes_inversion_recovers_the_densities():
    x = torch.linspace(-2.5, 2.5, 101, dtype=torch.float64)
    sc = Semicircle(1.3)
    inv = -sc.stieltjes(x.to(torch.complex128) + 1e-12j).imag / math.pi
    assert torch.allclose(inv, sc.density(x), atol=1e-6)
    mp = MarchenkoPastur(0.3, 2.0)
    x = torch.linspace(0.05, 6, 101, dtype=torch.float64)
    inv = -mp.stieltjes(x.to(torch.complex128) + 1e-12j).imag / math.pi
    assert torch.allclose(inv, mp.density(x), atol=1e-6)
    # G ~ 1/z at infinity (normalised), and the atom of MP(c > 1) shows as (1 - 1/c)/z at 0
    assert complex(mp.stieltjes(torch.tensor(1e6 + 0j))) == pytest.approx(1e-6, rel=1e-5)
    mp4 = MarchenkoPastur(4.0)
    z = torch.tensor(1e-7j)
    assert complex(z * mp4.stieltjes(z)).real == pytest.approx(0.75, abs=1e-4)


def test_free_sum_of_semicircles_is_a_semicircle():
    fs = FreeSum(Semicircle(1.0), Semicircle(2.0))
    x = torch.linspace(-4, 4, 201, dtype=torch.float64)
    assert (fs.density(x, 1e-8) - Semicircle(3.0).density(x)).abs().max() < 1e-4


def test_free_sum_is_additive_in_r_transforms():
    a, b = MarchenkoPastur(0.5), Semicircle(0.3)
    fs = FreeSum(a, b)
    z = torch.tensor([0.5 + 0.2j, 1.5 + 0.05j, 3 + 1j, -0.5 + 0.3j], dtype=torch.complex128)
    g = fs.stieltjes(z)
    # R(G(z)) + 1/G(z) = z with R = R_A + R_B
    assert torch.allclose(a.r_transform(g) + b.r_transform(g) + 1 / g, z, atol=1e-9)


def test_free_sum_matches_sampled_wishart_plus_wigner():
    n = 1000
    x = torch.randn(n, 2 * n, dtype=torch.float64, generator=gen(2))
    w = torch.randn(n, n, dtype=torch.float64, generator=gen(3))
    ev = torch.linalg.eigvalsh(x @ x.T / (2 * n) + (w + w.T) * math.sqrt(0.3 / (2 * n)))
    fs = FreeSum(MarchenkoPastur(0.5), Semicircle(0.3))
    grid = torch.linspace(-1.5, 4.5, 3001, dtype=torch.float64)
    assert empirical_cdf_distance(ev, grid, cdf_from_density(grid, fs.density(grid))) < 0.02


def test_marchenko_pastur_s_transform_identity():
    """S(m) = (1 + m) / (m M^{-1}(m)) from the closed-form G equals 1 / (var (1 + c m))."""
    mp = MarchenkoPastur(0.7, 1.5)

    def big_m(z: float) -> float:  # M(z) = z G(z) - 1, real and decreasing above the support
        return complex(z * mp.stieltjes(torch.tensor(z, dtype=torch.complex128))).real - 1

    for m in (0.1, 0.4, 1.0):  # M(z) = m has a real root above the support (M(l+) = 1.19)
        lo, hi = mp.hi + 1e-12, 1e6
        for _ in range(200):  # bisection for M(z) = m
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if big_m(mid) > m else (lo, mid)
        z = 0.5 * (lo + hi)
        s = (1 + m) / (m * z)
        assert s == pytest.approx(1 / (1.5 * (1 + 0.7 * m)), rel=1e-6)
        ls, _, _ = mp.log_s(complex(m))
        assert math.exp(ls.real) == pytest.approx(s, rel=1e-6)


def test_numerical_s_transform_of_atoms_matches_closed_form():
    """Atoms' Newton inversion of M against the closed form of a two-atom law."""
    two = Atoms([0.0, 2.0], torch.tensor([0.3, 0.7], dtype=torch.float64))  # closed form
    spread = Atoms([1.0, 3.0])  # numerical
    for m in (0.2 - 0.1j, 1.0 - 0.5j):
        v, _, _ = two.log_s(m)
        assert complex(v) == pytest.approx(cmath.log((1 + m) / (2 * (m + 0.7))), abs=1e-12)
        v, _, y = spread.log_s(m)
        assert complex(spread._m(y)[0]) == pytest.approx(m, abs=1e-10)


def test_free_product_of_two_wisharts_moments():
    """MP(1) x MP(1): the Fuss-Catalan law, m_1 = 1, m_2 = 3 (1 + c1 + c2)."""
    fp = FreeProduct([(MarchenkoPastur(1.0), 2)])
    x = torch.logspace(-9, math.log10(28), 3000, dtype=torch.float64)
    rho = fp.density_on_grid(x, 1e-5)
    assert not rho.isnan().any()
    assert torch.trapezoid(rho * x, x) == pytest.approx(1.0, abs=2e-3)
    assert torch.trapezoid(rho * x**2, x) == pytest.approx(3.0, abs=5e-3)


# --- Jacobian spectra of deep networks ------------------------------------------------------


def test_linear_orthogonal_network_is_a_point_mass_at_one():
    th = jacobian_density("linear", 1.0, 0.0, 16, "orthogonal")
    assert th["var"] == 0 and th["m1"] == 1 and th["mass"] == 0
    sv = jacobian_spectrum("linear", 1.0, 0.0, 50, 16, "orthogonal", 1)["singular_values"]
    assert ks_distance(sv, th) == 0.0
    assert ks_distance(sv * 1.01, th) == 1.0


def test_relu_gaussian_density_moments_and_atom():
    th = jacobian_density("relu", 2.0, 0.0, 4, "gaussian")
    lam, rho = th["lam"], th["rho"]
    assert th["atom0"] == 0.5
    m1 = torch.trapezoid(rho * lam, lam)
    var = torch.trapezoid(rho * lam**2, lam) - m1**2
    assert m1 == pytest.approx(1.0, rel=0.01)
    assert var == pytest.approx(8.0, rel=0.03)  # 2L (Pennington et al. 2017)


@pytest.mark.parametrize(
    ("phi", "weights", "sw2", "sb2"),
    [("relu", "gaussian", 2.0, 0.0), ("relu", "orthogonal", 2.0, 0.0)],
)
def test_jacobian_density_matches_simulated_networks(phi, weights, sw2, sb2):
    th = jacobian_density(phi, sw2, sb2, 4, weights)
    # N = 400: the atom at 0 (zeros of the last D) fluctuates as 1 / (2 sqrt(N seeds))
    sv = jacobian_spectrum(phi, sw2, sb2, 400, 4, weights, 2)["singular_values"]
    assert ks_distance(sv, th) < 0.05
    # a wrong depth is clearly rejected by the same distance
    assert ks_distance(sv, jacobian_density(phi, sw2, sb2, 16, weights)) > 0.08


# --- Hessians --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_problem():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 10), nn.Tanh(), nn.Linear(10, 4)).double()
    x = torch.randn(60, 6, dtype=torch.float64)
    y = torch.randint(0, 4, (60,))
    op = hs.HessianOperator(
        model, nn.functional.cross_entropy, [(x[:35], y[:35]), (x[35:], y[35:])]
    )
    h = op.full()
    return model, x, y, op, h, torch.linalg.eigvalsh(h)


def test_hvp_against_finite_differences_and_autograd_hessian(small_problem):
    model, x, y, op, h, _ = small_problem
    v = torch.randn(op.dim, dtype=torch.float64, generator=gen(4))
    params = op.params
    eps = 1e-6
    with torch.no_grad():
        for p, d in zip(params, op._split(v), strict=True):
            p.add_(eps * d)
    gp = op.gradient()
    with torch.no_grad():
        for p, d in zip(params, op._split(v), strict=True):
            p.sub_(2 * eps * d)
    gm = op.gradient()
    with torch.no_grad():
        for p, d in zip(params, op._split(v), strict=True):
            p.add_(eps * d)
    assert torch.allclose(op.matvec(v), (gp - gm) / (2 * eps), atol=1e-7)
    assert torch.allclose(h @ v, op.matvec(v), atol=1e-12)


def test_gauss_newton_split(small_problem):
    model, x, y, op, h, _ = small_problem
    h0 = op.full("gauss_newton")
    assert torch.linalg.eigvalsh(h0).min() > -1e-12  # PSD: cross-entropy is convex in outputs
    # H_0 = J^T H_l J from the full output Jacobian
    flat = torch.cat([p.detach().reshape(-1) for p in op.params])
    names = [n for n, _ in model.named_parameters()]

    def outputs(theta):
        d, i = {}, 0
        for n, p in zip(names, op.params, strict=True):
            d[n] = theta[i : i + p.numel()].view_as(p)
            i += p.numel()
        return torch.func.functional_call(model, d, (x,)).reshape(-1)

    jac = torch.autograd.functional.jacobian(outputs, flat)  # (60*4, P)
    out = outputs(flat).detach()
    hl = torch.autograd.functional.hessian(
        lambda o: nn.functional.cross_entropy(o.view(60, 4), y), out
    )
    assert torch.allclose(h0, jac.T @ hl @ jac, atol=1e-12)
    h1 = op.full("residual")
    assert torch.allclose(h0 + h1, h, atol=1e-12)


def test_lanczos_top_eigenvalues_trace_and_slq(small_problem):
    _, _, _, op, h, ev = small_problem
    top = hs.top_eigenvalues(op, 3, steps=40)
    assert torch.allclose(top, ev.flip(0)[:3], rtol=1e-8)
    tr, se = hs.hutchinson_trace(op, 300, seed=1)
    assert abs(tr - float(ev.sum())) < 4 * se
    nodes, weights = hs.slq(op, 30, 12, seed=2)
    assert torch.allclose(weights.sum(1), torch.ones(12, dtype=torch.float64))
    assert hs.slq_trace(nodes, weights, op.dim) == pytest.approx(float(ev.sum()), rel=0.15)
    scale = float(ev.abs().max())
    grid = torch.linspace(float(ev.min()) - 0.1 * scale, float(ev.max()) + 0.1 * scale, 3000)
    cdf = cdf_from_density(grid, hs.slq_density(nodes, weights, grid.double(), 0.01 * scale))
    assert empirical_cdf_distance(ev, grid, cdf) < 0.1
    # the index at the resolution of 30 Lanczos steps (Ritz values near the zero modes scatter)
    assert abs(hs.slq_index(nodes, weights, 0.01 * scale) - hs.index(ev, 0.01 * scale)) < 0.1


class _Product(nn.Module):
    """f = w2 * w1 * x: at w1 = w2 = 0 the loss (f - 1)^2 has a strict saddle."""

    def __init__(self) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.zeros(1, dtype=torch.float64))
        self.w2 = nn.Parameter(torch.zeros(1, dtype=torch.float64))

    def forward(self, x):
        return self.w2 * self.w1 * x


def test_index_of_a_known_saddle():
    x, y = torch.ones(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64)
    op = hs.HessianOperator(_Product(), nn.functional.mse_loss, (x, y))
    ev = torch.linalg.eigvalsh(op.full())
    assert torch.allclose(ev, torch.tensor([-2.0, 2.0], dtype=torch.float64))
    assert hs.index(ev) == 0.5


def test_model_without_parameters_is_a_clear_error():
    with pytest.raises(ConfigError, match="no trainable parameters"):
        hs.HessianOperator(nn.Tanh(), nn.functional.mse_loss, (torch.ones(2), torch.ones(2)))


# --- spherical p-spin glass -----------------------------------------------------------------


def test_thresholds_and_complexity_sanity_values():
    assert e_inf(3) == pytest.approx(1.63299, abs=1e-5)
    assert energy_threshold(3) == pytest.approx(1.657, abs=5e-4)  # ground state E_0
    e = e_inf(3)
    # continuity at -E_inf, Theta_p(-E_inf) = 1/2 log 2 - 1/3
    assert float(complexity(-e, 3)) == pytest.approx(0.5 * math.log(2) - 1 / 3, abs=1e-12)
    assert float(complexity_k(-e, 0, 3)) == pytest.approx(float(complexity(-e, 3)), abs=1e-12)
    assert float(complexity(-energy_threshold(3), 3)) == pytest.approx(0, abs=1e-9)
    # more negative directions are rarer at low energy: E_0 > E_1 > E_2 > E_inf
    ek = [energy_threshold(3, k) for k in range(3)]
    assert ek[0] == pytest.approx(energy_threshold(3), abs=1e-9)
    assert ek[0] > ek[1] > ek[2] > e


def test_p_spin_gradient_and_hessian_against_autograd_and_fd():
    sg = SphericalPSpin(8, 3, seed=1)
    s = sg.random_points(2, seed=2)
    e, g = sg.grad(s)
    s_ = s.clone().requires_grad_(True)
    g_auto = torch.autograd.grad(sg.energy(s_).sum(), s_)[0]
    assert torch.allclose(g, g_auto, atol=1e-12)
    assert torch.allclose(e, sg.energy(s))
    h_auto = torch.autograd.functional.hessian(lambda v: sg.energy(v[None]).sum(), s[0])
    assert torch.allclose(sg.hessian(s[:1])[0], h_auto, atol=1e-12)
    d = torch.randn(8, dtype=torch.float64, generator=gen(5))
    fd = (sg.energy((s[0] + 1e-6 * d)[None]) - sg.energy((s[0] - 1e-6 * d)[None])) / 2e-6
    assert float(fd) == pytest.approx(float(g[0] @ d), rel=1e-6)
    rg = sg.riemannian_grad(s)
    assert (rg * s).sum(-1).abs().max() < 1e-10


def test_p_spin_descent_finds_minima_near_the_threshold():
    sg = SphericalPSpin(30, 3, seed=0)
    r = sg.descend(sg.random_points(16, seed=1), lr=0.1, steps=1500, momentum=0.8, tol=1e-6)
    assert r["grad_rms"].max() < 1e-6
    assert -e_inf(3) - 0.2 < float(r["energy"].mean()) < -1.3  # finite-N minima above -E_0
    eig = sg.riemannian_hessian_eigenvalues(r["sigma"][:4])
    assert eig.shape == (4, 29)
    assert eig.min() > -1e-6  # local minima: index 0


def test_p_spin_bfloat16_phase_reaches_the_same_minima_statistics():
    """bfloat16 contractions for the first steps, float32 after: converged minima whose mean
    energy equals the all-float32 descent's within sampling error."""
    sg = SphericalPSpin(40, 3, seed=0, dtype=torch.float32)
    s0 = sg.random_points(64, seed=1)
    full = sg.descend(s0, lr=0.1, steps=600, momentum=0.8, tol=1e-4)
    mixed = sg.descend(s0, lr=0.1, steps=600, momentum=0.8, tol=1e-4, low_precision_steps=500)
    # the float32 tail converges the bfloat16 descent as well as float32 throughout (a few
    # starts sit near a saddle and are slow either way)
    converged = (mixed["grad_rms"] < 1e-3).double().mean()
    assert converged >= min(0.9, float((full["grad_rms"] < 1e-3).double().mean()))
    se = float(full["energy"].std()) / 64**0.5
    assert abs(float(mixed["energy"].mean() - full["energy"].mean())) < 3 * se + 1e-3
    assert sg._j_bf16 is not None and sg._j_bf16.dtype == torch.bfloat16


def test_p_spin_eigenvector_following_finds_index_k_saddles():
    sg = SphericalPSpin(12, 3, seed=3)
    r = sg.saddles(sg.random_points(6, seed=4), 1, lr=0.05, steps=1500, tol=1e-8)
    ok = r["grad_rms"] < 1e-6
    assert ok.sum() >= 4
    assert (r["index"][ok] == 1).all()  # exactly one negative tangent direction
    minima = sg.saddles(sg.random_points(6, seed=4), 0, lr=0.05, steps=1500, tol=1e-8)
    # saddles of index 1 lie above the minima reached from the same starts
    assert float(r["energy"][ok].mean()) > float(minima["energy"].mean())
    with pytest.raises(ConfigError, match="index k"):
        sg.saddles(sg.random_points(2), 12)


def test_p_spin_bad_input():
    with pytest.raises(ConfigError, match="p >= 2"):
        SphericalPSpin(10, 1)
    with pytest.raises(ConfigError, match="N >= 2"):
        SphericalPSpin(1, 3)
    with pytest.raises(ConfigError, match="smaller N"):
        SphericalPSpin(10_000, 3)
    with pytest.raises(ConfigError, match="ratio"):
        MarchenkoPastur(-1.0)


# --- critical points of a small network (Pennington & Bahri's index law) --------------------


def test_two_layer_regression_gradient_and_hessian_are_autograd_s():
    from scatterlab.landscapes.critical import TwoLayerRegression

    for decay in (0.0, 0.01):
        m = TwoLayerRegression(d=3, n=4, k=2, m=7, seed=0, decay=decay)
        th = m.random_points(3, torch.tensor([0.5, 1.0, 2.0]))
        assert torch.allclose(m.gradients(th), m.gradients_autograd(th), atol=1e-13)
        assert torch.allclose(m.hessians(th), m.hessians_autograd(th), atol=1e-13)
        h0 = m.gauss_newton(th)
        assert torch.linalg.eigvalsh(h0).min() > -1e-12  # H_0 = J^T J / m is PSD


def test_index_of_the_origin_saddle_is_closed_form():
    # theta = 0 except b_2 = mean(y): h = tanh(0) = 0 and W_2 = 0, so the gradient vanishes;
    # the Hessian pairs each hidden unit's (W_1 row, b_1) with its W_2 column through the
    # (d+1) x k matrix R = sum_i x~_i r_i^T / (sqrt(n) m): eigenvalues +-sigma(R), so each unit
    # gives min(d+1, k) negative directions: index = n min(d+1, k) / P
    from scatterlab.landscapes.critical import TwoLayerRegression, find_critical_points
    from scatterlab.landscapes.critical import hessian_index as idx

    m = TwoLayerRegression(d=3, n=4, k=2, m=9, seed=1)
    th = torch.zeros(1, m.dim, dtype=torch.float64)
    th[0, -m.k :] = m.y.mean(0)
    assert float(m.gradients(th).norm()) < 1e-14
    alpha, ev = idx(m.hessians(th))
    assert m.dim == 26 and float(alpha) == pytest.approx(4 * 2 / 26)
    r = find_critical_points(m, th, iters=3, tol=1e-12)
    assert bool(r["converged"].all()) and int(r["iters"][0]) == 0  # already critical


def test_newton_on_the_gradient_converges_to_saddles_and_minima():
    from scatterlab.landscapes.critical import TwoLayerRegression, find_critical_points
    from scatterlab.landscapes.critical import hessian_index as idx

    m = TwoLayerRegression(d=2, n=3, k=1, m=40, seed=0, decay=0.01)
    starts = m.random_points(48, torch.tensor([0.5, 1.0, 2.0, 3.0]), seed=3)
    r = find_critical_points(m, starts, iters=80, tol=1e-10)
    ok = r["converged"]
    assert ok.double().mean() > 0.5, r["grad_norm"]
    # really critical (autograd), and at least one saddle besides the minima
    assert float(m.gradients_autograd(r["theta"][ok]).norm(dim=-1).max()) < 1e-9
    alpha, _ = idx(m.hessians(r["theta"][ok]))
    assert (alpha == 0).any() and (alpha > 0).any()
    # the lowest critical point found is a minimum
    assert float(alpha[r["loss"][ok].argmin()]) == 0


def test_index_law_fit_recovers_a_known_power():
    import numpy as np

    from scatterlab.landscapes.critical import fit_index_law

    eps = np.linspace(0.2, 1.0, 40)
    alpha = 0.6 * np.clip((eps - 0.4) / 0.4, 0, None) ** 1.5
    f = fit_index_law(eps, alpha)
    assert f["k"] == pytest.approx(1.5, abs=1e-3) and f["eps_c"] == pytest.approx(0.4, abs=1e-3)
    assert f["a_32"] == pytest.approx(0.6, rel=1e-3) and f["rmse_32"] < 1e-6
