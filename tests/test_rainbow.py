"""Rainbow networks: alignment, covariances, resampling, checkpoint errors (scatterlab.rainbow)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from scatterlab.data.base import normalize
from scatterlab.data.datasets import DigitsDataModule
from scatterlab.errors import CheckpointError, ConfigError
from scatterlab.models import LearnedScattering
from scatterlab.modules.rainbow import load_network_weights
from scatterlab.rainbow import (
    MomentAccumulator,
    align,
    block_input_alignment,
    evaluate,
    gaussianity,
    marchenko_pastur_outside,
    parse_layers,
    procrustes,
    random_orthogonal,
    reestimate_statistics,
    resample,
    retrain_head,
    sample_rows,
    standardized_alignment,
    weight_covariance,
)
from scatterlab.rainbow.network import p_input, permute_channels

torch.set_num_threads(1)


# ---- statistics and alignment ----------------------------------------------------------------
def test_alignment_recovers_random_rotation() -> None:
    """psi = R phi with R orthogonal: A = U V^T from streamed moments gives A = R^T."""
    g = torch.Generator().manual_seed(0)
    d = 24
    phi = torch.randn(3000, d, generator=g) * torch.linspace(0.2, 3, d)  # anisotropic
    rot = random_orthogonal(d, g)
    psi = phi.double() @ rot.T
    acc = MomentAccumulator(d, d)
    for i in range(0, 3000, 256):  # streaming over batches
        acc.update(phi[i : i + 256], psi[i : i + 256].float())
    al = align(acc.cross, float(acc.power_x.sum()), float(acc.power_y.sum()))
    assert torch.allclose(al.matrix, rot.T, atol=1e-5)
    assert al.error < 1e-6 and abs(al.r2 - 1) < 1e-6
    # A wrong rotation is far from it: the check can fail.
    assert not torch.allclose(random_orthogonal(d, g), rot.T, atol=1e-2)


def test_complex_alignment_shapes_and_unitary_recovery() -> None:
    """Complex (B, C, H, W) activations: complex moments (D_ref, D_new), unitary A = U V^H."""
    g = torch.Generator().manual_seed(1)
    d, e = 6, 9
    phi = torch.complex(
        torch.randn(40, d, 2, 2, generator=g), torch.randn(40, d, 2, 2, generator=g)
    )
    q, _ = torch.linalg.qr(
        torch.complex(torch.randn(e, d, generator=g), torch.randn(e, d, generator=g))
    )
    psi = torch.einsum("ed,bdhw->behw", q, phi)  # (40, e, 2, 2): an isometric embedding
    acc = MomentAccumulator(d, e, complex=True)
    acc.update(phi, psi)
    assert acc.count == 40 * 4
    assert acc.cross.shape == (d, e) and acc.cross.dtype == torch.complex128
    a, s = procrustes(acc.cross)
    assert a.shape == (d, e) and s.shape == (d,)
    assert torch.allclose(a @ a.conj().T, torch.eye(d, dtype=a.dtype), atol=1e-10)
    assert torch.allclose(a, q.conj().T.to(a.dtype), atol=1e-5)


def test_moment_and_weight_covariance_estimators_match_sample_covariance() -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(7, 5, 3, 2, generator=g, dtype=torch.float64) + 0.5
    acc = MomentAccumulator(5, full_x=True, compute_dtype=torch.float64)
    acc.update(x[:3])
    acc.update(x[3:])
    flat = x.permute(0, 2, 3, 1).reshape(-1, 5)  # spatial positions are samples
    assert torch.allclose(acc.second_x, flat.T @ flat / 42, atol=1e-12)  # uncentred
    assert torch.allclose(acc.mean_x, flat.mean(0), atol=1e-12)
    w1, w2 = torch.randn(4, 5, generator=g), torch.randn(6, 5, generator=g)
    w = torch.cat([w1, w2]).double()
    assert torch.allclose(weight_covariance([w1, w2]), w.T @ w / 10, atol=1e-6)
    centred = torch.cov(w.T, correction=0) + torch.outer(w.mean(0), w.mean(0))
    assert torch.allclose(weight_covariance(w), centred, atol=1e-10)


def test_standardized_alignment_uses_exact_new_statistics() -> None:
    """The one-pass standardized cross moment equals the one of explicitly standardized data."""
    g = torch.Generator().manual_seed(3)
    phi = torch.randn(500, 4, generator=g, dtype=torch.float64)
    y = phi @ torch.randn(4, 4, generator=g, dtype=torch.float64) * 3 + 2
    acc = MomentAccumulator(4, 4, compute_dtype=torch.float64)
    acc.update(phi, y)
    al, mu, var = standardized_alignment(acc, eps=0.0)
    var_t, mu_t = torch.var_mean(y, 0, correction=0)
    assert torch.allclose(mu, mu_t) and torch.allclose(var, var_t)
    ys = (y - mu_t) / var_t.sqrt()
    a, _ = procrustes(phi.T @ ys / 500)
    assert torch.allclose(al.matrix, a, atol=1e-8)


def test_gaussian_samples_have_the_covariance() -> None:
    g = torch.Generator().manual_seed(4)
    b = torch.randn(6, 6, generator=g, dtype=torch.float64)
    cov = b @ b.T / 6
    w = sample_rows(cov, 200_000, g)
    assert torch.allclose(weight_covariance(w), cov, atol=0.03 * cov.abs().max())


def test_gaussianity_tests_accept_gaussian_and_reject_uniform_weights() -> None:
    """Rows drawn from N(0, C) pass the KS test and are white after whitening (MP bulk);
    uniform components of the same covariance fail the KS test."""
    g = torch.Generator().manual_seed(0)
    d, n = 40, 4000
    vals = torch.arange(1, d + 1, dtype=torch.float64) ** -1.5  # a decaying spectrum
    q = random_orthogonal(d, g)
    cov = q @ torch.diag(vals) @ q.T
    w = sample_rows(cov, n, g)
    out = gaussianity(w, cov, components=(1, 10))
    assert out["ks_p/r1"] > 0.01 and out["ks_p/r10"] > 0.01
    assert out["mp_outside_colored"] > 0.3  # the spiked spectrum sticks out of the bulk
    assert out["mp_outside_whitened"] < 0.05
    # same covariance, uniform components (variance 1): KS rejects
    u = (torch.rand(n, d, dtype=torch.float64, generator=g) - 0.5) * 12**0.5
    w_uniform = (u * vals.sqrt()) @ q.T
    bad = gaussianity(w_uniform, cov, components=(1,))
    assert bad["ks_p/r1"] < 1e-4
    # more features than neurons: the nonzero eigenvalues still fill the MP bulk
    assert marchenko_pastur_outside(torch.randn(50, 200, generator=g)) < 0.05


def test_mean_network_alignment_of_rotated_copies() -> None:
    """M rotated copies psi_m = R_m phi: every A_m maps psi_m to one common mean space."""
    from scatterlab.rainbow.weights import mean_network_alignments

    g = torch.Generator().manual_seed(7)
    d = 10
    b = torch.randn(d, d, generator=g, dtype=torch.float64)
    cov = b @ b.T + 0.1 * torch.eye(d, dtype=torch.float64)  # full rank E[phi phi^T]
    rots = [random_orthogonal(d, g) for _ in range(3)]
    pairwise = torch.stack([torch.stack([ra @ cov @ rb.T for rb in rots]) for ra in rots])
    aligns = mean_network_alignments(pairwise)
    for a, r in zip(aligns, rots, strict=True):
        assert torch.allclose(a @ r, aligns[0] @ rots[0], atol=1e-8)


# ---- networks --------------------------------------------------------------------------------
def _digits():
    dm = DigitsDataModule(batch_size=128)
    splits = dm.load()

    def batches(split):
        x, y = splits[split]
        x = normalize(x, dm.mean, dm.std)
        return [(x[i : i + 256], y[i : i + 256]) for i in range(0, len(y), 256)]

    return batches("train"), batches("test")


def _net(widths=(16, 32, 32), seed=0) -> LearnedScattering:
    torch.manual_seed(seed)
    return LearnedScattering(
        in_channels=1,
        input_size=8,
        widths=list(widths),
        complex_projection=False,
        classifier_affine=False,
        classifier_bias=False,
    )


@pytest.fixture(scope="module")
def digits():
    return _digits()


def _trained_net(train, epochs: int):
    """A small real-P scattering net trained `epochs` epochs on the digits (~seconds)."""
    net = _net(widths=(16, 32, 32))
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    net.train()
    for _ in range(epochs):
        for x, y in train:
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    reestimate_statistics(net, train)
    return net


@pytest.fixture(scope="module")
def trained(digits):
    return _trained_net(digits[0], epochs=3)


def test_permuted_network_realigned_keeps_accuracy_exactly(trained, digits) -> None:
    train, test = digits
    acc = evaluate(trained, test)
    assert acc > 0.8
    perm = permute_channels(trained, 0, torch.Generator().manual_seed(5))
    reestimate_statistics(perm, train, start=1)
    broken = evaluate(perm, test)
    assert broken < acc - 0.1  # the permutation alone does change the function
    al = block_input_alignment(trained, perm, 1, train, reestimate=False)
    a = al.matrix
    # A maps the permuted features back exactly on the data (on directions the data never
    # visits, where E[u u^T] is singular, A is not unique, so it is not checked entrywise).
    assert al.error < 1e-5 and abs(al.r2 - 1) < 1e-5
    with torch.no_grad():
        w = trained.blocks[1].proj.weight.double() @ a
        perm.blocks[1].proj.weight.copy_(w.float())
    reestimate_statistics(perm, train, start=2)  # were estimated with the broken P_2
    assert evaluate(perm, test) == acc
    x = test[0][0]
    assert torch.allclose(perm(x), trained(x), atol=1e-3)


def test_transport_without_resampling_gives_back_the_network(trained, digits) -> None:
    train, test = digits
    train = train[:2]
    trained = copy.deepcopy(trained)
    reestimate_statistics(trained, train)  # exact statistics on the same images
    covs = {0: weight_covariance(trained.blocks[0].proj.weight)}
    new, rep = resample(trained, covs, train, method="transport")
    assert evaluate(new, test) == evaluate(trained, test)
    assert max(rep.errors) < 1e-4


def test_resampling_a_gaussian_network_keeps_its_accuracy(digits) -> None:
    """P_1, P_2 drawn from N(0, C_j), last P + classifier trained: rainbow resampling from its
    estimated covariances keeps the accuracy within sampling noise, while the random-rotation
    control (same weights, wrong alignment) falls to chance."""
    train, test = digits
    train = train[:2]  # 512 images: enough for 16-32 channels, and fast
    g = torch.Generator().manual_seed(6)
    net = _net(widths=(32, 64, 32), seed=1)
    for j in (0, 1):
        w = net.blocks[j].proj.weight
        d = w.shape[1]
        spec = torch.exp(-torch.arange(d, dtype=torch.float64) / 8)  # exponential spectrum
        v = random_orthogonal(d, g)
        true_cov = v @ torch.diag(spec) @ v.T
        with torch.no_grad():
            w.copy_(sample_rows(true_cov, w.shape[0], g).float())
    reestimate_statistics(net, train)
    net = retrain_head(net, train, epochs=10, lr=0.05, generator=g)
    acc = evaluate(net, test)
    covs = {j: weight_covariance(net.blocks[j].proj.weight) for j in (0, 1)}
    accs = [evaluate(resample(net, covs, train, "gaussian", g)[0], test) for _ in range(2)]
    assert acc > 0.85
    # Sampling noise of the test accuracy (269 images) and of the finite widths: a few points.
    assert abs(sum(accs) / len(accs) - acc) < 0.05, (acc, accs)
    assert evaluate(resample(net, covs, train, "rotation", g)[0], test) < 0.5


def test_p_input_shapes_with_skip_and_complex_coefficients(trained, digits) -> None:
    """P_j's input has features + features_complex real features (split layout)."""
    x = digits[0][0][0]
    for block in trained.blocks:
        u = p_input(block, x)
        assert u.shape[1] == block.features + block.features_complex
        assert u.shape[1] == block.proj.weight.shape[1]
        x = block(x)


# ---- user errors -----------------------------------------------------------------------------
def test_complex_projection_and_bad_layer_names_are_clear_errors(trained) -> None:
    from scatterlab.rainbow.network import check_network

    with pytest.raises(ConfigError, match="complex_projection=false"):
        check_network(LearnedScattering(in_channels=1, input_size=8, widths=[4, 4]))
    with pytest.raises(ConfigError, match="no layer of this network"):
        parse_layers(trained, ["blocks.7.proj"])
    assert parse_layers(trained, ["blocks.1.proj", 0]) == [0, 1]
    assert parse_layers(trained, "all_but_last") == [0, 1]


def test_checkpoint_of_another_architecture_or_missing_layer(trained, tmp_path) -> None:
    other = _net(widths=(8, 32, 32))
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": {f"net.{k}": v for k, v in other.state_dict().items()}}, path)
    net = copy.deepcopy(trained)
    with pytest.raises(CheckpointError, match="another architecture: blocks.0.proj.weight"):
        load_network_weights(net, str(path))
    state = {f"net.{k}": v for k, v in trained.state_dict().items()}
    del state["net.blocks.2.proj.weight"]
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointError, match="lacks the layer"):
        load_network_weights(net, str(path))
    with pytest.raises(CheckpointError, match="does not exist"):
        load_network_weights(net, str(tmp_path / "missing.ckpt"))
    state = {f"net.{k}": v for k, v in trained.state_dict().items()}
    torch.save({"state_dict": state}, path)
    load_network_weights(net, str(path))  # the right architecture loads


def test_width_alignment_is_the_direct_error_and_zero_for_a_permuted_copy(trained, digits) -> None:
    """The convergence-with-width error from moments equals the one computed on the
    activations with the returned A, and a channel-permuted copy aligns with no error."""
    from scatterlab.rainbow import width_alignment

    train, test = digits
    batches = test[:3]
    narrow = _net(widths=(8, 16, 16), seed=1)
    reestimate_statistics(narrow, train)
    als = width_alignment(trained, narrow, batches)
    assert list(als) == ["blocks.1.proj", "blocks.2.proj", "classifier"]
    # the direct error, block 1, features divided by sqrt(their number)
    with torch.no_grad():
        x = torch.cat([b[0] for b in batches])
        phi = p_input(trained.blocks[1], trained.blocks[0](x)).double()
        psi = p_input(narrow.blocks[1], narrow.blocks[0](x)).double()
        phi = phi.permute(0, 2, 3, 1).reshape(-1, phi.shape[1]) / phi.shape[1] ** 0.5
        psi = psi.permute(0, 2, 3, 1).reshape(-1, psi.shape[1]) / psi.shape[1] ** 0.5
    al = als["blocks.1.proj"]
    assert al.matrix.shape == (phi.shape[1], psi.shape[1])
    direct = ((psi @ al.matrix.T - phi) ** 2).sum() / (phi**2).sum()
    assert 0.05 < al.error < 2 and abs(al.error - float(direct)) < 1e-4
    # a channel permutation of P_1 changes the next features only by a permutation
    perm = permute_channels(trained, 0, torch.Generator().manual_seed(3))
    reestimate_statistics(perm, train, start=1)
    same = width_alignment(trained, perm, batches)
    assert same["blocks.1.proj"].error < 1e-5
    with pytest.raises(ConfigError, match="same depth"):
        width_alignment(trained, _net(widths=(16, 32)), batches)


# ---- the Lightning module and train.py -------------------------------------------------------
def _reference_ckpt(net, tmp_path):
    """A checkpoint of `net` (widths 16, 32, 32) as module.reference_ckpt reads it."""
    model_cfg = {
        "_target_": "scatterlab.models.LearnedScattering",
        "in_channels": 1,
        "input_size": 8,
        "widths": [16, 32, 32],
        "width": 1.0,
        "complex_projection": False,
        "classifier_affine": False,
        "classifier_bias": False,
    }
    path = tmp_path / "ref.ckpt"
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    torch.save({"state_dict": state, "scatterlab_config": {"model": model_cfg}}, path)
    return path


def _narrow_net(digits):
    """An untrained half-width net with exact statistics: what is aligned onto the reference."""
    narrow = _net(widths=(8, 16, 16), seed=1)
    reestimate_statistics(narrow, digits[0])
    return narrow


def test_module_width_alignment_onto_a_reference_checkpoint(trained, digits, tmp_path) -> None:
    """module.reference_ckpt: the module's width_alignment_error equals width_alignment onto
    the network rebuilt from the checkpoint's stored config; the reference stays out of the
    module's parameters and checkpoints."""
    from functools import partial

    from scatterlab.modules.rainbow import RainbowModule
    from scatterlab.rainbow import width_alignment

    path = _reference_ckpt(trained, tmp_path)
    narrow = _narrow_net(digits)
    module = RainbowModule(
        narrow, partial(torch.optim.SGD, lr=0.1), rainbow=False, reference_ckpt=str(path)
    )
    test = digits[1][:2]
    got = module.run_width_alignment(test)
    want = width_alignment(trained, narrow, test)
    assert set(got) == {f"{k}/{n}" for n in want for k in ("width_alignment_error", "cka")} | {
        "reference_width"
    }
    for name, al in want.items():
        assert got[f"width_alignment_error/{name}"] == pytest.approx(al.error, rel=1e-6)
    assert got["reference_width"] == 1.0
    assert not any(k.startswith("_reference") for k in module.state_dict())
    assert sum(p.numel() for p in module.parameters()) == sum(
        p.numel() for p in narrow.parameters()
    )
    bare = tmp_path / "bare.ckpt"
    torch.save({"state_dict": torch.load(path, weights_only=False)["state_dict"]}, bare)
    with pytest.raises(CheckpointError, match="stores no run config"):
        RainbowModule(narrow, partial(torch.optim.SGD, lr=0.1), reference_ckpt=str(bare))


def test_rainbow_run_writes_each_value_once_with_a_reference(trained, tmp_path) -> None:
    """A tiny quickstart_rainbow run with a reference checkpoint: one name per value in
    metrics.json (no rainbow/ copies), the rainbow metrics and the width alignment beside them."""
    import json
    import os

    from tests.conftest import run_cli

    os.environ["OMP_NUM_THREADS"] = "1"
    ref = tmp_path / "ref.ckpt"
    model_cfg = {
        "_target_": "scatterlab.models.LearnedScattering",
        "in_channels": 1,
        "input_size": 8,
        "widths": [16, 32, 32],  # the trained fixture: twice the run's widths
        "width": 1.0,
        "complex_projection": False,
        "classifier_affine": False,
        "classifier_bias": False,
    }
    state = {f"net.{k}": v for k, v in trained.state_dict().items()}
    torch.save({"state_dict": state, "scatterlab_config": {"model": model_cfg}}, ref)
    run = tmp_path / "run"
    run_cli(
        "train.py", "experiment=quickstart_rainbow", "model.widths=[8,16,16]",
        "trainer.max_epochs=1", "module.num_samples=1", "module.retrain_epochs=0",
        "module.clip_layer=null", f"module.reference_ckpt={ref}", "callbacks.progress_bar=null",
        "logger=csv", f"hydra.run.dir={run}",
    )  # fmt: skip
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 <= metrics["trained_acc"] <= 1 and 0 <= metrics["rainbow_acc"] <= 1
    assert "alignment_error/blocks.1.proj" in metrics
    assert not [k for k in metrics if k.startswith("rainbow/")]
    errors = {k: v for k, v in metrics.items() if k.startswith("width_alignment_error/")}
    assert set(errors) == {
        "width_alignment_error/blocks.1.proj",
        "width_alignment_error/blocks.2.proj",
        "width_alignment_error/classifier",
    }
    assert all(0 < e < 2 for e in errors.values()) and metrics["reference_width"] == 1.0
