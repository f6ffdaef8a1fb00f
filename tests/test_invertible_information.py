"""The IB curve (known answers, monotonicity, endpoints) and the gradient statistics of the
drift/diffusion callback against a hand computation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from scatterlab.invertible.gradients import GradientMoments, crossing_epoch, layer_groups
from scatterlab.invertible.ib import (
    deterministic_bound,
    ib_curve,
    infoplane_distribution,
    mutual_information,
)

BETAS = torch.logspace(-1, 2, 25)


def test_ib_curve_of_y_equal_x_is_the_diagonal() -> None:
    """Y = X (8 symbols): every encoder has I(T;Y) = I(X;T); large beta reaches H(X) = 3 bits."""
    n = 8
    c = ib_curve(torch.full((n,), 1 / n), torch.eye(n), BETAS, n_clusters=n)
    for a, b in zip(c["ixt"], c["ity"], strict=True):
        assert abs(a - b) < 1e-9
    assert c["ixt"][0] < 1e-6 and c["ity"][-1] == pytest.approx(3.0, abs=1e-6)


def test_ib_curve_of_independent_variables_is_zero() -> None:
    p_y_x = torch.tensor([[0.3, 0.7]]).repeat(6, 1)
    c = ib_curve(torch.full((6,), 1 / 6), p_y_x, BETAS)
    assert max(abs(v) for v in c["ity"]) < 1e-12


def test_ib_curve_soft_labels_monotone_with_endpoints() -> None:
    """A noisy 4-symbol channel: monotone in beta, I(X;T) = I(T;Y) = 0 at small beta, I(T;Y)
    -> I(X;Y) at large beta, and never above the data-processing bounds."""
    p_x = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    p_y_x = torch.tensor([[0.9, 0.1], [0.7, 0.3], [0.4, 0.6], [0.05, 0.95]], dtype=torch.float64)
    c = ib_curve(p_x, p_y_x, torch.logspace(-1, 3, 15), n_clusters=4, max_iter=100, tol=1e-7)
    ixy = mutual_information(p_x, p_y_x)
    assert c["ixt"][0] < 1e-6 and c["ity"][0] < 1e-6
    assert c["ity"][-1] == pytest.approx(ixy, abs=1e-4)
    for k in range(1, len(c["ixt"])):
        assert c["ixt"][k] >= c["ixt"][k - 1] - 1e-7
        assert c["ity"][k] >= c["ity"][k - 1] - 1e-7
    for a, b in zip(c["ixt"], c["ity"], strict=True):
        assert b <= min(a, ixy) + 1e-7


def test_ib_curve_of_the_12_bit_task_reaches_the_deterministic_bound() -> None:
    """Deterministic labels: the corners of min(I(X;T), H(Y)), at H(Y) = 0.99916 bit."""
    p_x, p_y_x = infoplane_distribution()
    h_y = mutual_information(p_x, p_y_x)
    assert h_y == pytest.approx(0.99916, abs=1e-4)  # 51.7% positives, as the authors' file
    c = ib_curve(p_x, p_y_x, BETAS, n_clusters=4)
    assert c["ixt"][0] < 1e-6 and c["ity"][-1] == pytest.approx(h_y, abs=1e-6)
    bound = deterministic_bound(torch.tensor(c["ixt"]), h_y)
    assert torch.all(torch.tensor(c["ity"]) <= bound + 1e-7)


def test_gradient_moments_match_a_hand_computation() -> None:
    """A 2 -> 1 linear model, three mini-batches: mean and std of the flattened gradients."""
    net = nn.Sequential(nn.Linear(2, 1))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, -2.0]]))
        net[0].bias.fill_(0.5)
    batches = [
        (torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([1.0, 0.0])),
        (torch.tensor([[2.0, 1.0]]), torch.tensor([0.0])),
        (torch.tensor([[0.0, 0.0], [1.0, 1.0], [3.0, -1.0]]), torch.tensor([1.0, 1.0, 2.0])),
    ]
    groups = layer_groups(net)
    assert list(groups) == ["0"]
    moments, grads = GradientMoments(), []
    for x, y in batches:
        net.zero_grad()
        ((net(x).squeeze(1) - y) ** 2).mean().backward()
        moments.update(groups)
        # by hand: d/dw mean (w.x + b - y)^2 = 2 mean (r x), d/db = 2 mean r
        r = x @ torch.tensor([1.0, -2.0]) + 0.5 - y
        grads.append(torch.cat([2 * (r[:, None] * x).mean(0), 2 * r.mean()[None]]))
    g = torch.stack(grads).double()
    mean = g.mean(0).norm().item()
    std = math.sqrt(((g - g.mean(0)) ** 2).sum(1).mean().item())
    s = moments.stats(groups)["0"]
    w = math.sqrt(1 + 4 + 0.25)
    assert s["mean"] == pytest.approx(mean, rel=1e-6)
    assert s["std"] == pytest.approx(std, rel=1e-6)
    assert s["snr"] == pytest.approx(mean / std, rel=1e-6)
    assert s["mean_w"] == pytest.approx(mean / w, rel=1e-6)
    assert s["batches"] == 3


def test_crossing_epoch_is_where_snr_stays_below_one() -> None:
    assert crossing_epoch([1, 2, 3, 4, 5], [3.0, 0.5, 2.0, 0.8, 0.2]) == 4
    assert crossing_epoch([1, 2], [2.0, 1.5]) is None


def test_generator_embedding_is_kymatio_scattering_whitened(one_thread) -> None:
    """Phi's scattering = kymatio's Scattering2D for the same J; the fitted embedding has mean 0
    and identity covariance on its training images."""
    from kymatio.torch import Scattering2D

    from scatterlab.invertible.generator import Generator, ScatteringEmbedding, psnr

    torch.manual_seed(0)
    x = torch.rand(200, 1, 8, 8)
    emb = ScatteringEmbedding(J=2, shape=8, channels=1, dim=32)
    assert emb.n_scat == 81 * 4
    ref = Scattering2D(J=2, shape=(8, 8), L=8, max_order=2)(x).flatten(1)
    assert torch.equal(emb.scatter(x), ref)
    emb.fit(x)
    z = emb(x).double()
    assert z.mean(0).abs().max() < 1e-4
    cov = z.T @ z / (len(z) - 1)
    assert torch.allclose(cov, torch.eye(32, dtype=torch.float64), atol=1e-3)
    assert Generator(32, 1, 8)(z[:4].float()).shape == (4, 1, 8, 8)
    # fewer images than coefficients: the Gram-matrix route, the same whitened subspace
    few = ScatteringEmbedding(J=2, shape=8, channels=1, dim=32)
    few.fit(x[:100])  # 100 images < 324 coefficients
    zf = few(x[:100]).double()
    assert torch.allclose(zf.T @ zf / 99, torch.eye(32, dtype=torch.float64), atol=1e-6)
    s = few.scatter(x[:100]).double()
    cov = (s - s.mean(0)).T @ (s - s.mean(0)) / 99
    top = torch.linalg.eigvalsh(cov).flip(0)[:32]
    assert torch.allclose(few.eigenvalues.double(), top, rtol=1e-4)
    assert psnr(torch.zeros(2, 2), torch.full((2, 2), 0.1)) == pytest.approx(20.0)


def test_generator_bad_scale_is_a_config_error() -> None:
    from functools import partial

    from scatterlab.errors import ConfigError
    from scatterlab.modules.invertible import ScatteringGeneratorModule

    with pytest.raises(ConfigError, match="divisible by 2"):
        ScatteringGeneratorModule(partial(torch.optim.Adam), channels=1, size=8, J=4)
    with pytest.raises(ConfigError, match="exceeds"):
        ScatteringGeneratorModule(partial(torch.optim.Adam), channels=1, size=8, J=2, dim=1000)


def test_gradient_callback_in_a_lightning_fit(tmp_path, one_thread) -> None:
    """GradientPhasesCallback on a 2-epoch fit of a small i-RevNet: one record per epoch and
    layer, std across the 5 mini-batches > 0, files written."""
    import json
    from functools import partial

    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    from scatterlab.invertible import IRevNet
    from scatterlab.invertible.gradients import GradientPhasesCallback
    from scatterlab.modules.classification import ClassificationModule

    torch.manual_seed(0)
    net = IRevNet(10, 1, 8, [1, 1, 1], [1, 2, 2], [8, 32, 128])
    module = ClassificationModule(net, partial(torch.optim.SGD, lr=0.05), num_classes=10)
    data = TensorDataset(torch.randn(320, 1, 8, 8), torch.randint(0, 10, (320,)))
    callback = GradientPhasesCallback(output_dir=str(tmp_path))
    trainer = L.Trainer(
        max_epochs=2,
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
    )
    trainer.fit(module, train_dataloaders=DataLoader(data, batch_size=64))
    doc = json.loads((tmp_path / "gradients.json").read_text())
    assert [h["epoch"] for h in doc["history"]] == [1, 2]
    layer = doc["history"][-1]["layers"]["stack.2.F.layers.9"]
    assert layer["batches"] == 5 and layer["std"] > 0 and layer["mean"] > 0
    assert "stack.0.F.layers.0" in doc["history"][0]["layers"]  # the dead first block too
    assert (tmp_path / "gradients.png").exists()
