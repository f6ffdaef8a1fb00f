"""Diffusion, WSGM cascade and metrics: a tiny WSGM learns a Gaussian field."""

import math

import pytest
import torch

from scatterlab.wsgm import (
    SGM,
    WSGM,
    OUDiffusion,
    gaussian_spectrum,
    histogram_distance,
    radial_average,
    radial_power_spectrum,
    sample_gaussian_field,
    spectrum_error,
    time_grid,
)

pytestmark = pytest.mark.usefixtures("one_thread")


NET = {"base_channels": 8, "channel_mult": [1, 2]}


def _gaussian(n: int, size: int = 16, seed: int = 0) -> torch.Tensor:
    return sample_gaussian_field(n, size, 0.68, 0.1, torch.Generator().manual_seed(seed))


def _train(model, data: torch.Tensor, steps: int, lr: float = 3e-3) -> tuple[float, float]:
    torch.manual_seed(0)
    model.fit_stats(data)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for i in range(steps):
        x = data[(torch.arange(32) + 32 * i) % data.shape[0]]
        loss, _ = model.loss(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    k = steps // 5
    return sum(losses[:k]) / k, sum(losses[-k:]) / k


def test_time_grids() -> None:
    u, q = time_grid(4, 5.0, "uniform"), time_grid(4, 5.0, "quadratic")
    assert torch.allclose(u, torch.tensor([0, 1.25, 2.5, 3.75, 5.0], dtype=torch.float64))
    assert torch.allclose(q, 5.0 * torch.tensor([0, 1, 4, 9, 16], dtype=torch.float64) / 16)


def test_forward_process_marginal() -> None:
    d = OUDiffusion(T=5.0)
    x0 = torch.full((20000, 1), 2.0)
    t = torch.full((20000,), 0.5)
    xt = d.q_sample(x0, t, torch.randn_like(x0))
    assert abs(float(xt.mean()) - 2 * math.exp(-0.5)) < 0.03
    assert abs(float(xt.var()) - (1 - math.exp(-1.0))) < 0.03


def test_sampler_is_exact_for_an_exact_score() -> None:
    """Standard normal data: the optimal eps-prediction is sqrt(1 - e^{-2t}) x_t."""

    class Oracle(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.dummy = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x, t, cond=None):
            return torch.sqrt(1 - torch.exp(-2 * t)).view(-1, 1, 1, 1) * x

    d = OUDiffusion(T=5.0, eps_skip=False)  # the oracle returns the full eps
    x = d.sample(
        Oracle(), (4000, 1, 4, 4), 50, "quadratic", generator=torch.Generator().manual_seed(0)
    )
    assert abs(float(x.var()) - 1.0) < 0.05
    assert abs(float(x.mean())) < 0.03


def test_spectrum_metric_on_exact_gaussian_fields() -> None:
    x = _gaussian(512, size=16, seed=1)
    s = radial_power_spectrum(x)
    assert s.shape == (8,)
    theory = radial_average(gaussian_spectrum(16, 0.68, 0.1))
    # >= 4 modes per bin, 512 samples: relative std <= 1/sqrt(1024) ~ 3%
    assert float((s / theory - 1).abs().max()) < 0.15
    assert spectrum_error(x, _gaussian(512, 16, seed=2)) < 0.1
    assert spectrum_error(2 * x, x) == pytest.approx(3.0, rel=1e-6)
    assert histogram_distance(x, _gaussian(512, 16, seed=2)) < 0.05
    assert histogram_distance(3 * x, x) > 0.3


def _eval_loss(model, data: torch.Tensor) -> float:
    torch.manual_seed(123)  # same t and noise before and after training
    with torch.no_grad():
        return float(model.loss(data)[0])


@pytest.mark.parametrize("kind", ["wsgm", "sgm"])
def test_tiny_model_learns_a_gaussian_field(kind: str) -> None:
    torch.manual_seed(0)
    data = sample_gaussian_field(512, 16, 0.68, 0.02, torch.Generator().manual_seed(0))
    held_out = sample_gaussian_field(256, 16, 0.68, 0.02, torch.Generator().manual_seed(1))
    if kind == "wsgm":
        model = WSGM(size=16, channels=1, levels=1, wavelet="db2", net=NET)
    else:
        model = SGM(size=16, channels=1, net=NET)
    model.fit_stats(data)
    before = _eval_loss(model, held_out)
    _train(model, data, steps=120)
    after = _eval_loss(model, held_out)
    # same t and noise before and after: any decrease is learning, not noise
    assert after < 0.98 * before, (before, after)
    samples = model.sample(256, 32, grid="quadratic", seed=0)
    assert samples.shape == (256, 1, 16, 16)
    assert torch.isfinite(samples).all()
    ratio = float(samples.std() / data.std())
    assert 0.8 < ratio < 1.25, ratio
    assert abs(float(samples.mean())) < 0.25 * float(data.std())


def test_sampling_is_reproducible_under_a_seed() -> None:
    torch.manual_seed(0)
    model = WSGM(
        size=16, channels=1, levels=2, wavelet="haar", net={"base_channels": 8, "channel_mult": [1]}
    )
    model.fit_stats(_gaussian(64, 16))
    a = model.sample(4, 6, seed=123)
    b = model.sample(4, 6, seed=123)
    c = model.sample(4, 6, seed=124)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(model.sample(2, 3, generator=g1), model.sample(2, 3, generator=g2))


def test_wsgm_standardizes_each_scale() -> None:
    data = _gaussian(256, 16)
    model = WSGM(size=16, levels=2, net={"base_channels": 8, "channel_mult": [1]})
    model.fit_stats(data)
    lows, details = model._decompose(data)
    for j in range(2):
        z = model.detail_norms[j](details[j])
        assert torch.allclose(z.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-4)
        assert torch.allclose(model.low_norms[j](lows[j]).std(), torch.tensor(1.0), atol=1e-4)


def test_exact_score_wsgm_and_sgm_reproduce_a_gaussian_spectrum() -> None:
    """The oracle scores (used by the wsgm_gaussian_oracle study) are right: with enough
    steps both samplers reproduce the exact spectrum; with 2 steps they do not."""
    from scatterlab.wsgm.oracle import oracle_sgm, oracle_wsgm

    spec = gaussian_spectrum(16, 0.68, 0.05)
    theory = radial_average(spec)
    for model in (oracle_wsgm(spec, 2), oracle_sgm(spec)):
        x = model.sample(512, 64, grid="quadratic", seed=0)
        err = float(((radial_power_spectrum(x) / theory - 1) ** 2).mean().sqrt())
        assert err < 0.05, err
        x = model.sample(512, 2, grid="quadratic", seed=0)
        assert float(((radial_power_spectrum(x) / theory - 1) ** 2).mean().sqrt()) > 0.3


def test_pixel_detail_net_matches_at_init_and_is_shift_covariant() -> None:
    """detail_net=pixel: zero-initialised outputs give the same samples as the wavelet-channel
    network; with random weights, shifting the field by 2 pixels (1 Haar coefficient) shifts
    the predicted detail noise by 1 coefficient (circular U-Net on the pixel field)."""
    from scatterlab.wsgm.diffusion import PixelDetailNet

    data = _gaussian(64)
    models = {}
    for kind in ("wavelet", "pixel"):
        torch.manual_seed(0)
        models[kind] = WSGM(size=16, levels=2, net=NET, detail_net=kind)
        models[kind].fit_stats(data)
    a = models["wavelet"].sample(8, 4, grid="quadratic", seed=3)
    b = models["pixel"].sample(8, 4, grid="quadratic", seed=3)
    assert torch.allclose(a, b, atol=1e-5)
    net = models["pixel"].nets[1]
    assert isinstance(net, PixelDetailNet) and net.unet.in_channels == 2
    torch.manual_seed(1)
    with torch.no_grad():
        for p in net.unet.parameters():
            p.add_(0.1 * torch.randn_like(p))
    z, cond, t = torch.randn(2, 3, 8, 8), torch.randn(2, 1, 8, 8), torch.full((2,), 0.3)
    out = net(z, t, cond)
    shifted = net(torch.roll(z, (1, 1), (-2, -1)), t, torch.roll(cond, (1, 1), (-2, -1)))
    assert out.abs().max() > 1e-2
    assert torch.allclose(shifted, torch.roll(out, (1, 1), (-2, -1)), atol=1e-4)
    with pytest.raises(Exception, match="detail_net"):
        WSGM(size=16, levels=1, detail_net="fourier")
