"""Mean-field theory of random networks (scatterlab.theory): closed forms, published values,
simulations of finite networks and Jacobian spectra. Every check compares numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from scatterlab.errors import ConfigError
from scatterlab.theory import (
    MeanField,
    jacobian_spectrum,
    mu_k,
    propagate_circle,
    propagate_pair,
    spectrum_theory,
)
from scatterlab.theory import closed_forms as cf
from scatterlab.theory.quadrature import expect2


def _f64(x: object) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64)


Q = _f64([0.05, 0.3, 1.0, 2.5, 3.9, 7.0, 30.0])
C = _f64([-0.6, 0.0, 0.3, 0.7, 0.9, 0.99, 0.9999])


# ---- quadrature against closed forms ---------------------------------------------------------
def test_erf_quadrature_matches_closed_forms_to_1e8():
    quad, closed = MeanField("erf", method="quadrature"), MeanField("erf")
    assert closed.closed and not quad.closed
    for fn in ("vq", "d1", "d2"):
        assert torch.allclose(getattr(quad, fn)(Q), getattr(closed, fn)(Q), atol=1e-8, rtol=0)
    qq, cc = Q[:5, None], C[None, :]
    # Mehler series (the default for smooth phi) and the direct n2 x n2 rule
    assert torch.allclose(quad.vc(cc, qq), closed.vc(cc, qq), atol=1e-8, rtol=0)
    assert torch.allclose(quad.dc(cc, qq), closed.dc(cc, qq), atol=1e-8, rtol=0)
    # the direct 2D Gauss-Hermite rule is as good only at q <= 1 (sharper integrands beyond)
    direct = MeanField("erf", method="quadrature", series=False, n2=64)
    assert torch.allclose(direct.vc(cc, qq[:3]), closed.vc(cc, qq[:3]), atol=1e-8, rtol=0)
    # unequal lengths through the 2D rule
    q1, q2 = _f64([0.2, 1.5]), _f64([1.1, 0.4])
    got = expect2(torch.erf, torch.erf, q1, q2, _f64([0.5, -0.8]), n=64)
    assert torch.allclose(got, cf.erf_vc(q1, q2, _f64([0.5, -0.8])), atol=1e-8, rtol=0)
    # the slope of the length map (for xi_q) against its closed form
    sw2 = _f64(1.7)
    assert torch.allclose(quad.q_slope(Q, sw2), closed.q_slope(Q, sw2), atol=1e-8, rtol=0)


def test_relu_quadrature_against_arc_cosine_kernel():
    quad, closed = MeanField("relu", method="quadrature"), MeanField("relu")
    # 1D integrals: even node counts are symmetric about the kink at 0, so they are exact
    assert torch.allclose(quad.vq(Q), Q / 2, atol=1e-12, rtol=1e-12)
    assert torch.allclose(quad.d1(Q), torch.full_like(Q, 0.5), atol=1e-12)
    # 2D: the kink costs Gauss-Hermite its exponential convergence (why closed forms are used)
    cc = C[:-1]
    errs = [
        (
            MeanField("relu", method="quadrature", series=False, n2=n).vc(cc, 1.0)
            - closed.vc(cc, 1.0)
        )
        .abs()
        .max()
        for n in (16, 64)
    ]
    assert errs[1] < 3e-3 and errs[1] < errs[0]  # measured 2.1e-3 at n = 64 (algebraic decay)
    # the closed form itself against a brute-force check at c = 0 and c = 1
    assert closed.vc(_f64(0.0), 2.0) == pytest.approx(2.0 / (2 * math.pi))
    assert closed.vc(_f64(1.0), 2.0) == pytest.approx(1.0)
    # critical ReLU C-map (sw2 = 2, sb2 = 0) has slope 1 at c = 1
    c = _f64([1 - 1e-8, 1.0])
    cmap = closed.c_map(c, 1.0, 2.0, 0.0)
    assert float((cmap[1] - cmap[0]) / 1e-8) == pytest.approx(1.0, abs=1e-3)


def test_tanh_series_matches_direct_2d_rule_and_large_q():
    series, direct = MeanField("tanh"), MeanField("tanh", series=False, n2=96)
    qq, cc = _f64([0.1, 0.5, 1.0])[:, None], C[None, :-1]
    assert torch.allclose(series.vc(cc, qq), direct.vc(cc, qq), atol=1e-8, rtol=0)
    # large q: Gauss-Hermite alone is 5 % off for chi_1 at q* = 12.6 (sigma_w = 4, sigma_b =
    # 0.3); the trapezoid branch reproduces scipy's adaptive quadrature (2.36726103554588)
    assert float(series.q_star(16.0, 0.09)) == pytest.approx(12.604149497844293, rel=1e-10)
    assert float(series.chi1(16.0, 0.09)) == pytest.approx(2.36726103554588, rel=1e-10)
    # Parseval: the 200 Mehler coefficients carry all of E[phi^2] at c = 1 up to q ~ 7; the
    # truncation shows at q = 30 (tanh(sqrt(q) z) nears a step), documented in quadrature.py
    one = _f64(1.0)
    assert torch.allclose(series.vc(one, Q[:6]), series.vq(Q[:6]), atol=1e-7, rtol=0)
    assert 1e-6 < float((series.vc(one, Q[6]) - series.vq(Q[6])).abs()) < 3e-4


def test_modulus_closed_form_against_monte_carlo():
    g = torch.Generator().manual_seed(0)
    n, q1, q2 = 400_000, 0.7, 1.9

    def cgauss():
        return torch.complex(*torch.randn(2, n, dtype=torch.float64, generator=g)) / math.sqrt(2)

    for c in (0.0, 0.5, 0.95):
        z1, z2 = cgauss(), cgauss()
        ha = math.sqrt(q1) * z1
        hb = math.sqrt(q2) * (c * z1 + math.sqrt(1 - c**2) * z2)
        prod = ha.abs() * hb.abs()
        se = float(prod.std()) / math.sqrt(n)
        assert float(prod.mean()) == pytest.approx(float(cf.modulus_vc(q1, q2, c)), abs=4 * se)
    # the derivative of the map at c = 1 is 1/2: chi_1 = sigma_w^2 / 2
    assert float(cf.modulus_dc(_f64(1.0))) == pytest.approx(0.5, abs=1e-5)
    mf = MeanField("modulus")
    eps = 1e-5
    slope = (mf.vc(_f64(0.6 + eps), 1.0) - mf.vc(_f64(0.6 - eps), 1.0)) / (2 * eps)
    assert float(slope) == pytest.approx(float(mf.dc(_f64(0.6), 1.0)), rel=1e-6)
    assert float(mf.chi1(1.5, 0.2)) == pytest.approx(0.75)


# ---- published values (Poole 2016, Schoenholz 2017, Pennington 2017) -------------------------
def test_tanh_order_to_chaos_boundary():
    mf = MeanField("tanh")
    # chi_1 = 1 at sigma_b = 0 sits at sigma_w^2 = 1 (q* = 0 there, chi_1 = sigma_w^2 below)
    assert float(mf.critical_sw2(_f64(0.0))) == pytest.approx(1.0, abs=1e-6)
    assert float(mf.chi1(0.95, 0.0)) == pytest.approx(0.95, abs=1e-9)
    assert float(mf.chi1(1.2, 0.0)) > 1 > float(mf.chi1(0.98, 0.0))
    crit = mf.critical_sw2(_f64([0.01, 0.05, 0.10, 0.25]))
    assert torch.allclose(crit, _f64([1.424, 1.761, 1.986, 2.402]), atol=1.5e-3)
    # the line parametrised by q* gives the same points
    sw2, sb2 = mf.critical_line(_f64([1 / 64, 0.3]))
    assert float(sw2[0]) == pytest.approx(1.0306, abs=1e-4)
    assert float(sb2[0]) == pytest.approx(4.65e-6, rel=1e-2)
    assert float(mf.chi1(sw2[1], sb2[1])) == pytest.approx(1.0, abs=1e-9)
    # Poole's example networks at sigma_b = 0.3: chi_1 = 0.94 / 1.59 / 2.38 (2.37 with exact q*)
    chi = mf.chi1(_f64([1.3, 2.5, 4.0]) ** 2, 0.09)
    assert torch.allclose(chi, _f64([0.94, 1.585, 2.37]), atol=0.012)


def test_depth_scales_and_fixed_points():
    mf = MeanField("tanh")
    assert float(mf.xi_c(1.3, 0.05)) == pytest.approx(7.8, abs=0.05)
    assert float(mf.xi_q(1.3, 0.05)) == pytest.approx(1.8, abs=0.02)
    assert float(mf.c_star(2.5, 0.05)) == pytest.approx(0.447, abs=1e-3)
    assert float(mf.xi_c(2.5, 0.05)) == pytest.approx(11.8, abs=0.05)
    assert float(mf.c_star(4.0, 0.05)) == pytest.approx(0.165, abs=1e-3)
    assert float(mf.xi_c(4.0, 0.05)) == pytest.approx(7.0, abs=0.05)
    # c* is a fixed point of the C-map, and chi_c is the map's slope there
    q, c = mf.q_star(2.5, 0.05), mf.c_star(2.5, 0.05)
    assert float(mf.c_map(c, q, 2.5, 0.05)) == pytest.approx(float(c), abs=1e-12)
    eps = 1e-6
    fd = (mf.c_map(c + eps, q, 2.5, 0.05) - mf.c_map(c - eps, q, 2.5, 0.05)) / (2 * eps)
    assert float(fd) == pytest.approx(float(mf.chi_c(c, q, 2.5)), rel=1e-6)
    # correlations approach c* like exp(-l / xi_c): the ratio of successive gaps is chi_c
    cs = mf.c_trajectory(float(q), 0.95, 2.5, 0.05, 160)
    ratio = (cs[-1] - c) / (cs[-2] - c)
    assert float(ratio) == pytest.approx(math.exp(-1 / float(mf.xi_c(2.5, 0.05))), abs=2e-5)
    # xi_q: the slope of the length map at q* by finite differences
    q = mf.q_star(1.3, 0.05)
    fd = (mf.q_map(q + 1e-6, 1.3, 0.05) - mf.q_map(q - 1e-6, 1.3, 0.05)) / 2e-6
    assert float(-1 / math.log(float(fd))) == pytest.approx(float(mf.xi_q(1.3, 0.05)), rel=1e-6)


def test_phase_diagram_grid_matches_pointwise():
    mf = MeanField("tanh")
    sw2, sb2 = torch.linspace(0.5, 4.0, 6)[:, None], torch.linspace(0.0, 0.25, 5)[None, :]
    pd = mf.phase_diagram(sw2, sb2)
    assert pd["xi_c"].shape == (6, 5)
    i, j = 4, 2
    w, b = float(sw2[i, 0]), float(sb2[0, j])
    assert float(pd["xi_c"][i, j]) == pytest.approx(float(mf.xi_c(w, b)), rel=1e-9)
    assert float(pd["c_star"][i, j]) == pytest.approx(float(mf.c_star(w, b)), abs=1e-12)
    # ordered where chi_1 < 1 (c* = 1), chaotic where chi_1 > 1 (c* < 1)
    assert torch.equal(pd["c_star"] < 1, pd["chi1"] > 1)


def test_jacobian_mu_values():
    assert mu_k("tanh", 0.25, 1) == pytest.approx(0.7174, abs=1e-4)
    assert mu_k("tanh", 0.25, 2) == pytest.approx(0.5851, abs=1e-4)
    assert mu_k("tanh", 1 / 64, 1) == pytest.approx(0.9703, abs=1e-4)
    assert mu_k("hardtanh", 0.25, 2) == pytest.approx(math.erf(2 / math.sqrt(2)))
    th = spectrum_theory("relu", 2.0, 0.0, 10, "gaussian")
    assert (th["m1"], th["var"]) == (pytest.approx(1.0), pytest.approx(20.0))
    assert spectrum_theory("relu", 2.0, 0.0, 10, "orthogonal")["var"] == pytest.approx(10.0)
    assert spectrum_theory("linear", 1.0, 0.0, 10, "orthogonal")["var"] == pytest.approx(0.0)


# ---- theory against finite random networks ---------------------------------------------------
def test_q_and_c_maps_against_width_2000_networks():
    """Three networks of width N = 2000: the seed mean of q^l and c^l within 4 standard errors
    (the seed spread) plus the O(1/N) bias, and well within the sqrt(2/N) per-layer noise."""
    n, depth, seeds = 2000, 5, 2
    for phi, sw2, sb2 in (("tanh", 1.5, 0.05), ("tanh", 2.5, 0.05)):
        mf = MeanField(phi)
        runs = [propagate_pair(phi, sw2, sb2, n, depth, 1.0, 0.5, seed=s) for s in range(seeds)]
        q, c = torch.stack([r["q"] for r in runs]), torch.stack([r["c"] for r in runs])
        q_th, c_th = (
            mf.q_trajectory(1.0, sw2, sb2, depth),
            mf.c_trajectory(1.0, 0.5, sw2, sb2, depth),
        )
        floor = math.sqrt(2 / n) / math.sqrt(seeds)  # per-layer sampling error of a mean
        q_se = (q.std(0) / math.sqrt(seeds)).clamp_min(floor * q_th)
        c_se = (c.std(0) / math.sqrt(seeds)).clamp_min(floor)
        assert torch.all((q.mean(0) - q_th).abs() <= 4 * q_se + 1 / n), (q.mean(0), q_th)
        assert torch.all((c.mean(0) - c_th).abs() <= 4 * c_se + 1 / n), (c.mean(0), c_th)
        assert float((c.mean(0) - c_th).abs().max()) < 0.05
    # a wrong map would be far outside: the ReLU map at the same (sw2, sb2) misses by > 10 SE
    wrong = MeanField("relu").q_trajectory(1.0, 2.5, 0.05, depth)
    assert float((q.mean(0) - wrong).abs().max()) > 10 * float(q_se.max())


def test_modulus_network_correlations():
    n, depth = 1000, 5
    runs = [propagate_pair("modulus", 0.8, 0.3, n, depth, 1.0, 0.2, seed=s) for s in range(2)]
    c = torch.stack([r["c"] for r in runs]).mean(0)
    c_th = MeanField("modulus").c_trajectory(1.0, 0.2, 0.8, 0.3, depth)
    assert torch.allclose(c, c_th, atol=4 * math.sqrt(1 / n))
    q = torch.stack([r["q"] for r in runs]).mean(0)
    assert torch.allclose(q, MeanField("modulus").q_trajectory(1.0, 0.8, 0.3, depth), rtol=0.06)


def test_circle_length_and_curvature_against_recursion():
    n, depth = 1000, 6
    for sw2 in (1.3**2, 2.5**2):
        sim = propagate_circle("tanh", sw2, 0.09, n, depth, n_angles=128, seed=1)
        th = MeanField("tanh").curvature_trajectory(sw2, 0.09, depth)
        assert float(sim["g_bar"][0]) == pytest.approx(float(th["g_bar"][0]), rel=1e-9)
        assert float(sim["kappa_bar"][0]) == pytest.approx(float(th["kappa_bar"][0]), rel=1e-9)
        assert torch.allclose(sim["g_bar"], th["g_bar"], rtol=0.1)
        assert torch.allclose(sim["kappa_bar"], th["kappa_bar"], rtol=0.1)


def test_jacobian_spectra_against_free_probability():
    # ReLU at sigma_w^2 = 2: variance 2L (Gaussian) and L (orthogonal)
    depth, n = 4, 200
    for weights in ("gaussian", "orthogonal"):
        meas = jacobian_spectrum("relu", 2.0, 0.0, n, depth, weights, seeds=8)
        th = spectrum_theory("relu", 2.0, 0.0, depth, weights)
        assert meas["m1"] == pytest.approx(th["m1"], abs=4 * meas["m1_se"] + 0.03)
        assert meas["var"] == pytest.approx(th["var"], abs=4 * meas["var_se"] + 0.05 * th["var"])
    # linear orthogonal: every singular value is 1
    sv = jacobian_spectrum("linear", 1.0, 0.0, 100, 16, "orthogonal")["singular_values"]
    assert torch.allclose(sv, torch.ones_like(sv), atol=1e-10)
    # tanh, orthogonal, on the critical line: variance L(mu2/mu1^2 - 1) -> 0 as q* -> 0
    mf, depth, n = MeanField("tanh"), 12, 200
    vars_, ths = [], []
    for q_star in (0.25, 1 / 64):
        sw2, sb2 = (float(t) for t in mf.critical_line(_f64(q_star)))
        meas = jacobian_spectrum("tanh", sw2, sb2, n, depth, "orthogonal", seeds=2)
        th = spectrum_theory("tanh", sw2, sb2, depth, "orthogonal")
        # finite width: at q* = 0.25 the spectrum is wider than the N -> inf theory (measured
        # 2.06 vs 1.64 at N = 200, L = 12), at q* = 1/64 it is within 12 %
        assert meas["var"] == pytest.approx(th["var"], rel=0.3 if q_star > 0.1 else 0.12)
        vars_.append(meas["var"])
        ths.append(th)
    assert vars_[1] < vars_[0] / 10 and vars_[1] < 0.05  # near isometry
    # the same tanh network with Gaussian weights is far from isometric: variance >= L
    assert spectrum_theory("tanh", sw2, sb2, depth, "gaussian")["var"] > depth


# ---- user errors -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "call, words",
    [
        (lambda: MeanField("softmax"), "not pointwise"),
        (lambda: MeanField("sign"), "not differentiable"),
        (lambda: MeanField("swishy"), "unknown"),
        (lambda: MeanField("tanh").q_star(-1.0, 0.1), "sigma_w^2"),
        (lambda: MeanField("tanh").phase_diagram(_f64([1.0]), _f64([-0.1])), "sigma_b^2"),
        (lambda: MeanField("tanh").q_trajectory(1.0, 1.5, 0.05, 0), "depth"),
        (lambda: jacobian_spectrum("relu", 2.0, 0.0, 10, 0), "depth"),
        (lambda: jacobian_spectrum("relu", 2.0, 0.0, 10, 3, "uniform"), "weights"),
        (lambda: propagate_circle("relu", 2.0, 0.1, 10, 3), "twice differentiable"),
        (lambda: MeanField("relu").curvature_trajectory(1.5, 0.1, 5), "twice differentiable"),
    ],
)
def test_bad_input_is_one_config_error_line(call, words):
    with pytest.raises(ConfigError) as e:
        call()
    msg = str(e.value)
    assert words in msg and "\n" not in msg


def test_depth_scales_diverge_at_criticality() -> None:
    # chi_1 = sw2 E[phi'^2] = 1 exactly (linear at sw2 = 1, ReLU at sw2 = 2): xi = +inf, where
    # -1 / ln(chi) gave -inf (ln 1 = 0.0); just off it the scale is finite and positive
    from scatterlab.theory import MeanField

    zero = torch.tensor(0.0, dtype=torch.float64)
    for phi, critical in (("linear", 1.0), ("relu", 2.0)):
        mf = MeanField(phi)
        assert mf.xi_c(torch.tensor(critical, dtype=torch.float64), zero).item() == math.inf
        near = mf.xi_c(torch.tensor(0.95 * critical, dtype=torch.float64), zero).item()
        assert 0 < near < math.inf and near == pytest.approx(-1 / math.log(0.95), rel=1e-6)


def _tanh_critical_sw2(sb2: float) -> float:
    # chi_1(sw2) = 1 by bisection (chi_1 rises through 1 along sw2 at fixed sb2)
    mf, b = MeanField("tanh"), _f64(sb2)
    lo, hi = 1.0, 3.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if mf.chi1(_f64(mid), b).item() < 1 else (lo, mid)
    return 0.5 * (lo + hi)


def test_trainable_depth_is_infinite_on_the_critical_line_and_finite_off_it() -> None:
    # ReLU chi_1 = sw2 / 2: the line is sw2 = 2 for every sb2. sigma_w = sqrt(2) squares to
    # 2 + 4.4e-16, where q* = inf (sb2 = 0) gave nan; now +inf, as at sw2 = 2 exactly.
    from scatterlab.theory import trainable_depth

    assert math.sqrt(2) ** 2 > 2  # the rounding this test is about
    for sb2 in (0.0, 0.05):
        # the two floats nearest sqrt(2) square to 2 + 4.4e-16 and 2 - 4.4e-16
        at = trainable_depth([math.sqrt(2), np.nextafter(math.sqrt(2), 0)], sb2, "relu")
        assert at.tolist() == [math.inf, math.inf]
        # off the line: 6 / |ln chi_1| on both sides (beyond it q* = inf and the gradients'
        # depth scale 1 / ln chi_1 is used), never nan
        sw2 = [1.0, 1.8, 2.2, 3.0]
        got = trainable_depth([math.sqrt(v) for v in sw2], sb2, "relu")
        assert got == pytest.approx([6 / abs(math.log(v / 2)) for v in sw2], rel=1e-12)
    # clipping keeps the line finite for a plot
    assert trainable_depth(math.sqrt(2), 0.0, "relu", max_depth=500).tolist() == 500.0
    # linear: the line is sw2 = 1
    assert trainable_depth(1.0, 0.0, "linear").tolist() == math.inf
    assert trainable_depth(0.9, 0.0, "linear") == pytest.approx(6 / -math.log(0.81), rel=1e-12)


def test_trainable_depth_tanh_critical_point() -> None:
    # tanh, sb2 = 0: the critical point is sw2 = 1 (q* = 0, a double root of the length map
    # where Newton only crawled to q ~ 1e-14, chi_1 = 1 - 1e-13): +inf now, finite beside it
    from scatterlab.theory import trainable_depth

    assert trainable_depth(1.0, 0.0, "tanh").tolist() == math.inf
    assert trainable_depth(0.9, 0.0, "tanh") == pytest.approx(6 / -math.log(0.81), rel=1e-9)
    # sb2 = 0.05: the critical sw2 = 1.76 (Schoenholz et al. Fig. 5); the depth grows without
    # bound as the point is approached from both sides and is finite at a distance
    crit = _tanh_critical_sw2(0.05)
    assert crit == pytest.approx(1.76, abs=0.01)
    for eps in (1e-2, 1e-4):
        below, above = trainable_depth(np.sqrt([crit - eps, crit + eps]), 0.05)
        assert 0 < below < math.inf and 0 < above < math.inf
    near = trainable_depth(np.sqrt([crit - 1e-4, crit + 1e-4]), 0.05)
    far = trainable_depth(np.sqrt([crit - 1e-2, crit + 1e-2]), 0.05)
    assert (near > 20 * far).all() and (near > 1e4).all()
    assert trainable_depth(math.sqrt(crit), 0.05) > 1e6
