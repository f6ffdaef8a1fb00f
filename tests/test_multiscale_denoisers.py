"""Local denoisers (issue 25, claim 2): exact receptive fields, bias-free homogeneity, the
orthogonal band split of the error, the conditional model's advantage where the details are a
function of the coarse field, and the experiment's bad input (one error line, exit code 2)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from scatterlab.errors import ConfigError
from scatterlab.multiscale import denoisers as dn
from tests.conftest import read_metrics, run_cli


@pytest.mark.parametrize("rf", [5, 9, 13, 23, 43])
@pytest.mark.parametrize("c_in,c_out", [(1, 1), (4, 3)])
def test_receptive_field_is_exactly_the_rf_window(rf, c_in, c_out, one_thread):
    torch.manual_seed(rf)
    net = dn.LocalDenoiser(rf, c_in, c_out, width=8, depth=21)
    size = rf + 4
    mask = dn.rf_window(net, c_in, size, draws=16)
    expected = torch.zeros(size, size, dtype=torch.bool)
    lo = size // 2 - rf // 2
    expected[lo : lo + rf, lo : lo + rf] = True
    assert torch.equal(mask, expected), f"rf={rf}: window {int(mask.sum())} pixels, not {rf}^2"
    assert dn.measured_rf(net, c_in, size) == rf
    assert net.depth == 21 and dn.kernel_sizes(rf, 21).count(3) == (rf - 1) // 2


def test_multiscale_networks_have_their_configured_receptive_fields(one_thread):
    x = torch.randn(8, 1, 16, 16)
    model = dn.train_multiscale(x, rf=5, levels=2, steps=1, batch=2, sigma_max=1.0, width=4)
    assert [dn.measured_rf(n, 4, 9) for n in model.nets] == [5, 5]
    assert dn.measured_rf(model.low, 1, 11) == dn.coarse_rf(4) == 5  # covers the 4 x 4 field


@pytest.mark.parametrize("rf", [4, 2, 1, 0])
def test_even_or_tiny_receptive_field_is_refused(rf):
    with pytest.raises(ConfigError, match="odd"):
        dn.LocalDenoiser(rf, 1, 1)


def test_depth_is_at_least_what_the_receptive_field_needs():
    assert dn.kernel_sizes(13, 2) == [3] * 6
    assert dn.kernel_sizes(5, 6) == [3, 1, 1, 1, 1, 3]
    assert dn.kernel_sizes(9, 21).count(3) == 4 and len(dn.kernel_sizes(43, 6)) == 21


def test_bias_free_denoiser_is_homogeneous(one_thread):
    torch.manual_seed(0)
    net = dn.LocalDenoiser(9, 1, 1, width=6, depth=6).double()
    torch.nn.init.normal_(net.last.weight)  # the last layer starts at zero
    net.train()
    net(torch.randn(4, 1, 12, 12, dtype=torch.float64))  # move the running sd off 1
    net.eval()
    y = torch.randn(2, 1, 12, 12, dtype=torch.float64)
    assert net(y).abs().max() > 0.1
    for a in (0.1, 3.0):
        torch.testing.assert_close(net(a * y), a * net(y), rtol=1e-10, atol=1e-12)


def test_band_errors_sum_to_the_pixel_error():
    x, est = torch.randn(3, 1, 16, 16), torch.randn(3, 1, 16, 16)
    e = dn.band_errors(est, x, 2)
    assert set(e) == {"low", "j=1", "j=2", "total"}
    assert abs(e["low"] + e["j=1"] + e["j=2"] - e["total"]) < 1e-10
    assert abs(e["total"] - float((est.double() - x.double()).pow(2).mean())) < 1e-12


def test_conditional_beats_flat_where_details_are_a_function_of_the_coarse_field(one_thread):
    """Fields constant on 2 x 2 blocks: their Haar details are 0 given the coarse field, so the
    conditional denoiser can remove all the detail noise (a linear map), while a flat one of the
    same receptive field does not know the block alignment."""
    g = torch.Generator().manual_seed(0)
    coarse = torch.randn(256, 1, 8, 8, generator=g)
    x = coarse.repeat_interleave(2, -1).repeat_interleave(2, -2)
    train, test = x[:192], x[192:]
    kw = dict(rf=5, steps=150, batch=16, sigma_max=1.0, width=16, depth=2, lr=1e-2)
    flat = dn.train_flat(train, augment=False, **kw)
    cond = dn.train_multiscale(train, levels=1, augment=False, **kw)
    sigma = 1.0
    y = dn.noisy_copy(test, sigma)
    with torch.no_grad():
        flat_details = dn.band_errors(y - flat(y), test, 1)["j=1"]
    cond_details = dn.oracle_detail_mse(cond, test, sigma)
    noise = 0.75 * sigma**2  # the detail bands hold 3/4 of the noise
    assert cond_details < 0.1 * noise, cond_details  # measured 0.03 of the noise
    assert flat_details > 0.2 * noise, flat_details  # measured 0.30
    assert cond_details < 0.25 * flat_details


def test_experiment_runs_and_reports_its_receptive_field(tmp_path):
    run_cli(
        "train.py",
        "experiment=local_denoisers",
        "module.data=digits",
        "module.kind=conditional",
        "module.rf=9",
        "module.size=16",
        "module.levels=1",
        "module.depth=4",
        "module.steps=3",
        "module.n_train=64",
        "module.n_test=16",
        "module.sigmas=[0.5,1]",
        "module.n_samples=3",
        "module.sample_max_steps=20",
        "logger=csv",
        f"hydra.run.dir={tmp_path}",
        timeout=300,
    )
    m = read_metrics(tmp_path)
    assert m["status"] == "ok"
    assert m["rf_measured"] == 9 and m["rf_measured_low"] == 9  # 8 x 8 coarsest: 9
    assert set(m) >= {"psnr/sigma=0.5", "psnr/sigma=1", "mse_given_clean_coarse/sigma=1/j=1"}
    assert abs(sum(m[f"mse/sigma=1/{b}"] for b in ("low", "j=1")) - m["mse/sigma=1/total"]) < 1e-6
    assert (tmp_path / "local_denoisers.json").exists()
    assert (tmp_path / "local_denoisers_examples.png").exists()
    assert (tmp_path / "local_denoisers_samples.png").exists()
    assert torch.load(tmp_path / "samples.pt").shape == (3, 1, 16, 16)
    for k in ("spectrum_error", "histogram", "spectrum_error_floor", "histogram_floor"):
        assert 0 <= m[f"sample/{k}"] < float("inf"), k
    assert 0 < m["sample/steps/low"] <= 20 and 0 < m["sample/steps/j=1"] <= 20


@pytest.mark.parametrize(
    "override,word",
    [
        ("module.rf=8", "rf"),
        ("module.wavelet=nope", "wavelet"),
        ("module.size=20", "levels"),  # 20 is not divisible by 2^3 (levels=3)
        ("module.data=cifar_grey", "data_root"),  # optional data, never downloaded
        ("module.sigma_min=3", "sigma_min"),  # above sigma_max = 2
    ],
)
def test_bad_input_is_one_line_and_exit_2(override, word):
    extra = ["module.levels=3"] if "size" in override else []
    proc = run_cli("train.py", "experiment=local_denoisers", override, *extra, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(err) == 1 and word in err[0], err


def test_cifar_grey_without_image_folders_stops_before_lightning(tmp_path):
    """A data_root without train/ and test/ folders is refused when the module is built: one
    error line, exit 2, and nothing from Lightning on stdout."""
    proc = run_cli(
        "train.py",
        "experiment=local_denoisers",
        "module.data=cifar_grey",
        f"module.data_root={tmp_path}",
        f"hydra.run.dir={tmp_path / 'run'}",
        check=False,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(err) == 1 and "has no train/<class>/" in err[0], err
    assert "Testing" not in proc.stdout


def _gaussian_denoiser(var: Tensor, mean: float = 0.0):
    """The blind MMSE denoiser of N(mean, diag(var)): sigma^2 estimated from the input's
    energy (mean abs(y - mean)^2 = mean(var) + sigma^2 in high dimension), then the Wiener
    gain."""

    def denoise(y: Tensor) -> Tensor:
        s2 = ((y - mean).pow(2).flatten(1).mean(1) - var.mean()).clamp_min(1e-8).view(-1, 1)
        return mean + (y - mean) * var / (var + s2)

    return denoise


def test_stochastic_ascent_samples_the_prior_of_an_exact_denoiser(one_thread):
    """With the exact (blind) denoiser of an isotropic Gaussian prior the ascent's output has
    the prior's mean and variance; with two groups of coordinates of variances 1 and 0.1 it
    keeps their ratio roughly (the algorithm assumes white residual noise, which a
    Wiener gain that differs per group breaks: measured 0.13 instead of 0.1)."""
    g = torch.Generator().manual_seed(0)
    iso = torch.full((4096,), 0.25, dtype=torch.float64)
    y0 = 0.5 + 2.0 * torch.randn(16, 4096, generator=g, dtype=torch.float64)
    x, steps, sigma = dn.stochastic_ascent(_gaussian_denoiser(iso, 0.5), y0, generator=g)
    assert (sigma < 0.01).all() and (steps < 1000).all()  # every field reached sigma_end
    assert abs(x.mean().item() - 0.5) < 0.01  # 65,536 values: sampling error 0.002
    assert abs(x.var().item() / 0.25 - 1) < 0.03, x.var().item()  # measured 0.99
    # no ascent (the initial noise denoised once) would give var^2 / (var + 4) = 0.015
    var = torch.cat([torch.ones(2048), torch.full((2048,), 0.1)]).double()
    y0 = 2.0 * torch.randn(16, 4096, generator=g, dtype=torch.float64)
    x, _, _ = dn.stochastic_ascent(_gaussian_denoiser(var), y0, h0=0.02, generator=g)
    v_hi, v_lo = x[:, :2048].var().item(), x[:, 2048:].var().item()
    assert abs(v_hi - 1.0) < 0.06, v_hi
    assert 0.08 < v_lo / v_hi < 0.16, (v_hi, v_lo)


def test_ancestral_sampler_with_a_noise_level_aware_denoiser_samples_the_prior(one_thread):
    """The ancestral steps with the exact (non-blind) denoiser of N(0, diag(var)) keep both
    groups' variances (1 and 0.1) where the blind ascent bends their ratio."""
    var = torch.cat([torch.ones(2048), torch.full((2048,), 0.1)]).double()
    g = torch.Generator().manual_seed(0)
    y0 = (var + 4).sqrt() * torch.randn(16, 4096, generator=g, dtype=torch.float64)
    sigmas = dn.geometric_sigmas(2.0, 0.01, 200)
    assert len(sigmas) == 201 and abs(sigmas[-1] - 0.01) < 1e-12
    x, steps, last = dn.ancestral(lambda y, s: y * var / (var + s**2), y0, sigmas, g)
    assert (steps == 200).all() and torch.allclose(last, torch.full((16,), 0.01))
    v_hi, v_lo = x[:, :2048].var().item(), x[:, 2048:].var().item()
    assert abs(v_hi - 1.0) < 0.05, v_hi  # 32,768 values: sampling error about 1%
    assert abs(v_lo / 0.1 - 1) < 0.05, v_lo


def test_noise_level_input_keeps_the_window_and_joint_homogeneity(one_thread):
    torch.manual_seed(0)
    net = dn.LocalDenoiser(9, 4, 3, width=6, depth=6, noise_input=True).double()
    assert dn.measured_rf(net, 4, 13) == 9  # a constant channel does not widen the window
    torch.nn.init.normal_(net.last.weight)
    net.eval()
    y = torch.randn(2, 4, 12, 12, dtype=torch.float64)
    sig = torch.tensor([0.3, 1.5], dtype=torch.float64)
    torch.testing.assert_close(net(2.5 * y, 2.5 * sig), 2.5 * net(y, sig), rtol=1e-10, atol=1e-12)
    assert not torch.allclose(net(y, sig), net(y, 2 * sig))  # it does use the level
    with pytest.raises(ValueError, match="noise level"):
        net(y)


def test_stochastic_ascent_stops_when_the_residual_grows(one_thread):
    """A denoiser that amplifies (y -> 1.1 y) makes the residual grow: the field stops at
    twice its smallest noise estimate instead of diverging for max_steps."""
    y0 = torch.randn(4, 64, generator=torch.Generator().manual_seed(0))
    x, steps, sigma = dn.stochastic_ascent(lambda y: 1.1 * y, y0, max_steps=1000)
    assert (steps < 100).all(), steps
    assert torch.isfinite(x).all() and x.abs().max() < 1e3


def test_data_sets_have_their_own_sizes_and_a_coarsest_field_of_8(one_thread):
    from scatterlab.modules.multiscale_denoisers import LocalDenoisersModule

    phi4 = LocalDenoisersModule(data="phi4")
    digits = LocalDenoisersModule(data="digits")
    assert (phi4.size, phi4.levels, phi4.n_train, phi4.n_test) == (64, 3, 384, 128)
    assert (digits.size, digits.levels, digits.n_train, digits.n_test) == (32, 2, 1500, 297)
    assert LocalDenoisersModule(data="digits", size=16).levels == 1


def test_cifar_grey_fields_read_from_image_folders(tmp_path):
    """Grey levels (PIL's L: 0.299 R + 0.587 G + 0.114 B) of the images under data_root, train
    images first, in [0, 1]; a missing split is one DataError line."""
    import numpy as np
    from PIL import Image

    from scatterlab.errors import DataError
    from scatterlab.modules.multiscale_denoisers import cifar_grey_fields

    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 3)):
        for c in ("cat", "dog"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(n):
                a = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(a).save(tmp_path / split / c / f"{i}.png")
    x = cifar_grey_fields(str(tmp_path), 5, 4)
    assert x.shape == (9, 1, 32, 32) and x.min() >= 0 and x.max() <= 1
    grey = [
        np.asarray(Image.open(f).convert("L"), dtype=np.float32) / 255
        for f in sorted((tmp_path / "train").rglob("*.png"))
    ]
    assert any(np.allclose(x[0, 0].numpy(), gr) for gr in grey)  # a training image, in grey
    with pytest.raises(DataError, match="n_train"):
        cifar_grey_fields(str(tmp_path), 50, 4)
    with pytest.raises(DataError, match="no train"):
        cifar_grey_fields(str(tmp_path / "train"), 2, 2)
