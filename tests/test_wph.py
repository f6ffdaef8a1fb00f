"""Wavelet phase harmonics: invariances, Gaussian closed forms, synthesis, input errors."""

from __future__ import annotations

import math

import pytest
import torch

from scatterlab.errors import ConfigError
from scatterlab.wph import CLASSES, WPHOp, check_fields, require_square
from scatterlab.wph.synthesis import gaussian_baseline, synthesize
from scatterlab.wsgm.metrics import histogram_distance, spectrum_error
from scatterlab.wsgm.phi4 import Phi4Config, gaussian_spectrum, generate_phi4

CID = {c: i for i, c in enumerate(CLASSES)}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # small FFTs on a shared 2-core machine: a second intra-op thread only contends
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _non_gaussian(n: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, size, size, generator=g, dtype=torch.float64)
    smooth = torch.fft.ifft2(torch.fft.fft2(w) * gaussian_spectrum(size, 0.5, 0.2).sqrt()).real
    return smooth + 0.7 * smooth**2 - 0.3 * smooth.abs() ** 3  # skewed, heavy-tailed


@pytest.fixture(scope="module")
def op32() -> WPHOp:
    return WPHOp(32, J=3, L=4, dn=1, dtype=torch.float64)


def test_moment_counts_match_pywph_default_model() -> None:
    # PyWPH 1.1.3 counts for a real 256 x 256 field (reference table; counts do not depend on
    # the size), without our M class
    cls = [c for c in CLASSES if c != "M"]
    for (j, l_, dn), count in {(7, 4, 0): 513, (7, 4, 2): 3105, (4, 8, 1): 1369}.items():
        assert WPHOp(128, J=j, L=l_, dn=dn, classes=cls).n_moments == count


def test_invariant_to_circular_translations(op32: WPHOp) -> None:
    x = _non_gaussian(2, 32)
    for normalized in (False, True):
        if normalized:
            op32.fit_normalization(x)
        m = op32(x, normalized=normalized)
        for shift in ((5, -7), (1, 0), (16, 13)):
            ms = op32(torch.roll(x, shift, (-2, -1)), normalized=normalized)
            assert (m - ms).abs().max() < 1e-10 * m.abs().max()
    op32.clear_normalization()


def _rotation_permutation(op: WPHOp, k: int) -> list[int]:
    """Row p of moments(rot90(x, k)) equals (in modulus) row perm[p] of moments(x).

    A rotation by k * 90 degrees moves orientation t to t + k L / 2 (mod L); an orientation that
    wraps past pi is the conjugate map (real field), whose 2A-direction lags point the other
    way (a -> a + A).
    """
    L, A, sh = op.L, op.A, (k * op.L // 2) % op.L
    key = {tuple(r): i for i, r in enumerate(op.indices.tolist())}
    perm = []
    for row in op.indices.tolist():
        r = list(row)
        if r[2] >= 0:
            wrap = (r[2] + sh >= L) if k == 1 else (r[2] + sh < L)
            r[2], r[5] = (r[2] + sh) % L, (r[5] + sh) % L
            if wrap and r[0] in (CID["C01"], CID["Cphase"]) and r[7] > 0:
                r[8] = (r[8] + A) % (2 * A)
        perm.append(key[tuple(r)])
    return perm


def test_covariant_with_90_degree_rotations(op32: WPHOp) -> None:
    x = _non_gaussian(2, 32, seed=1)
    m = op32(x, normalized=False)
    for k in (1, -1):
        mr = op32(torch.rot90(x, k, (-2, -1)), normalized=False)
        perm = _rotation_permutation(op32, k)
        assert perm != list(range(len(perm)))  # orientations really move
        assert (mr.abs() - m[:, perm].abs()).abs().max() < 1e-10 * m.abs().max()
        # without the permutation the moments differ: the check can fail
        assert (mr.abs() - m.abs()).abs().max() > 1e-3 * m.abs().max()


def test_k1_moments_are_the_power_spectrum_of_each_field(op32: WPHOp) -> None:
    """S11(tau) = (1 / (MN)^2) sum_k |x_hat(k)|^2 |psi_hat(k)|^2 e^{i k tau} (Parseval)."""
    x = _non_gaussian(3, 32, seed=2)
    m = op32(x, normalized=False)
    sl = op32.class_slices()["S11"]
    rows = op32.indices[sl]
    xh2 = torch.fft.fft2(x).abs() ** 2  # (B, M, N)
    pos = op32.pos_s  # (L, n_lags) flat lag positions
    for i, (_, j, t, _, _, _, _, n, a) in enumerate(rows.tolist()):
        lag = 0 if n == 0 else 1 + (n - 1) * op32.A + a
        p = int(pos[t, lag])
        dy, dx = p // 32, p % 32
        ky = 2 * math.pi * torch.fft.fftfreq(32, dtype=torch.float64)[:, None]
        kx = 2 * math.pi * torch.fft.fftfreq(32, dtype=torch.float64)[None, :]
        phase = torch.exp(1j * (ky * dy + kx * dx))
        expect = (xh2 * op32.psi_hat[j, t] ** 2 * phase).sum(dim=(-2, -1)) / 32**4
        assert torch.allclose(m[:, sl][:, i], expect, atol=1e-12, rtol=1e-9)


def test_gaussian_field_k1_moments_and_vanishing_cross_harmonics(op32: WPHOp) -> None:
    """Gaussian fields: E S11 = (1/MN) sum_k P(k) |psi_hat|^2 with the true spectrum P, and the
    k != k' correlations (S01, C01, Cphase) are zero within sampling error; a non-Gaussian
    field of the same kind fails the second check."""
    n, size = 64, 32
    spec = gaussian_spectrum(size, 0.5, 0.2)  # E |fft2(x)|^2 / (M N)
    g = torch.Generator().manual_seed(3)
    w = torch.randn(n, size, size, generator=g, dtype=torch.float64)
    x = torch.fft.ifft2(torch.fft.fft2(w) * spec.sqrt()).real
    m = op32(x, normalized=False)
    sl = op32.class_slices()
    s11 = m[:, sl["S11"]]
    rows = op32.indices[sl["S11"]]
    tau0 = rows[:, 7] == 0
    expect = torch.stack(
        [(spec * op32.psi_hat[j, t] ** 2).sum() / size**2 for j, t in rows[tau0, 1:3].tolist()]
    )
    est, se = s11[:, tau0].real.mean(0), s11[:, tau0].real.std(0) / math.sqrt(n)
    assert ((est - expect).abs() / se).max() < 5
    assert ((est - expect).abs() / expect).max() < 0.15

    def zscores(v: torch.Tensor) -> torch.Tensor:
        parts = torch.cat([v.real, v.imag], dim=1)
        se = parts.std(0) / math.sqrt(parts.shape[0])
        keep = se > 1e-12 * parts.abs().max()  # exactly-zero parts (e.g. imag of real maps)
        return (parts.mean(0)[keep] / se[keep]).abs()

    cross = torch.cat([m[:, sl[c]] for c in ("S01", "C01", "Cphase")], dim=1)
    assert zscores(cross).max() < 5.5
    ng = op32(_non_gaussian(n, size, seed=4), normalized=False)
    cross_ng = torch.cat([ng[:, sl[c]] for c in ("S01", "C01", "Cphase")], dim=1)
    assert zscores(cross_ng).max() > 20


@pytest.fixture(scope="module")
def phi4_small(tmp_path_factory) -> torch.Tensor:
    cfg = Phi4Config(size=16, beta=0.68, n_samples=128, n_chains=32, n_therm=60, thin=5)
    return generate_phi4(cfg, tmp_path_factory.mktemp("phi4"), progress=False)


def test_synthesis_lowers_loss_and_reproduces_phi4_spectrum_and_histogram(phi4_small) -> None:
    torch.manual_seed(0)
    train, held = phi4_small[:64], phi4_small[64:]
    op = WPHOp(16, J=3, L=4, dn=0)
    n = 32
    y, info = synthesize(op, train, n=n, match="each", steps=40, batch=32, progress=False)
    assert y.shape == (n, 16, 16) and torch.isfinite(y).all()
    assert info.final_loss < 0.02 * info.initial_loss
    # strong-Wolfe line search: every L-BFGS iteration decreases the loss
    h = [info.initial_loss, *info.history]
    assert all(b <= a * (1 + 1e-5) for a, b in zip(h, h[1:], strict=False))
    noise = train.mean() + train.std() * torch.randn(n, 1, 16, 16)
    gauss = gaussian_baseline(train, n)[:, None]
    se, hd = spectrum_error(y[:, None], held), histogram_distance(y[:, None], held)
    # the floor: as many real fields against the same held-out set
    se_data, hd_data = spectrum_error(train[:n], held), histogram_distance(train[:n], held)
    assert se < 2 * se_data + 0.05 and se < 0.3 * spectrum_error(noise, held)
    assert hd < 0.6 * histogram_distance(gauss, held) and hd < hd_data + 0.06


def test_bad_inputs_raise_one_line_config_errors(op32: WPHOp) -> None:
    errors = []
    with pytest.raises(ConfigError, match="smaller than 2\\^J") as e:
        WPHOp(16, J=5)
    errors.append(e)
    with pytest.raises(ConfigError, match="smaller than 2\\^J") as e:
        check_fields(torch.zeros(2, 8, 8), J=4)
    errors.append(e)
    with pytest.raises(ConfigError, match="built for 32x32") as e:
        op32(torch.zeros(2, 32, 40, dtype=torch.float64))
    errors.append(e)
    with pytest.raises(ConfigError, match="square") as e:
        require_square(torch.zeros(2, 32, 40), "the radial spectrum")
    errors.append(e)
    bad = torch.randn(2, 32, 32, dtype=torch.float64)
    bad[1, 3, 4] = float("nan")
    with pytest.raises(ConfigError, match="NaN") as e:
        op32(bad)
    errors.append(e)
    with pytest.raises(ConfigError, match="NaN") as e:
        synthesize(op32, bad, n=1, steps=1, progress=False)
    errors.append(e)
    with pytest.raises(ConfigError, match="match") as e:
        synthesize(op32, bad.nan_to_num(), n=1, match="all", progress=False)
    errors.append(e)
    assert all("\n" not in str(err.value) and len(str(err.value)) < 200 for err in errors)


def test_texture_tiles_split_the_embedded_image() -> None:
    pytest.importorskip("skimage")
    from scatterlab.data.texture import TextureDataModule, load_texture

    dm = TextureDataModule("brick", size=64, downsample=2)
    dm.setup()
    train, test = dm.splits["train"], dm.splits["test"]
    assert train.shape == (8, 1, 64, 64) and test.shape == (8, 1, 64, 64)
    img = load_texture("brick", 2)
    assert abs(float(img.mean())) < 1e-5 and abs(float(img.std()) - 1) < 1e-5
    assert torch.equal(train[0, 0], img[:64, :64]) and torch.equal(test[0, 0], img[:64, 64:128])
    with pytest.raises(ConfigError, match="data.name"):
        TextureDataModule("marble")


def test_wph_phi4_run_writes_the_lattice_metrics(tmp_path) -> None:
    """experiment=wph_phi4 end to end (tiny): metrics.json with the same phi^4 metric names as
    the WSGM runs (energy_error, abs_m_*), samples.pt and the figure."""
    import json

    from tests.conftest import run_cli

    run_cli(
        "train.py",
        "experiment=wph_phi4",
        "data.size=16",
        "data.n_train=8",
        "data.n_test=16",
        "data.n_chains=8",
        "data.n_therm=20",
        "data.batch_size=8",
        "module.n_samples=2",
        "module.n_target=2",
        "module.steps=5",
        "module.synthesis_batch=2",
        "logger=csv",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    e, e_data = m["energy_per_site"], m["energy_per_site_data"]
    assert m["energy_error"] == pytest.approx(abs(e - e_data) / e_data)
    assert m["abs_m_w1"] >= 0 and m["abs_m_mean_data"] > 0 and m["seconds_per_sample"] > 0
    assert torch.load(tmp_path / "run" / "samples.pt").shape == (2, 1, 16, 16)
    assert (tmp_path / "run" / "samples.png").stat().st_size > 0


def _lowpass_by_hand(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """x * phi with phi the periodised spatial Gaussian exp(-|u|^2 / 2 sigma^2) / (2 pi sigma^2)
    (PyWPH's GaussianFilter), by a direct circular convolution sum over the pixels."""
    n = x.shape[-1]
    d = torch.arange(n, dtype=torch.float64)
    d = torch.minimum(d, n - d)[:, None] + n * torch.arange(-2, 3, dtype=torch.float64)
    g1 = torch.exp(-(d**2) / (2 * sigma**2)).sum(-1)  # (n,), periodised over 5 periods
    phi = g1[:, None] * g1[None, :] / (2 * math.pi * sigma**2)
    out = torch.zeros_like(x)
    for du in range(n):
        for dv in range(n):
            out += phi[du, dv] * torch.roll(x, (du, dv), (-2, -1))
    return out


def test_lowpass_class_centres_before_the_modulus_as_pywph() -> None:
    # a field with a mean: PyWPH's L class uses y = x * phi_j - mean(x * phi_j), then |y| and y;
    # the old "modulus" model centred |x * phi_j| instead, and the field's mean entered it
    from scatterlab.wph.filters import SIGMA0

    g = torch.Generator().manual_seed(3)
    w = torch.randn(1, 16, 16, generator=g, dtype=torch.float64)
    x = 0.5 + w + 0.3 * w**2  # mean 0.8, skewed, both signs
    op = WPHOp(16, J=2, L=4, dn=0, classes=["L"], dtype=torch.float64)
    assert op.lowpass_centering == "pywph" and op.lowpass_j == [-1, 0]
    m = op(x, normalized=False)[0]
    key = {(r[1], r[3], r[6]): i for i, r in enumerate(op.indices.tolist())}
    for j in op.lowpass_j:
        y = _lowpass_by_hand(x, SIGMA0 * 2.0**j)
        y = y - y.mean()
        a = y.abs() - y.abs().mean()
        want = {(0, 0): (a * a).mean(), (0, 1): (a * y).mean(), (1, 1): (y * y).mean()}
        for (p1, p2), v in want.items():
            assert m[key[(j, p1, p2)]].real == pytest.approx(float(v), rel=1e-9, abs=1e-12)
    # the mean drops out of the L class (not out of the old model); both normalised ways
    old = WPHOp(16, J=2, L=4, dn=0, classes=["L"], dtype=torch.float64, lowpass_centering="modulus")
    for normalized in (False, True):
        if normalized:
            op.fit_normalization(x)
            old.fit_normalization(x)
        shifted, base = op(x + 4.0, normalized)[0], op(x, normalized)[0]
        assert (shifted - base).abs().max() < 1e-9 * base.abs().max()
        assert (old(x + 4.0, normalized)[0] - old(x, normalized)[0]).abs().max() > 1e-3
    with pytest.raises(ConfigError, match="lowpass_centering"):
        WPHOp(16, J=2, lowpass_centering="centred")  # type: ignore[arg-type]
