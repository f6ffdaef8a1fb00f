"""Wide shallow networks (scatterlab.shallow): kernels, rainbow alignment, mean field, lazy."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate

from scatterlab.config_check import validate_config
from scatterlab.errors import ConfigError
from scatterlab.modules import shallow as modules
from scatterlab.shallow import features as rf
from scatterlab.shallow import lazy as lz
from scatterlab.shallow import lazy_cnn as lc
from scatterlab.shallow import twolayer as tl
from tests.conftest import ROOT, read_metrics, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")


def unit(angles: list[float]) -> torch.Tensor:
    t = torch.tensor(angles, dtype=torch.float64)
    return torch.stack([torch.cos(t), torch.sin(t)], 1)


# --- random features ---------------------------------------------------------------------
def test_closed_forms_at_known_angles():
    x = unit([0.0])
    y = unit([0.0, math.pi / 2, math.pi])
    relu = rf.limit_kernel(x, y, "relu")[0]
    # arc-cosine of order 1: (sin t + (pi - t) cos t) / (2 pi)
    assert relu.tolist() == pytest.approx([0.5, 1 / (2 * math.pi), 0.0], abs=1e-12)
    erf = rf.limit_kernel(x, y, "erf")[0]
    assert erf.tolist() == pytest.approx(
        [2 / math.pi * math.asin(2 / 3), 0.0, -2 / math.pi * math.asin(2 / 3)], abs=1e-12
    )
    # E|h|^2 = 1 at t = 0; E|h1||h2| = (pi/4) for independent circular Gaussians (t = pi/2)
    mod = rf.limit_kernel(x, y, "modulus")[0]
    assert mod.tolist() == pytest.approx([1.0, math.pi / 4, 1.0], abs=1e-9)
    # scaling: relu and modulus are 2-homogeneous in (|x|, |x'|)
    assert float(rf.limit_kernel(3 * x, 2 * y, "relu")[0, 1]) == pytest.approx(6 / (2 * math.pi))


@pytest.mark.parametrize("activation", ["relu", "erf", "modulus"])
def test_monte_carlo_kernel_converges_to_closed_form(activation):
    x, y = unit([0.0]), unit([0.0, math.pi / 4, math.pi / 2, 3 * math.pi / 4, math.pi])
    gen = torch.Generator().manual_seed(0)
    m = 2**22
    mc = rf.empirical_kernel(x, y, m, activation, gen, block=2**19)[0]
    exact = rf.limit_kernel(x, y, activation)[0]
    assert (mc - exact).abs().max() < 1e-3
    # a wrong closed form (e.g. the order-0 arc-cosine for relu) is far off at this m
    if activation == "relu":
        order0 = 1 - torch.arccos(torch.tensor([1.0, 0.7071, 0.0, -0.7071, -1.0])) / math.pi
        assert (mc - order0.double() / 2).abs().max() > 0.05


def test_kernel_error_exponent_is_minus_one_half():
    x = rf.sphere(64, 5, torch.Generator().manual_seed(1))
    widths = [16, 64, 256, 1024, 4096]
    err = rf.kernel_errors(x, widths, "relu", seeds=6)
    fit = rf.fit_exponent(widths, err)
    assert abs(fit["slope"] + 0.5) < 0.1
    assert err[:, -1].mean() < err[:, 0].mean() / 8


def test_block_kernel_matches_one_shot_features():
    gen = torch.Generator().manual_seed(2)
    x = rf.sphere(7, 3, gen)
    k_blocks = rf.empirical_kernel(x, x, 300, "erf", torch.Generator().manual_seed(3), block=64)
    # the same weights drawn in blocks of 64: rebuild them and form phi phi^T at once
    g = torch.Generator().manual_seed(3)
    w = torch.cat([rf.sample_weights(b, 3, "erf", g) for b in (64, 64, 64, 64, 44)])
    phi = rf.feature_map(x, w, "erf")
    assert torch.allclose(k_blocks, phi @ phi.T, atol=1e-12)


def test_alignment_is_the_bures_distance_and_shrinks_with_width():
    gen = torch.Generator().manual_seed(4)
    x = rf.sphere(32, 3, gen)
    # m >= n: on the fit set the Procrustes error is the Bures distance of the Gram matrices
    w1, w2 = rf.sample_weights(64, 3, "relu", gen), rf.sample_weights(64, 3, "relu", gen)
    p1, p2 = rf.feature_map(x, w1, "relu"), rf.feature_map(x, w2, "relu")
    from scatterlab.rainbow import align

    al = align(p1.T @ p2 / 32, float((p1**2).sum() / 32), float((p2**2).sum() / 32))
    assert al.error == pytest.approx(rf.bures_error(p1 @ p1.T, p2 @ p2.T), rel=1e-6, abs=1e-9)
    # held-out error decreases with m (n_fit >> m)
    x_fit, x_test = rf.sphere(2048, 3, gen), rf.sphere(256, 3, gen)
    errs = [
        np.mean([rf.alignment(x_fit, x_test, m, "relu", gen)["test_error"] for _ in range(2)])
        for m in (8, 32, 128)
    ]
    assert errs[0] > 2 * errs[1] > 4 * errs[2]


# --- mean field --------------------------------------------------------------------------
def test_wide_student_recovers_a_one_neuron_teacher():
    gen = torch.Generator().manual_seed(5)
    w_star, a_star = tl.teacher(2, 1, gen)
    x = torch.randn(128, 2, dtype=torch.float64, generator=gen)
    y = tl.forward(x, w_star[None], a_star[None])[0]
    w, a = tl.init_particles(2, 64, 2, 0.5, gen)
    r = tl.train(x, y, w, a, 2000, 0.2, progress=False)
    loss = r["loss"]
    assert (loss[:, -1] < 1e-4 * loss[:, 0]).all()
    assert (loss[:, 1:] <= loss[:, :-1] * (1 + 1e-9)).all()  # GD decreases the loss
    # the measure converges too (more slowly: 0.13 after 500 steps, 0.03 after 8000)
    dist = tl.measure_distance(r["w"], r["a"], w_star, a_star)
    assert (dist < 0.1).all()
    assert (tl.measure_distance(w, a, w_star, a_star) > 0.9).all()


def test_distance_is_zero_on_the_teacher_and_sees_equivalent_measures():
    w_star, a_star = tl.teacher(2, 5)
    # the teacher as a student of width 10 (each neuron twice): distance 0
    w, a = w_star.repeat(2, 1)[None], a_star.repeat(2)[None]
    assert float(tl.measure_distance(w, a, w_star, a_star)) == pytest.approx(0, abs=1e-6)
    # a neuron at -u instead of u (same function up to a linear part): still distance 0
    w2 = w.clone()
    w2[0, 0] = -w2[0, 0]
    assert float(tl.measure_distance(w2, a, w_star, a_star)) == pytest.approx(0, abs=1e-6)
    # half the mass missing: distance 1/2
    a3 = a.clone()
    a3[0, 5:] = 0
    assert float(tl.measure_distance(w, a3, w_star, a_star)) == pytest.approx(0.5)


def test_population_risk_and_its_gradient_match_monte_carlo():
    gen = torch.Generator().manual_seed(8)
    w_star, a_star = tl.teacher(3, 5, gen)
    w, a = tl.init_particles(2, 7, 3, 0.8, gen)
    x = torch.randn(200_000, 3, dtype=torch.float64, generator=gen)
    y = tl.forward(x, w_star[None], a_star[None])[0]
    assert tl.teacher_risk(w_star, a_star) == pytest.approx(float(0.5 * (y**2).mean()), rel=0.01)
    exact = tl.train_population(w, a, w_star, a_star, 1, 0.1, progress=False)
    mc = tl.train(x, y, w, a, 1, 0.1, progress=False)
    assert torch.allclose(exact["loss"], mc["loss"], rtol=0.01)
    for key, start in (("w", w), ("a", a)):
        step, step_mc = exact[key] - start, mc[key] - start
        assert (step - step_mc).abs().max() < 0.03 * step.abs().max()


def test_meanfield_student_of_teacher_width_fails_where_wide_ones_succeed():
    mod = modules.MeanFieldTwoLayerModule(widths=[5, 40], seeds=6, steps=1500, plot_widths=[])
    mod.compute()
    assert mod.metrics["converged_fraction/m=40"] >= 5 / 6
    assert mod.metrics["converged_fraction/m=5"] <= 0.5
    assert mod.metrics["final_rel_loss_median/m=40"] < mod.metrics["final_rel_loss_median/m=5"] / 30


# --- lazy training -----------------------------------------------------------------------
def test_tangent_kernel_exact_equals_jacobian_products():
    gen = torch.Generator().manual_seed(6)
    w, a = tl.init_particles(1, 12, 3, 1.0, gen)
    x1, x2 = (
        torch.randn(5, 3, dtype=torch.float64, generator=gen),
        torch.randn(4, 3, dtype=torch.float64, generator=gen),
    )
    for act in ("relu", "softplus"):

        def fn(p, x, act=act):
            return tl.forward(x, p["w"][None], p["a"][None], act)[0]

        k = lz.tangent_kernel(fn, {"w": w[0], "a": a[0]}, x1, x2)
        assert torch.allclose(k, lz.tangent_kernel_two_layer(x1, x2, w[0], a[0], act), atol=1e-14)


def test_lazy_scalings_in_alpha():
    mod = modules.LazyTrainingModule(m=40, alphas=[10, 30, 100, 300, 1000], steps=300, n_test=256)
    mod.compute()
    m = mod.metrics
    for act in ("relu", "softplus"):
        assert abs(m[f"relative_change_slope/{act}"] + 1) < 0.15
    # the smooth model meets its linearisation at rate 1/alpha (Chizat, Oyallon & Bach)
    assert abs(m["linear_gap_slope/softplus"] + 1) < 0.3
    gap = mod.results["by_activation"]["softplus"]["linear_gap"]
    assert float(gap[-1]) < float(gap[0]) / 30
    # at large alpha the network's test loss is the linearised model's
    assert m["test_loss_at_max_alpha/relu"] == pytest.approx(m["linear_test_loss/relu"], rel=0.05)


def test_linearised_model_is_kernel_regression():
    gen = torch.Generator().manual_seed(7)
    x, y = (
        torch.randn(6, 2, dtype=torch.float64, generator=gen),
        torch.randn(6, dtype=torch.float64, generator=gen),
    )
    k = x @ x.T + torch.eye(6, dtype=torch.float64)
    out = lz.linearised_predictions(k, k, y, 4000, 0.5)
    # long GD on a positive definite kernel interpolates: train predictions -> y
    assert torch.allclose(out["train"], y, atol=1e-8)
    assert torch.allclose(out["test"], out["train"], atol=1e-8)


# --- configs and runs --------------------------------------------------------------------
EXPERIMENTS = {
    "random_features_kernel": modules.RandomFeaturesKernelModule,
    "random_features_rainbow": modules.RandomFeaturesRainbowModule,
    "meanfield_two_layer": modules.MeanFieldTwoLayerModule,
    "lazy_training": modules.LazyTrainingModule,
    "meanfield_teacher_student": modules.MeanFieldTwoLayerModule,
    "lazy_training_cnn": modules.LazyCNNModule,
    "lazy_training_scattering": modules.LazyCNNModule,
}


def composed(*overrides: str):
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


@pytest.mark.parametrize("experiment", sorted(EXPERIMENTS))
def test_experiment_configs_build_their_module(experiment):
    cfg = composed(f"experiment={experiment}")
    validate_config(cfg)
    assert cfg.train is False and cfg.data is None
    assert isinstance(instantiate(cfg.module), EXPERIMENTS[experiment])


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "experiment=meanfield_two_layer module.widths=[0,10]",
            "module.widths[0]=0 is out of range",
        ),
        ("experiment=lazy_training module.alphas=[0,1]", "module.alphas[0]=0 is out of range"),
        ("experiment=lazy_training module.alphas=[-1,1]", "module.alphas[0]=-1 is out of range"),
        (
            "experiment=meanfield_two_layer module.m0=50 module.widths=[5,10]",
            "add a student width >= module.m0",
        ),
        ("experiment=meanfield_two_layer module.m0=1000", "module.m0=1000 is out of range"),
        ("experiment=random_features_kernel module.widths=[64]", "module.widths has 1 elements"),
        ("experiment=random_features_kernel module.activations=[tanh]", "not one of the choices"),
        ("experiment=lazy_training module.m=7 module.symmetric=true", "even module.m"),
        ("experiment=lazy_training module.m=0", "module.m=0 is out of range"),
        ("experiment=meanfield_teacher_student module.width=0", "module.width=0 is out of range"),
        (
            "experiment=meanfield_teacher_student module.width=3",
            "add a student width >= module.m0",
        ),
        ("experiment=lazy_training_cnn module.alphas=[0,1]", "module.alphas[0]=0 is out of range"),
        (
            "experiment=lazy_training_cnn module.n_train=1500 module.n_test=500",
            "the digits have 1797 images",
        ),
    ],
)
def test_bad_options_are_refused(override, message):
    with pytest.raises(ConfigError) as e:
        validate_config(composed(*override.split()))
    assert message in str(e.value)


def test_too_few_alphas_to_fit_and_divergence_are_one_line_errors():
    with pytest.raises(ConfigError, match="fewer than two alphas"):
        modules.LazyTrainingModule(alphas=[1, 3, 100], fit_min_alpha=50)
    mod = modules.MeanFieldTwoLayerModule(widths=[5], steps=200, lr=10.0, seeds=1, plot_widths=[])
    with pytest.raises(ConfigError, match="diverged"):
        mod.compute()


def test_every_module_writes_json_plots_and_finite_metrics(tmp_path):
    tiny = {
        "random_features_kernel": modules.RandomFeaturesKernelModule(
            widths=[16, 256], dims=[3], n=16, seeds=2, check_width=1024, output_dir=str(tmp_path)
        ),
        "random_features_rainbow": modules.RandomFeaturesRainbowModule(
            widths=[8, 16, 32], dims=[3], n_fit=256, n_test=64, seeds=1, output_dir=str(tmp_path)
        ),
        "meanfield_two_layer": modules.MeanFieldTwoLayerModule(
            widths=[5, 10], seeds=2, steps=50, plot_widths=[5, 10], output_dir=str(tmp_path)
        ),
        "lazy_training": modules.LazyTrainingModule(
            m=10, alphas=[1, 10, 100], steps=20, n_test=32, output_dir=str(tmp_path)
        ),
    }
    for name, mod in tiny.items():
        mod.on_test_epoch_end()  # what the test stage of train.py calls
        assert (tmp_path / f"{name}.json").exists()
        assert list(tmp_path.glob(f"{name}_*.png"))
        assert mod.metrics and all(math.isfinite(v) for v in mod.final_metrics().values())


def test_cli_run_writes_results_and_one_line_error(tmp_path):
    out = tmp_path / "run"
    run_cli(
        "train.py",
        "experiment=lazy_training",
        "module.m=20",
        "module.steps=100",
        "module.alphas=[1,10,100]",
        "module.n_test=64",
        f"hydra.run.dir={out}",
    )
    metrics = read_metrics(out)
    assert metrics["status"] == "ok"
    assert all(math.isfinite(v) for v in metrics.values() if isinstance(v, float))
    assert "relative_change_slope/relu" in metrics
    assert json.loads((out / "lazy_training.json").read_text())["alphas"] == [1.0, 10.0, 100.0]
    assert (out / "lazy_training_scaling.png").stat().st_size > 10_000
    bad = run_cli("train.py", "experiment=lazy_training", "module.alphas=[0,1]", check=False)
    assert bad.returncode == 2
    assert "module.alphas[0]=0 is out of range" in bad.stderr + bad.stdout


# --- studies, CNN lazy training, blockwise kernels -----------------------------------------
@pytest.mark.parametrize(
    "study, widths",
    [("meanfield_teacher_student", 8), ("meanfield_teacher_student_d100", 7)],
)
def test_teacher_student_studies_compose_one_job_per_width(study, widths):
    cfg = composed(f"study={study}")
    validate_config(cfg)
    swept = str(cfg.hydra.sweeper.params["module.width"]).split(",")
    assert len(swept) == widths and swept[0] == "5"
    assert cfg.module.seeds == 10 and cfg.study.rows == ["module.width"]
    mod = instantiate(cfg.module, width=int(swept[-1]))
    assert mod.widths == [int(swept[-1])] and mod.seeds == 10


def test_single_width_run_writes_the_keys_every_study_job_shares():
    mod = modules.MeanFieldTwoLayerModule(width=10, seeds=3, steps=300, plot_widths=[])
    mod.compute()
    m = mod.metrics
    assert mod.widths == [10] and m["m"] == 10
    assert m["converged_fraction"] == m["converged_fraction/m=10"]
    assert m["final_rel_loss_median"] == m["final_rel_loss_median/m=10"]
    assert 0 < m["final_rel_loss_median"] < 1 and "distance_median" in m


def test_kernel_never_holds_more_than_one_feature_block(monkeypatch):
    sizes = []
    draw = rf.sample_weights

    def recording(m, d, activation, generator=None):
        sizes.append(m)
        return draw(m, d, activation, generator)

    monkeypatch.setattr(rf, "sample_weights", recording)
    x = rf.sphere(30, 4, torch.Generator().manual_seed(0))
    k = rf.empirical_kernel(x, x, 5000, "relu", torch.Generator().manual_seed(1), block=1024)
    assert max(sizes) == 1024 and sum(sizes) == 5000 and len(sizes) == 5
    assert rf.relative_error(k, rf.limit_kernel(x, x, "relu")) < 0.05


def _tiny_cnn(n: int = 40, n_test: int = 20, channels: int = 4):
    x, y, x_test, _ = lc.load_digits_split(n, n_test, seed=0)
    p0 = lc.init_cnn(channels, 1, 8, 10, torch.Generator().manual_seed(3))
    return x, torch.nn.functional.one_hot(y, 10).float(), x_test, p0


def test_cnn_linearised_by_jvp_is_tangent_kernel_gradient_descent():
    x, y1, x_test, p0 = _tiny_cnn()
    x, y1, x_test = x.double(), y1.double(), x_test.double()
    p0 = {k: v.double() for k, v in p0.items()}
    lin = lc.linearised(lc.cnn_forward, p0, x, y1, x_test, 60, 0.2)

    def jac(xx: torch.Tensor) -> torch.Tensor:  # (n classes, P)
        j = torch.func.jacrev(lambda p: lc.cnn_forward(p, xx).flatten())(p0)
        return torch.cat([v.reshape(v.shape[0], -1) for v in j.values()], 1)

    j, j_test = jac(x), jac(x_test)
    ref = lz.linearised_predictions(j @ j.T, j_test @ j.T, y1.flatten(), 60, 0.2)
    assert torch.allclose(lin["train"].flatten(), ref["train"], atol=1e-10)
    assert torch.allclose(lin["test"].flatten(), ref["test"], atol=1e-10)
    assert lin["loss"][-1] < 0.5 * lin["loss"][0]  # it learns


def test_cnn_lazy_regime_in_alpha():
    mod = modules.LazyCNNModule(
        alphas=[0.01, 1, 10, 100], channels=8, n_train=100, n_test=100, steps=40
    )
    mod.compute()
    m, r = mod.metrics, mod.results
    # weights move like 1/alpha, activation patterns freeze, the network meets its
    # linearisation (test outputs and predicted classes)
    assert abs(m["relative_change_slope"] + 1) < 0.15
    assert r["relative_change"][0] > 10 * r["relative_change"][1]  # the active side moves more
    assert r["unchanged_patterns"] == sorted(r["unchanged_patterns"])
    assert r["unchanged_patterns"][-1] > 0.999 > r["unchanged_patterns"][0]
    gap = r["linear_gap"]
    assert gap[-1] < gap[1] / 10 and gap == sorted(gap, reverse=True)
    assert r["linear_agreement"][-1] >= max(0.98, r["linear_agreement"][0])
    assert m["test_acc/max_alpha"] == pytest.approx(m["linear_test_acc"], abs=0.02)
    assert r["step"] == [pytest.approx(0.02), 0.1, 0.1, 0.1]  # min(lr, lr_active alpha)


def test_double_vjp_jvp_equals_forward_mode_on_the_cnn():
    x, _, _, p0 = _tiny_cnn(n=20)
    x, p0 = x.double(), {k: v.double() for k, v in p0.items()}
    gen = torch.Generator().manual_seed(5)
    v = {k: torch.randn(t.shape, generator=gen, dtype=t.dtype) for k, t in p0.items()}
    r = torch.randn(20, 10, generator=gen, dtype=torch.float64)
    fwd = lc.LinearisedMap(lc.cnn_forward, p0, x, "func")
    dbl = lc.LinearisedMap(lc.cnn_forward, p0, x, "double_vjp")
    assert lc.LinearisedMap(lc.cnn_forward, p0, x).mode == "func"  # auto: forward mode
    assert fwd.jvp(v).abs().max() > 1  # not trivially zero
    assert torch.allclose(dbl.jvp(v), fwd.jvp(v), rtol=0, atol=1e-10)
    for k in p0:
        assert torch.allclose(dbl.vjp(r)[k], fwd.vjp(r)[k], rtol=0, atol=1e-10)
    # the kept graph is linear in u: a second product with another v is still exact
    v2 = {k: 2 * t + 1 for k, t in v.items()}
    assert torch.allclose(dbl.jvp(v2), fwd.jvp(v2), rtol=0, atol=1e-10)


def _tiny_scattering(n: int = 40, dtype: torch.dtype = torch.float64):
    x, y, x_test, _ = lc.load_digits_split(n, 20, seed=0)
    net, p0 = lc.init_scattering([4, 8], 4, x, seed=2, dtype=dtype)
    return net, p0, x.to(dtype), x_test.to(dtype)


def test_scattering_linearisation_matches_finite_differences():
    net, p0, x, _ = _tiny_scattering()
    fn = lc.functional_forward(net)
    lin = lc.LinearisedMap(fn, p0, x)
    # its custom autograd Functions have no forward mode: auto falls back to double vjp
    assert lin.mode == "double_vjp"
    with pytest.raises(RuntimeError):
        torch.func.jvp(lambda p: fn(p, x), (p0,), (p0,))
    gen = torch.Generator().manual_seed(1)
    v = {k: torch.randn(t.shape, generator=gen, dtype=t.dtype) for k, t in p0.items()}
    # h balances the O(h^2) error against the float32 pixel normalization of the first block
    # (Normalization computes its norm in float32: ~1e-7 noise / h); measured 1.4e-5
    h = 1e-4

    def f(s: float) -> torch.Tensor:
        return fn({k: p0[k] + s * v[k] for k in p0}, x).detach()

    fd = (f(h) - f(-h)) / (2 * h)
    jv = lin.jvp(v)
    assert (jv - fd).norm() < 1e-4 * fd.norm()
    # J^T is the adjoint of J
    r = torch.randn(jv.shape, generator=gen, dtype=jv.dtype)
    jtr = lin.vjp(r)
    assert float((jv * r).sum()) == pytest.approx(sum(float((jtr[k] * v[k]).sum()) for k in p0))
    # the phase-quadrant pattern: all unchanged at theta_0, some flip after a finite step
    assert lc.unchanged_phase_patterns(net, p0, p0, x) == 1.0
    moved = {k: p0[k] + 0.1 * v[k] for k in p0}
    assert 0.5 < lc.unchanged_phase_patterns(net, moved, p0, x) < 0.99
    assert torch.equal(
        dict(net.named_parameters())["blocks.0.proj.weight"], p0["blocks.0.proj.weight"]
    )


def test_scattering_lazy_regime_in_alpha():
    mod = modules.LazyCNNModule(
        alphas=[0.01, 1, 10, 100],
        network="scattering",
        widths=[4, 8],
        n_train=60,
        n_test=60,
        steps=20,
    )
    mod.compute()
    m, r = mod.metrics, mod.results
    assert r["linear_mode"] == "double_vjp" and r["network"] == "scattering"
    assert m["tangent_kernel_top"] < 2 / 0.1  # the default lr is stable
    # weight movement falls like 1/alpha, patterns freeze, the network meets its linearisation
    assert abs(m["relative_change_slope"] + 1) < 0.15
    assert r["relative_change"] == sorted(r["relative_change"], reverse=True)
    assert r["unchanged_patterns"] == sorted(r["unchanged_patterns"])
    assert r["unchanged_patterns"][-1] > 0.999
    gap = r["linear_gap"]
    assert gap[-1] < gap[1] / 10 and gap == sorted(gap, reverse=True)


def test_cnn_module_writes_json_and_panel(tmp_path):
    mod = modules.LazyCNNModule(
        alphas=[0.1, 1, 10], channels=4, n_train=30, n_test=30, steps=5, output_dir=str(tmp_path)
    )
    mod.on_test_epoch_end()
    assert (tmp_path / "lazy_training_cnn.json").exists()
    assert (tmp_path / "lazy_training_cnn_panel.png").stat().st_size > 10_000
    assert all(math.isfinite(v) for v in mod.final_metrics().values())


def test_cli_teacher_wider_than_the_student_is_one_line_error():
    bad = run_cli("train.py", "experiment=meanfield_teacher_student", "module.width=3", check=False)
    assert bad.returncode == 2
    lines = [ln for ln in (bad.stderr + bad.stdout).splitlines() if "module.m0" in ln]
    assert len(lines) == 1 and "add a student width >= module.m0" in lines[0]


def _jpeg_folders(root, per_class: int = 3, classes: int = 10) -> None:
    """A CIFAR-10-like JPEG tree root/{train,test}/<class>/*.jpg of random 32x32 images."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in range(classes):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(per_class):
                im = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(im).save(d / f"{i}.jpg", quality=95)


def test_cnn_panel_reads_a_cifar_jpeg_subset_and_keeps_its_step_stable(tmp_path):
    _jpeg_folders(tmp_path / "cifar")
    x, y, xt, yt = lc.load_cifar_split(str(tmp_path / "cifar"), 20, 10, seed=0)
    assert x.shape == (20, 3, 32, 32) and xt.shape == (10, 3, 32, 32)
    assert set(y.tolist()) <= set(range(10)) and len(yt) == 10
    assert abs(float(x.mean())) < 1.0  # normalised per channel, not raw [0, 1] pixels
    mod = modules.LazyCNNModule(
        alphas=[1, 10], channels=4, n_train=20, n_test=10, steps=5,
        data_root=str(tmp_path / "cifar"), output_dir=str(tmp_path),
    )  # fmt: skip
    mod.on_test_epoch_end()
    m = mod.final_metrics()
    assert m["lr"] * m["tangent_kernel_top"] <= 1.8 + 1e-9  # the step scaled to the data's kernel
    assert all(math.isfinite(v) for v in m.values())


def test_cnn_panel_without_the_cifar_folders_is_one_line_error(tmp_path):
    bad = run_cli(
        "train.py", "experiment=lazy_training_cnn", f"module.data_root={tmp_path}", check=False
    )
    assert bad.returncode == 2
    lines = [ln for ln in (bad.stderr + bad.stdout).splitlines() if "data_root" in ln]
    assert len(lines) == 1 and "tar xJf cifar10-jpeg.tar.xz" in lines[0]
