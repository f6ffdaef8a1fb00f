"""Tests of scatterlab.multiscale (issue 25): closed forms, invariants, sign patterns, errors."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import pywt
import torch

from scatterlab.errors import ConfigError
from scatterlab.multiscale import (
    SGMTerms,
    WSGMTerms,
    conditional_block,
    ddpm_gaussian,
    gaussian_marginal_precision,
    neg_laplacian,
    phi4_hessian,
    phi4_hessian_autograd,
    phi4_min_eigenvalues,
    power_law_spectrum,
    steps_needed,
    wavelet_blocks,
    wavelet_matrix,
)
from scatterlab.wsgm.diffusion import OUDiffusion
from scatterlab.wsgm.dwt import DWT2d
from scatterlab.wsgm.oracle import level_cross_spectrum
from scatterlab.wsgm.phi4 import (
    Phi4Config,
    gaussian_spectrum,
    generate_phi4,
    phi4_energy,
    phi4_grad,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors: extra threads only spin on a shared CPU
    yield
    torch.set_num_threads(old)


# ---- wavelet matrices ---------------------------------------------------------------------
@pytest.mark.parametrize("wavelet", ["haar", "db4"])
@pytest.mark.filterwarnings("ignore:Level value")
def test_wavelet_matrix_orthogonal_and_equal_to_pywt(wavelet):
    size, levels = 8, 2
    w = wavelet_matrix(size, levels, wavelet)
    assert torch.allclose(w @ w.T, torch.eye(size * size, dtype=torch.float64), atol=1e-12)
    x = torch.randn(size, size, dtype=torch.float64)
    c = w @ x.reshape(-1)
    low, (ch, cv, cd), *_ = pywt.wavedec2(x.numpy(), wavelet, mode="periodization", level=levels)
    b = wavelet_blocks(size, levels)
    assert torch.allclose(c[b["low"]], torch.from_numpy(low).reshape(-1), atol=1e-12)
    d2 = c[b["detail_2"]].reshape(3, 2, 2)
    for ours, ref in zip(d2, (ch, cv, cd), strict=True):
        assert torch.allclose(ours, torch.from_numpy(ref), atol=1e-12)


# ---- Hessians -----------------------------------------------------------------------------
@pytest.mark.parametrize("mass2", [None, 0.3])
def test_phi4_hessian_closed_form_vs_autograd_and_finite_differences(mass2):
    torch.manual_seed(0)
    x = torch.randn(4, 4, dtype=torch.float64)
    h = phi4_hessian(x[None], 0.68, mass2)[0]
    assert torch.allclose(h, phi4_hessian_autograd(x, 0.68, mass2), atol=1e-10)
    v = torch.randn(4, 4, dtype=torch.float64)
    eps = 1e-5
    fd = (phi4_grad(x + eps * v, 0.68, mass2) - phi4_grad(x - eps * v, 0.68, mass2)) / (2 * eps)
    assert torch.allclose(h @ v.reshape(-1), fd.reshape(-1), atol=1e-6)


def test_family_hessian_is_the_autograd_hessian_of_the_fitted_energy():
    """The CSLC ansatz's closed-form Hessian equals autograd of ``phi4_family_energy`` for
    arbitrary couplings (the renormalised energies' ansatz)."""
    from scatterlab.multiscale.cslc import phi4_family_energy
    from scatterlab.multiscale.hessian import family_hessian

    torch.manual_seed(2)
    x = torch.randn(5, 5, dtype=torch.float64)
    theta = torch.tensor([0.35, -0.7, 0.13], dtype=torch.float64)
    auto = torch.autograd.functional.hessian(
        lambda v: phi4_family_energy(v.reshape(1, 5, 5), theta)[0][0], x.reshape(-1)
    )
    assert torch.allclose(family_hessian(x[None], theta)[0], auto, atol=1e-10)


def test_cascade_hessians_at_the_finest_scale_are_phi4s():
    """With phi^4's own couplings at scale 1 the cascade's Hessians are the exact ones of
    ``phi4_min_eigenvalues``; the coarsest has no conditional; large fields are skipped."""
    from scatterlab.multiscale.hessian import cascade_min_eigenvalues

    torch.manual_seed(3)
    x = torch.randn(3, 8, 8, dtype=torch.float64)
    thetas = [(0.1, -0.2, 0.01), (0.4, -0.7, 0.1), (0.68, -2.0, 1.0)]  # coarsest, j=2, j=1
    out = cascade_min_eigenvalues(x, thetas, "haar")
    exact = phi4_min_eigenvalues(x, 0.68, ["haar"])
    assert torch.allclose(out[2]["unconditional"], exact["unconditional"], atol=1e-10)
    assert torch.allclose(out[2]["conditional"], exact["conditional/haar"], atol=1e-10)
    assert out[0]["conditional"] is None and out[0]["unconditional"].shape == (3,)
    assert out[1]["conditional"].shape == (3,)
    skipped = cascade_min_eigenvalues(x, thetas, "haar", max_sites=16)
    assert skipped[2]["unconditional"] is None and skipped[1]["unconditional"] is not None


@pytest.mark.parametrize("wavelet", ["haar", "db4"])
def test_score_matching_without_dense_matrices_equals_the_dense_fit(wavelet, monkeypatch):
    """The L > 64 path of ``fit_conditional_phi4`` (one DWT level, the detail projector's
    diagonal and the kinetic trace from one low-pass atom) gives the dense fit's couplings."""
    from scatterlab.multiscale import cslc

    x = torch.randn(16, 16, 16, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    dense = cslc.fit_conditional_phi4(x, wavelet)
    monkeypatch.setattr(cslc, "MAX_DENSE_SIZE", 8)
    conv = cslc.fit_conditional_phi4(x, wavelet)
    assert torch.allclose(dense["theta"], conv["theta"], atol=1e-10, rtol=0)
    assert torch.allclose(dense["se"], conv["se"], atol=1e-10, rtol=0)


def test_neg_laplacian_spectrum():
    ev = torch.linalg.eigvalsh(neg_laplacian(6))
    k = 2 * torch.pi * torch.arange(6, dtype=torch.float64) / 6
    lam = (2 - 2 * torch.cos(k))[:, None] + (2 - 2 * torch.cos(k))[None, :]
    assert torch.allclose(ev, lam.reshape(-1).sort().values, atol=1e-12)


@pytest.mark.parametrize("wavelet", ["haar", "db4"])
def test_conditional_hessian_is_hessian_of_energy_in_detail_coordinates(wavelet):
    """The block of W H W^T equals the autograd Hessian of xbar -> E(IDWT(x_low, xbar))."""
    torch.manual_seed(1)
    size, beta = 8, 0.68
    x = torch.randn(1, 1, size, size, dtype=torch.float64)
    dwt = DWT2d(wavelet, 1)
    low, (det,) = dwt(x)

    def energy(flat: torch.Tensor) -> torch.Tensor:
        return phi4_energy(dwt.inverse(low, [flat.reshape(det.shape)])[0, 0], beta)

    ref = torch.autograd.functional.hessian(energy, det.reshape(-1))
    ours = conditional_block(phi4_hessian(x[:, 0], beta), wavelet)[0]
    assert torch.allclose(ours, ref, atol=1e-10)


@pytest.mark.parametrize(("wavelet", "scale"), [("haar", 1), ("haar", 2), ("db4", 2)])
def test_gaussian_conditional_eigenvalues_match_fourier_closed_form(wavelet, scale):
    """Dense (marginal precision, block) vs Fourier: the conditional covariance of the details
    given the low-pass is S_DD - S_DA S_AD / S_AA per coarse frequency; its precision's extreme
    eigenvalues are 1 / (extreme eigenvalues of that 3 x 3 covariance)."""
    size, beta, mass2 = 16, 0.68, 0.34 * (2 * math.pi / 16) ** 2
    prec = beta * neg_laplacian(size) + 2 * mass2 * torch.eye(size * size, dtype=torch.float64)
    block = conditional_block(gaussian_marginal_precision(prec, size, scale - 1, wavelet), wavelet)
    dense = torch.linalg.eigvalsh(block)
    spec = gaussian_spectrum(size, beta, mass2)
    dwt = DWT2d(wavelet, 1)
    for _ in range(scale - 1):
        spec = level_cross_spectrum(dwt, spec)[0, 0].real
    S = level_cross_spectrum(dwt, spec).permute(2, 3, 0, 1)
    cov = S[..., 1:, 1:] - S[..., 1:, :1] @ S[..., :1, 1:] / S[..., :1, :1]
    ev = torch.linalg.eigvalsh(0.5 * (cov + cov.conj().transpose(-1, -2)))
    assert math.isclose(float(dense[0]), float(1 / ev.max()), rel_tol=1e-8)
    assert math.isclose(float(dense[-1]), float(1 / ev.min()), rel_tol=1e-8)


def test_sign_pattern_on_a_constructed_field():
    """x = 1 except one site at 0 (V'' = -4 there): E is not convex, E(xbar_1 | x_1) is."""
    x = torch.ones(1, 8, 8)
    x[0, 3, 3] = 0
    eig = phi4_min_eigenvalues(x, 0.68, ["haar", "db4"])
    assert eig["unconditional"].item() < -1
    assert eig["conditional/haar"].item() > 1
    assert eig["conditional/db4"].item() > 1


def test_sign_pattern_on_phi4_samples(tmp_path):
    """HMC samples at L = 8: at beta = 1.36 the unconditional Hessian is mostly indefinite while
    every finest-scale conditional is positive definite; at beta = 0.5 neither is."""
    out = {}
    for beta in (0.5, 1.36):
        cfg = Phi4Config(size=8, beta=beta, n_samples=16, n_chains=16, n_therm=60)
        x = generate_phi4(cfg, tmp_path, progress=False)[:, 0]
        out[beta] = phi4_min_eigenvalues(x, beta, ["haar", "db4"])
    assert (out[1.36]["unconditional"] < 0).double().mean() > 0.5
    assert (out[1.36]["conditional/haar"] > 0).all()
    assert (out[1.36]["conditional/db4"] > 0).all()
    assert (out[0.5]["conditional/db4"] < 0).all()
    assert (out[0.5]["unconditional"] < out[0.5]["conditional/db4"]).all()


# ---- exact sampling error ------------------------------------------------------------------
class _ScalarOracle(torch.nn.Module):
    """Exact eps of N(mu, sigma) data, as the oracles of scatterlab.wsgm.oracle."""

    def __init__(self, mu: float, sigma: float) -> None:
        super().__init__()
        self.mu, self.sigma = mu, sigma
        self.anchor = torch.nn.Parameter(torch.zeros(()), requires_grad=False)

    def forward(self, x, t, cond=None):
        a = torch.exp(-t).view(-1, 1)
        s2 = 1 - a * a
        return s2.sqrt() * (x - a * self.mu) / (a * a * self.sigma + s2)


@pytest.mark.parametrize(("grid", "variance"), [("uniform", "large"), ("quadratic", "small")])
def test_ddpm_gaussian_matches_the_project_sampler(grid, variance):
    mu, sigma, n_steps, n = 0.7, 0.3, 4, 40000
    diff = OUDiffusion(T=5.0, variance=variance, eps_skip=False)
    g = torch.Generator().manual_seed(0)
    x = diff.sample(_ScalarOracle(mu, sigma), (n, 1), n_steps, grid, generator=g, device="cpu")
    c, gamma = ddpm_gaussian(torch.tensor(sigma), n_steps, 5.0, grid, variance)
    se_mean = math.sqrt(float(c) / n)
    assert abs(float(x.double().mean()) - float(gamma) * mu) < 5 * se_mean
    assert abs(float(x.double().var()) / float(c) - 1) < 5 * math.sqrt(2 / n)
    # and the discretisation error is real at 4 steps: the law differs from the data's
    assert abs(float(c) / sigma - 1) > 0.05


def test_wsgm_equals_sgm_on_white_noise_and_error_decreases():
    spec = torch.ones(16, 16, dtype=torch.float64)
    sgm, wsgm = SGMTerms(spec), WSGMTerms(spec, 1)
    for n in (2, 8):
        assert math.isclose(sgm.kl(n, 5.0), wsgm.kl(n, 5.0), rel_tol=1e-9)
    spec = power_law_spectrum(16, 2.0)
    kls = [WSGMTerms(spec, 1).kl(n, 5.0) for n in (4, 16, 64)]
    assert kls[0] > kls[1] > kls[2] > 0


def test_sgm_needs_more_steps_as_the_condition_number_grows():
    """Two-mode fields [1, kappa]: exact-score SGM needs more steps for a larger kappa."""
    steps = []
    for kappa in (4.0, 40.0, 400.0):
        t = SGMTerms(torch.tensor([1.0, kappa], dtype=torch.float64))
        steps.append(steps_needed(lambda n, t=t: t.kl(n, 5.0, "uniform"), 1e-2))
    assert steps[0] < steps[1] < steps[2]


def test_steps_vs_size_sgm_grows_wsgm_flat():
    """eta = 3, uniform grid: SGM's steps to KL/pixel 1e-2 grow with L, WSGM's do not."""
    out = {}
    for size in (16, 64):
        spec = power_law_spectrum(size, 3.0)
        s, w = SGMTerms(spec), WSGMTerms(spec, int(math.log2(size // 8)))
        out[size] = [
            steps_needed(lambda n, t=t: t.kl(n, 5.0, "uniform"), 1e-2, 4096) for t in (s, w)
        ]
    assert out[64][0] > 2 * out[16][0]
    assert abs(out[64][1] / out[16][1] - 1) < 0.2


# ---- bad input ------------------------------------------------------------------------------
def test_bad_input_raises_config_error():
    from scatterlab.modules.multiscale import CSLCModule, LogConcavityModule, StepsVsSizeModule

    with pytest.raises(ConfigError, match="unknown wavelet"):
        LogConcavityModule(wavelets=["nope"])
    with pytest.raises(ConfigError, match="not divisible"):
        LogConcavityModule(size=12, gaussian_levels=3)
    with pytest.raises(ConfigError, match="module.sizes"):
        StepsVsSizeModule(sizes=[48], coarsest=32)
    with pytest.raises(ConfigError, match="empty"):
        StepsVsSizeModule(etas=[])
    with pytest.raises(ConfigError, match="not divisible"):
        CSLCModule(size=12, levels=3)
    with pytest.raises(ConfigError, match="unknown wavelet"):
        CSLCModule(wavelet="db99")
    with pytest.raises(ConfigError, match="dense"):
        wavelet_matrix(128, 1)


def test_cli_bad_value_is_one_line_and_exit_2():
    proc = subprocess.run(
        [sys.executable, "train.py", "experiment=steps_vs_size_sharp", "module.grids=[linear]"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    err = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(err) == 1 and "grids" in err[0]


def test_score_matching_recovers_phi4_couplings_at_the_finest_scale(tmp_path):
    """phi^4 HMC data (beta = 0.68, L = 16): the conditional fit gives (beta, -2, 1) to 10%."""
    from scatterlab.multiscale.cslc import fit_conditional_phi4

    cfg = Phi4Config(size=16, beta=0.68, n_samples=32, n_chains=32, n_therm=100)
    x = generate_phi4(cfg, tmp_path, progress=False)[:, 0]
    fit = fit_conditional_phi4(x, "haar")
    true = torch.tensor([0.68, -2.0, 1.0], dtype=torch.float64)
    assert ((fit["theta"] - true).abs() < 0.1 * true.abs()).all(), fit["theta"]
    # a wrong model of the data is not recovered: Gaussian data give no quartic term
    g = torch.randn(32, 16, 16, dtype=torch.float64)
    assert abs(float(fit_conditional_phi4(g, "haar")["theta"][2])) < 0.05


def test_mala_leaves_a_known_gaussian_invariant():
    """E = 0.5 sum_edges (dx)^2 / 2 + 0.6 sum x^2 (phi^4 family, theta_4 = 0): chains started
    at exact samples keep the exact per-mode variances 1 / (0.5 lambda + 1.2), within error."""
    from scatterlab.multiscale.cslc import mala, phi4_family_energy
    from scatterlab.wsgm.phi4 import laplacian_eigenvalues

    theta = torch.tensor([0.5, 0.6, 0.0], dtype=torch.float64)
    size, n = 8, 512
    spec = 1 / (0.5 * laplacian_eigenvalues(size, dtype=torch.float64) + 1.2)
    g = torch.Generator().manual_seed(0)
    white = torch.randn(n, size, size, dtype=torch.float64, generator=g)
    x0 = torch.fft.ifft2(torch.fft.fft2(white) * spec.sqrt()).real
    x, rate, _ = mala(lambda v: phi4_family_energy(v, theta), x0, 200, step=0.3, generator=g)
    assert 0.3 < rate < 0.9
    var = float(x.pow(2).mean())
    se = float(x.pow(2).mean(dim=(-2, -1)).std()) / math.sqrt(n)
    assert abs(var - float(spec.mean())) < 5 * se
    low = torch.fft.fft2(x)[:, 0, 0].abs().pow(2).mean() / size**2  # the slowest mode
    assert abs(float(low) / float(spec[0, 0]) - 1) < 0.25


def test_cslc_cascade_recovers_finest_couplings_and_samples(tmp_path):
    from scatterlab.multiscale.cslc import fit_cascade, sample_cascade

    cfg = Phi4Config(size=16, beta=0.68, n_samples=32, n_chains=32, n_therm=100)
    x = generate_phi4(cfg, tmp_path, progress=False)[:, 0]
    fits = fit_cascade(x, 2)
    assert len(fits) == 3
    finest = fits[-1]["theta"]
    true = torch.tensor([0.68, -2.0, 1.0], dtype=torch.float64)
    assert ((finest - true).abs() < 0.1 * true.abs()).all()
    samples, rates = sample_cascade(fits, 16, 8, 60)
    assert samples.shape == (8, 1, 16, 16) and torch.isfinite(samples).all()
    assert all(0.2 < r < 0.95 for r in rates)


@pytest.mark.parametrize(("rf", "c_in", "size"), [(5, 1, 32), (9, 4, 16), (13, 1, 32)])
def test_local_denoiser_receptive_field_is_the_configured_one(rf, c_in, size):
    from scatterlab.multiscale.denoisers import LocalDenoiser, measured_rf

    torch.manual_seed(0)
    net = LocalDenoiser(rf, c_in, 1 if c_in == 1 else 3)
    assert measured_rf(net, c_in, size) == rf


@pytest.mark.parametrize("rf", [4, 1, 0])
def test_local_denoiser_refuses_even_or_tiny_receptive_fields(rf):
    from scatterlab.multiscale.denoisers import LocalDenoiser

    with pytest.raises(ConfigError, match="receptive field"):
        LocalDenoiser(rf, 1, 1)


def test_steps_to_reach_interpolates_the_first_crossing():
    """The N at which a sampled error curve first reaches a target (the oracle study's column):
    exact on a power law, the first crossing (not a later one), NaN when never reached."""
    from scatterlab.modules.wsgm import steps_to_reach

    ns = [2, 4, 8, 16, 32]
    errs = [1.0 / n for n in ns]  # err = 1 / N: N to reach 0.1 is 10
    assert steps_to_reach(ns, errs, 0.1) == pytest.approx(10.0)
    assert steps_to_reach(ns, errs, 0.6) == 2.0
    assert math.isnan(steps_to_reach(ns, errs, 0.01))
    assert steps_to_reach([2, 4, 8], [0.5, 0.05, 0.2], 0.1) < 4.0  # noise after: first crossing


def test_cslc_module_reads_the_phi4_data_modules_fields(tmp_path):
    """CSLCModule with the data module's n_val / n_chains / n_therm / seed simulates (or reads
    from the cache) the same fields and splits them the same way: a row of phi4_models."""
    from scatterlab.data.phi4 import Phi4DataModule

    dm = Phi4DataModule(
        size=8, n_train=8, n_val=2, n_test=6, n_chains=4, n_therm=10, seed=3,
        cache_dir=str(tmp_path), progress=False,
    )  # fmt: skip
    dm.setup()
    cfg = Phi4Config(size=8, beta=0.68, n_samples=16, n_chains=4, n_therm=10, seed=3)
    x = generate_phi4(cfg, tmp_path, progress=False)
    assert torch.equal(x[:8], dm.splits["train"]) and torch.equal(x[10:], dm.splits["test"])


def test_cslc_module_writes_the_phi4_models_metric_names(tmp_path):
    """The CSLC run's scores under the plain names that the phi4_models study reads (the same
    as its cslc/ ones), with seconds per sample; tiny run (L = 8, J = 1)."""
    from scatterlab.modules.multiscale import CSLCModule

    mod = CSLCModule(
        size=8, levels=1, n_train=8, n_test=8, n_samples=8, n_steps=10, n_therm=10,
        n_val=2, n_chains=4, cache_dir=str(tmp_path), output_dir=None,
    )  # fmt: skip
    mod.compute()
    m = mod.metrics
    for k in ("spectrum_error", "hist_distance", "energy_per_site", "abs_m_mean", "abs_m_w1"):
        assert m[k] == m[f"cslc/{k}"] and math.isfinite(m[k])
    assert m["seconds_per_sample"] == pytest.approx(1 / m["samples_per_s"])
