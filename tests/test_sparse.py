"""Sparse scattering classifiers: tight-frame thresholding (ICLR 2021), homotopy ISTC (2020)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from torch import nn

import scatterlab.cluster  # noqa: F401 - registers the sl_* resolvers of the launcher configs
from scatterlab.errors import ConfigError
from scatterlab.models import count_parameters
from scatterlab.models.sparse_scattering import (
    ISTC,
    SparseScattering,
    homotopy_thresholds,
    ista,
    lipschitz_step,
    sparse_scattering_parameter_count,
)
from scatterlab.models.tight_frame import (
    TightFrame,
    TightFrameScattering,
    harmonic_tight_frame,
    parseval_step,
    tight_frame_parameter_count,
)
from scatterlab.modules import ClassificationModule
from tests.conftest import ROOT

pytestmark = pytest.mark.usefixtures("one_thread")


def unit_dictionary(d: int, k: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(d, k, generator=g, dtype=torch.float64), dim=0)


# ---------------------------------------------------------------- ISTA / homotopy


@pytest.mark.parametrize("positive", [True, False])
@pytest.mark.parametrize("seed", [0, 1])
def test_ista_with_fixed_threshold_equals_sklearn_lasso(positive: bool, seed: int) -> None:
    from sklearn.linear_model import Lasso

    d, k, lam = 30, 50, 0.3  # overcomplete: the Lasso solution is sparse, not a least squares
    D = unit_dictionary(d, k, seed)
    x = torch.randn(8, d, generator=torch.Generator().manual_seed(seed + 10), dtype=torch.float64)
    z = ista(x, D, [lam] * 4000, step=lipschitz_step(D), positive=positive)
    # sklearn minimizes 1/(2 n_samples) ||y - X w||^2 + alpha ||w||_1 with n_samples = d
    lasso = Lasso(alpha=lam / d, fit_intercept=False, positive=positive, tol=1e-12, max_iter=10**5)
    coef = lasso.fit(D.numpy(), x.numpy().T).coef_  # (8, k)
    assert np.abs(z.numpy() - coef).max() < 1e-4
    support = (z != 0).sum(1)
    assert (support > 0).all() and (support < d).all()  # a non-trivial sparse solution
    if positive:
        assert (z >= 0).all()


def test_ista_code_is_zero_exactly_above_lambda_max() -> None:
    D = unit_dictionary(20, 40, 3)
    x = torch.randn(5, 20, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    lam_max = (x @ D).abs().amax(1, keepdim=True)
    step = lipschitz_step(D)
    assert (ista(x, D, [lam_max * 1.001] * 200, step, positive=False) == 0).all()
    assert (ista(x, D, [lam_max * 0.9] * 200, step, positive=False) != 0).any(1).all()


def test_homotopy_thresholds_decrease_geometrically_to_lambda_star() -> None:
    lams = homotopy_thresholds(torch.tensor([[2.0], [8.0]]), torch.tensor(0.125), 4)
    ratios = torch.stack([b / a for a, b in zip(lams[:-1], lams[1:], strict=True)])
    expected = torch.tensor([[0.125 / 2], [0.125 / 8]]) ** 0.25
    assert torch.allclose(ratios, expected.expand_as(ratios))
    assert torch.allclose(lams[-1], torch.tensor(0.125))


def synthetic_codes(n: int, k: int, s: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.zeros(n, k, dtype=torch.float64)
    for i in range(n):
        z[i, torch.randperm(k, generator=g)[:s]] = 1 + torch.rand(s, generator=g, dtype=z.dtype)
    return z


def test_homotopy_ista_recovers_the_support_of_a_sparse_code() -> None:
    d, k, s = 128, 256, 4
    D = unit_dictionary(d, k, 5)
    coherence = (D.T @ D - torch.eye(k, dtype=D.dtype)).abs().max()
    assert coherence * s < 2  # incoherent enough for this sparsity
    z0 = synthetic_codes(64, k, s, 6)
    istc = ISTC(d, k, n_iterations=50, lambda_star=0.01, lambda_star_min=0.01).double()
    with torch.no_grad():
        istc.weight.copy_(D)
    z = istc.encode(z0 @ D.T).detach()
    assert ((z > 1e-3) == (z0 > 0)).all()
    # the Lasso bias at lambda* = 0.01 on a near-orthogonal support
    assert (z - z0).abs().max() < 0.05
    # Without the homotopy (one step straight to lambda*) the support is far too large.
    one = ISTC(d, k, n_iterations=1, lambda_star=0.01, lambda_star_min=0.01).double()
    with torch.no_grad():
        one.weight.copy_(D)
    assert ((one.encode(z0 @ D.T) > 1e-3) != (z0 > 0)).any(1).float().mean() > 0.9


def test_gradients_through_unrolled_iterations_are_finite() -> None:
    torch.manual_seed(0)
    istc = ISTC(16, 64, n_iterations=12, lambda_star=0.05)
    x = F.normalize(torch.randn(3, 16, 5, 5), dim=1).requires_grad_()
    z = istc(x)
    assert z.shape == (3, 64, 5, 5) and (z >= 0).all() and (z == 0).float().mean() > 0.5
    (z.square().sum() + z.sum()).backward()
    for g in (istc.weight.grad, istc.log_lambda_star.grad, x.grad):
        assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_lambda_star_is_kept_above_its_minimum() -> None:
    istc = ISTC(8, 16, lambda_star=0.1, lambda_star_min=0.05)
    with torch.no_grad():
        istc.log_lambda_star.fill_(math.log(0.01))
    istc.after_optimizer_step()
    assert istc.lambda_star.item() == pytest.approx(0.05)


# ---------------------------------------------------------------- tight frames


def test_harmonic_init_is_an_equal_norm_tight_frame() -> None:
    for rows, cols in [(40, 16), (33, 7)]:
        f = harmonic_tight_frame(rows, cols).double()
        assert torch.allclose(f.T @ f, torch.eye(cols, dtype=f.dtype), atol=1e-6)
        assert torch.allclose(f.norm(dim=1), torch.full((rows,), math.sqrt(cols / rows)).double())


@pytest.mark.parametrize("shape", [(48, 12), (12, 48)])
def test_parseval_step_drives_the_gram_matrix_to_the_identity(shape: tuple[int, int]) -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(*shape, generator=g, dtype=torch.float64) / math.sqrt(max(shape))
    small = min(shape)

    def gap(a: torch.Tensor) -> float:
        gram = a.T @ a if shape[0] >= shape[1] else a @ a.T
        return (gram - torch.eye(small, dtype=a.dtype)).norm().item()

    start = gap(a)
    assert start > 0.5
    b = a.clone()
    for _ in range(50):  # the paper's beta: a slow, monotone contraction
        before = gap(b)
        parseval_step(b, 5e-4)
        assert gap(b) < before
    for _ in range(400):  # a larger beta, to convergence
        parseval_step(a, 0.05)
    assert gap(a) < 1e-8


def test_block_with_identity_rho_is_the_identity() -> None:
    torch.manual_seed(0)
    frame = TightFrame(16, 40, "identity")
    x = torch.randn(2, 16, 3, 3)
    assert torch.allclose(frame(x), x, atol=1e-5)
    # A frame pushed off tightness is no longer the identity; the Parseval step restores it.
    with torch.no_grad():
        frame.weight.add_(0.05 * torch.randn_like(frame.weight))
    frame.normalize_atoms = False
    assert (frame(x) - x).abs().max() > 1e-2
    for _ in range(300):
        parseval_step(frame.weight, 0.05)
    assert torch.allclose(frame(x), x, atol=1e-4)


def test_thresholds_collapse_small_frame_coefficients() -> None:
    z = torch.tensor([-0.3, -0.05, 0.0, 0.05, 0.3])
    soft = TightFrame(2, 4, "soft_threshold", threshold=0.1)
    relu = TightFrame(2, 4, "relu", threshold=0.1)
    assert torch.allclose(soft.rho(z), torch.tensor([-0.2, 0, 0, 0, 0.2]))
    assert torch.allclose(relu.rho(z), torch.tensor([0, 0, 0, 0, 0.2]))


def tiny_tight_frame(**kw) -> TightFrameScattering:
    args = dict(input_size=16, widths=[8, 16], frame_widths=[32, 48], L=4) | kw
    return TightFrameScattering(**args)


def test_module_groups_and_parseval_hook() -> None:
    """P and F get no weight decay; the module runs the net's Parseval step after each step."""
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    net = tiny_tight_frame(parseval_beta=0.05)
    sgd = lambda params: torch.optim.SGD(params, lr=0.0, weight_decay=0.1)  # noqa: E731
    module = ClassificationModule(net, sgd)
    groups = module.parameter_groups()
    names = {id(p): n for n, p in net.named_parameters()}
    no_decay = {names[id(p)] for p in groups[1]["params"]}
    assert groups[1]["weight_decay"] == 0.0
    assert no_decay == {f"blocks.{i}.{m}.weight" for i in (0, 1) for m in ("proj", "frame")}
    assert {names[id(p)] for p in groups[0]["params"]} == set(names.values()) - no_decay
    with torch.no_grad():
        net.blocks[1].frame.weight.mul_(1.2)  # singular values 1.2: off tightness
    expected = net.blocks[1].frame.weight.detach().clone()
    steps = 3
    for _ in range(steps):
        parseval_step(expected, 0.05)
    data = TensorDataset(torch.randn(steps * 4, 3, 16, 16), torch.randint(0, 10, (steps * 4,)))
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, DataLoader(data, batch_size=4))
    # lr 0: only the Parseval step moved the weights, once per optimizer step
    assert torch.allclose(net.blocks[1].frame.weight, expected, atol=1e-6)


def test_tight_frame_forward_backward_and_block_names() -> None:
    torch.manual_seed(0)
    net = tiny_tight_frame(frame_nonlinearity="relu")
    outputs = {}
    for i, block in enumerate(net.blocks):
        assert dict(net.named_modules())[f"blocks.{i}"] is block
        block.register_forward_hook(lambda m, a, out, i=i: outputs.__setitem__(i, out.shape))
    logits = net(torch.randn(2, 3, 16, 16))
    assert logits.shape == (2, 10) and outputs == {0: (2, 8, 8, 8), 1: (2, 16, 4, 4)}
    logits.square().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())
    assert_analysis_layers_resolve(net, 6)  # per block: input of P, input of F, output


def test_sparse_scattering_block_names_and_shapes() -> None:
    torch.manual_seed(0)
    net = SparseScattering(
        num_classes=10,
        input_size=16,
        J=2,
        L=4,
        proj_width=16,
        atoms=32,
        n_iterations=4,
        pool=2,
        pool_stride=2,
        hidden=[20, 20],
    )
    shapes = {}
    for i in range(3):
        dict(net.named_modules())[f"blocks.{i}"].register_forward_hook(
            lambda m, a, out, i=i: shapes.__setitem__(i, out.shape)
        )
    logits = net(torch.randn(2, 3, 16, 16))
    # kymatio J=2, L=4: 3 (1 + 8 + 16) = 75 channels at 4x4
    assert logits.shape == (2, 10)
    assert shapes == {0: (2, 75, 4, 4), 1: (2, 16, 4, 4), 2: (2, 32, 4, 4)}
    assert dict(net.named_modules())["head.layers.1"] is net.head.layers[1]
    assert_analysis_layers_resolve(net, 5)


def assert_analysis_layers_resolve(net: nn.Module, count: int) -> None:
    """The layer-analysis hooks (issue 12) find every default layer of the net."""
    hooks = pytest.importorskip("scatterlab.analysis.hooks")
    specs = hooks.default_layers(net)
    assert len(specs) == count and len(hooks.resolve(net, specs)) == count


# ---------------------------------------------------------------- config errors


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: tiny_tight_frame(frame_widths=[32, 12]), "not wider than its 16 input channels"),
        (lambda: ISTC(8, 16, n_iterations=0), "model.n_iterations=0"),
        (lambda: ISTC(8, 16, lambda_star=0.0), "model.lambda_star=0.0 must be a positive"),
        (lambda: ISTC(8, 16, lambda_star=-1.0), "model.lambda_star=-1.0 must be a positive"),
        (lambda: tiny_tight_frame(frame_nonlinearity="tanh"), "frame_nonlinearity='tanh'"),
    ],
)
def test_wrong_settings_give_one_clear_line(build, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        build()
    assert message in str(e.value) and "\n" not in str(e.value)


# ---------------------------------------------------------------- parameter counts


class _NoScattering(nn.Module):
    """Stands in for kymatio's Scattering2D (no parameters; its J=4 filters take ~30 s)."""

    def __init__(self, **kwargs) -> None:
        super().__init__()


def test_kymatio_scattering_has_no_parameters() -> None:
    from kymatio.torch import Scattering2D

    assert count_parameters(Scattering2D(J=2, shape=(16, 16), L=4)) == 0


EXPECTED = {
    # P 5,683,392 + F 5,570,560 + 4 thresholds + head 21,514 (reference: 11.28M)
    "cifar_tight_frame": 11_275_470,
    # P 22,984,896 + F 3,571,712 + 6 thresholds + head 4,610,024 (reference: 31.17M)
    "imagenet_tight_frame": 31_166_638,
    "cifar_sparse_scattering": 18_251_147,
    # P 2,882,304 (kymatio's 1251 channels; the reference's phase scattering has 1539) + D
    # 524,288 + lambda* + BatchNorm 4,096 + MLP 859,743,208 (reference: ~863.8M)
    "imagenet_sparse_scattering": 863_153_897,
}


@pytest.mark.parametrize("experiment", sorted(EXPECTED))
def test_parameter_counts_of_the_experiments(experiment: str, monkeypatch) -> None:
    import kymatio.torch

    monkeypatch.setattr(kymatio.torch, "Scattering2D", _NoScattering)
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}"], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with torch.device("meta"):  # no memory for the 863M-parameter ImageNet model
        net = instantiate(cfg.model)
    n = count_parameters(net)
    print(f"{experiment}: {n:,} parameters")
    assert n == EXPECTED[experiment]
    m = cfg.model
    if "tight_frame" in experiment:
        counts = tight_frame_parameter_count(
            m.in_channels, m.num_classes, m.input_size, m.widths, m.frame_widths, m.L
        )
    else:
        counts = sparse_scattering_parameter_count(
            m.in_channels,
            m.num_classes,
            m.input_size,
            m.J,
            m.L,
            m.proj_width,
            m.atoms,
            m.hidden,
            m.proj_kernel_size,
            m.pool,
            m.pool_stride,
        )
    assert counts["total"] == n
    if experiment == "cifar_tight_frame":
        assert (counts["P"], counts["F"]) == (5_683_392, 5_570_560)
    if experiment == "imagenet_tight_frame":
        assert (counts["P"], counts["F"]) == (22_984_896, 3_571_712)
