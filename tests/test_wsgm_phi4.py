"""phi^4 simulator: Gaussian (mass-term) spectrum, acceptance, gradient, cache."""

import math

import pytest
import torch

from scatterlab.errors import ConfigError
from scatterlab.wsgm.phi4 import (
    HMCSampler,
    Phi4Config,
    gaussian_spectrum,
    generate_phi4,
    laplacian_eigenvalues,
    phi4_energy,
    phi4_grad,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("mass2", [None, 0.3])
def test_gradient_matches_autograd(mass2) -> None:
    x = torch.randn(3, 8, 8, dtype=torch.float64, requires_grad=True)
    phi4_energy(x, 0.68, mass2).sum().backward()
    assert torch.allclose(x.grad, phi4_grad(x.detach(), 0.68, mass2), atol=1e-10)


def test_energy_counts_each_pair_once() -> None:
    # one site at 1 on an otherwise zero 4x4 lattice: 4 bonds of (1-0)^2, quartic sum
    x = torch.zeros(4, 4, dtype=torch.float64)
    x[1, 2] = 1.0
    expected = 0.5 * 0.68 * 4 + (15 * 1.0 + 0.0)  # (0-1)^2 = 1 on 15 sites, (1-1)^2 = 0
    assert math.isclose(float(phi4_energy(x, 0.68)), expected, rel_tol=1e-12)


@pytest.mark.parametrize("fourier_accel", [True, False])
def test_mass_term_gives_the_gaussian_spectrum(fourier_accel: bool) -> None:
    L, beta, m2 = 8, 0.68, 0.5
    cfg = Phi4Config(
        size=L,
        beta=beta,
        mass2=m2,
        n_samples=2048,
        n_chains=256,
        n_therm=30,
        thin=3,
        n_leapfrog=8,
        fourier_accel=fourier_accel,
        seed=1,
    )
    x = HMCSampler(cfg).run(progress=False)[:, 0].double()
    power = torch.fft.fft2(x).abs().pow(2).mean(0) / (L * L)
    ratio = power / gaussian_spectrum(L, beta, m2)
    # each mode's power is exponential (std = mean) over 2048 (correlated) samples; modes k and
    # -k coincide, so the mean over the L^2 modes has std about sqrt(2 / L^2 / 2048).
    assert abs(float(ratio.mean()) - 1) < 5 * math.sqrt(2 / (L * L * 2048)) * 2
    # every single mode within 6 sigma (std <= sqrt(2 / 2048), x1.5 for autocorrelation)
    assert float((ratio - 1).abs().max()) < 6 * math.sqrt(2 / 2048) * 1.5
    # a wrong coupling would be detected: the beta/2 vs beta convention changes the spectrum
    wrong = power / gaussian_spectrum(L, 2 * beta, m2)
    assert float((wrong - 1).abs().max()) > 6 * math.sqrt(2 / 2048) * 1.5


@pytest.mark.parametrize("fourier_accel", [True, False])
def test_acceptance_rate_is_sane(fourier_accel: bool) -> None:
    cfg = Phi4Config(
        size=16,
        n_samples=64,
        n_chains=64,
        n_therm=30,
        thin=2,
        fourier_accel=fourier_accel,
        dt=0.1 if not fourier_accel else 0.2,
    )
    s = HMCSampler(cfg)
    x = s.run(progress=False)
    assert 0.6 <= s.acceptance <= 0.98
    assert x.shape == (64, 1, 16, 16)
    assert torch.isfinite(x).all()
    # beta = 0.68 is near criticality: |phi| of order 1, not frozen, not exploded
    assert 0.3 < float(x.std()) < 1.5


def test_laplacian_eigenvalues() -> None:
    lam = laplacian_eigenvalues(4, dtype=torch.float64)
    assert float(lam[0, 0]) == 0.0
    assert math.isclose(float(lam[2, 2]), 8.0)


def test_cache_is_keyed_by_parameters(tmp_path) -> None:
    cfg = Phi4Config(size=8, n_samples=16, n_chains=16, n_therm=5, thin=1, seed=3)
    a = generate_phi4(cfg, tmp_path, progress=False)
    files = list(tmp_path.glob("*.pt"))
    assert len(files) == 1
    b = generate_phi4(cfg, tmp_path, progress=False)
    assert torch.equal(a, b)
    other = Phi4Config(size=8, n_samples=16, n_chains=16, n_therm=5, thin=1, seed=4)
    assert other.key() != cfg.key()
    generate_phi4(other, tmp_path, progress=False)
    assert len(list(tmp_path.glob("*.pt"))) == 2


def test_bad_simulator_config() -> None:
    with pytest.raises(ConfigError):
        Phi4Config(size=8, mass2=-1.0).validate()
    with pytest.raises(ConfigError):
        Phi4Config(size=8, n_chains=0).validate()


def test_batch_larger_than_the_training_set_is_a_config_error() -> None:
    from scatterlab.data.phi4 import Phi4DataModule

    dm = Phi4DataModule(size=16, n_train=8, batch_size=64)  # fine for train=false runs
    with pytest.raises(ConfigError, match="no training batch"):
        dm.train_dataloader()


def test_lattice_metrics_closed_forms() -> None:
    """W1 between a law and its shift is the shift; |m| of constant fields is |c|; a sample
    against itself has zero errors."""
    from scatterlab.wsgm.metrics import abs_magnetization, lattice_metrics, wasserstein1

    a = torch.randn(4096, generator=torch.Generator().manual_seed(0))
    assert wasserstein1(a, a + 0.3) == pytest.approx(0.3, abs=1e-6)  # float32 shift
    c = torch.tensor([-2.0, 0.5, 1.5]).view(3, 1, 1, 1) * torch.ones(3, 1, 8, 8)
    assert abs_magnetization(c).tolist() == pytest.approx([2.0, 0.5, 1.5])
    x = torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    m = lattice_metrics(x, x)
    assert m["energy_error"] == 0 and m["abs_m_w1"] == 0
    assert m["abs_m_mean"] == m["abs_m_mean_data"] > 0
