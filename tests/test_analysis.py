"""scatterlab.analysis against closed forms: information, neural collapse, CKA, moments."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from scatterlab.analysis import (
    ClassMoments,
    CountSketch,
    RidgeProbe,
    analyze,
    binning_mi,
    check_labels,
    cka_matrix,
    collapse,
    collect_features,
    discretize,
    kde_lower_mi,
    kde_mi,
    linear_cka,
    rbf_cka,
    resolve,
    separation,
)
from scatterlab.errors import ConfigError
from scatterlab.models import MLP

pytestmark = pytest.mark.usefixtures("one_thread")


def all_patterns(bits: int = 12) -> torch.Tensor:
    """Every `bits`-bit pattern once: (2^bits, bits) in {0, 1}."""
    n = torch.arange(2**bits)
    return ((n[:, None] >> torch.arange(bits)) & 1).double()


def entropy_bits(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


# ---------------------------------------------------------------- information
def test_binning_deterministic_T_gives_H_T_exactly() -> None:
    x = all_patterns()
    k = x.sum(1, keepdim=True)  # T = number of active bits: Binomial(12, 1/2)
    counts = np.array([math.comb(12, i) for i in range(13)], float)
    h_t = entropy_bits(counts / counts.sum())
    y = (k[:, 0] >= 6).long()  # Y a function of T: I(T;Y) = H(Y)
    p1 = counts[6:].sum() / counts.sum()
    mi = binning_mi(discretize(k, bin_size=1.0), y)
    assert mi["ixt"] == pytest.approx(h_t, abs=1e-12)
    assert mi["ity"] == pytest.approx(entropy_bits(np.array([p1, 1 - p1])), abs=1e-12)
    # T = X: all 12 bits; a constant T: nothing. Fixed-range bins: 30 bins over [-1, 1].
    assert binning_mi(discretize(x, 30, (-1, 1)), y)["ixt"] == pytest.approx(12.0, abs=1e-12)
    assert binning_mi(discretize(torch.zeros(4096, 3)), y)["ixt"] == 0.0


def test_discretize_fixed_range_and_bin_size() -> None:
    h = torch.tensor([[-1.0, -0.999, 0.0, 0.999, 1.0, 5.0]]).T
    assert discretize(h, 2, (-1, 1)).flatten().tolist() == [0, 0, 1, 1, 1, 1]
    assert discretize(h, bin_size=0.5).flatten().tolist() == [-2, -2, 0, 1, 2, 10]


def test_kde_bound_on_gaussian_channel_matches_closed_form() -> None:
    """X ~ N(0, v I_d), T = X + N(0, s2 I_d). True I = (d/2) ln(1 + v/s2). As P grows the
    pairwise-KL upper bound tends to (d/2) ln(1 + v/s2) + (d/2) v/(v + s2) and the
    Bhattacharyya lower bound to (d/2) ln(1 + v/(4 s2)) + (d/2) v/(4 s2 + v)."""
    d, v, s2, P = 2, 1.0, 0.5, 3000
    g = torch.Generator().manual_seed(0)
    h = torch.randn(P, d, generator=g, dtype=torch.float64) * math.sqrt(v)
    y = torch.zeros(P, dtype=torch.long)
    true = d / 2 * math.log(1 + v / s2) / math.log(2)
    upper = (d / 2 * math.log(1 + v / s2) + d / 2 * v / (v + s2)) / math.log(2)
    lower = (d / 2 * math.log(1 + v / (4 * s2)) + d / 2 * v / (4 * s2 + v)) / math.log(2)
    est_up, est_low = kde_mi(h, y, s2)["ixt"], kde_lower_mi(h, s2)
    assert est_up == pytest.approx(upper, rel=0.03)
    assert est_low == pytest.approx(lower, rel=0.03)
    assert est_low < true < est_up
    assert kde_mi(h, y, s2)["ity"] == pytest.approx(0.0, abs=1e-12)  # one class: no I(T;Y)


def test_kde_limits() -> None:
    y = torch.tensor([0, 1] * 128)
    assert kde_mi(torch.ones(256, 3), y, 1e-3)["ixt"] == pytest.approx(0.0, abs=1e-12)
    far = torch.arange(256, dtype=torch.float64)[:, None] * 100
    assert kde_mi(far, y, 1e-3)["ixt"] == pytest.approx(8.0, abs=1e-9)  # log2 P
    two = torch.tensor([[0.0], [1.0]], dtype=torch.float64)  # distance D = 1
    expect = (math.log(2) - math.log(1 + math.exp(-1 / (2 * 0.3)))) / math.log(2)
    assert kde_mi(two, torch.tensor([0, 1]), 0.3)["ixt"] == pytest.approx(expect, abs=1e-12)


# ---------------------------------------------------------------- moments and collapse
def simplex_etf(K: int, D: int, radius: float, seed: int = 0) -> torch.Tensor:
    """K x D rows: a simplex ETF of norm `radius`, rotated into D dims."""
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(D, K, generator=g, dtype=torch.float64))
    M = math.sqrt(K / (K - 1)) * (torch.eye(K, dtype=torch.float64) - 1 / K)
    return radius * (U @ M).T


def moments_of(h: torch.Tensor, y: torch.Tensor, K: int, chunk: int = 97) -> ClassMoments:
    m = ClassMoments(K, h.shape[1])
    for i in range(0, len(y), chunk):
        m.update(h[i : i + chunk], y[i : i + chunk])
    return m


def test_perfect_collapse_gives_zero_nc_and_an_etf() -> None:
    K, D = 10, 32
    means = simplex_etf(K, D, 3.0) + 7.0  # an offset global mean: everything is centred
    y = torch.arange(K).repeat(20)
    m = moments_of(means[y], y, K)
    W = means - means.mean(0)  # self-dual classifier
    nc = collapse(m, W)
    for key in ("nc1", "nc3", "nc2_equinorm_means", "nc2_equiangular_means"):
        assert abs(nc[key]) < 1e-10, key
    assert abs(nc["nc2_maxangle_means"]) < 1e-10 and abs(nc["nc2_maxangle_weights"]) < 1e-10
    # NC4 through a real net: classifier argmax agrees with the nearest class centre
    net = nn.Sequential(nn.Identity(), nn.Linear(D, K))
    with torch.no_grad():
        net[1].weight.copy_(W)
        net[1].bias.copy_(-(W @ means.mean(0)))
    batches = [(means[y].float(), y)]
    r = analyze(net, batches, batches, K, layers=["0"], measures=["separation", "collapse"])
    assert r["classifier"]["nc4"] == 0.0 and r["classifier"]["acc"] == 1.0
    assert r["layers"]["0"]["ncm_acc"] == 1.0 and r["layers"]["0"]["nc1"] < 1e-6


def test_nc1_closed_form_isotropic_noise_around_etf() -> None:
    """Sigma_W = s^2 I, ETF means of radius r: NC1 = s^2 (K - 1)^2 / (K r^2)."""
    K, D, r, s, n = 10, 16, 3.0, 0.3, 2000
    g = torch.Generator().manual_seed(1)
    y = torch.arange(K).repeat(n)
    h = simplex_etf(K, D, r)[y] + s * torch.randn(len(y), D, generator=g, dtype=torch.float64)
    nc1 = separation(moments_of(h, y, K, chunk=4096))["nc1"]
    assert nc1 == pytest.approx(s**2 * (K - 1) ** 2 / (K * r**2), rel=0.03)
    nc = collapse(moments_of(h, y, K, chunk=4096))
    assert 0 < nc["nc2_equinorm_means"] < 0.02 and nc["nc2_maxangle_means"] < 0.02


def test_within_between_ratio_of_two_gaussians() -> None:
    """Two classes, N(mu_0, Sigma_0), N(mu_1, Sigma_1), equal counts:
    tr Sigma_W = (tr Sigma_0 + tr Sigma_1)/2, tr Sigma_B = ||mu_0 - mu_1||^2 / 4."""
    n, D = 20000, 3
    g = torch.Generator().manual_seed(2)
    c0 = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    a = torch.tensor([[1.0, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.3, 0.5]], dtype=torch.float64)
    mu0 = torch.tensor([1e6, 0.0, 0.0], dtype=torch.float64)  # far from 0: cancellation test
    mu1 = mu0 + torch.tensor([2.0, 2.0, 1.0], dtype=torch.float64)
    h0 = mu0 + torch.randn(n, D, generator=g, dtype=torch.float64) @ c0.sqrt()
    h1 = mu1 + torch.randn(n, D, generator=g, dtype=torch.float64) @ a.T
    h = torch.cat([h0, h1])
    y = torch.cat([torch.zeros(n), torch.ones(n)]).long()
    perm = torch.randperm(2 * n, generator=g)
    sep = separation(moments_of(h[perm], y[perm], 2, chunk=1000))
    within = (6.0 + float(torch.trace(a @ a.T))) / 2
    between = 9.0 / 4
    assert sep["within"] == pytest.approx(within, rel=0.02)
    assert sep["between"] == pytest.approx(between, rel=0.02)
    assert sep["ratio"] == pytest.approx(within / between, rel=0.03)


def test_streaming_equals_one_batch_and_probes_separate() -> None:
    g = torch.Generator().manual_seed(3)
    K, D = 4, 6
    y = torch.randint(0, K, (1000,), generator=g)
    h = 3 * torch.eye(K, D, dtype=torch.float64)[y] + torch.randn(1000, D, generator=g).double()
    a, b = moments_of(h, y, K, chunk=7), moments_of(h, y, K, chunk=1000)
    assert torch.allclose(a.within(), b.within(), atol=1e-10)
    assert torch.allclose(a.within() + _weighted_between(a), a.total(), atol=1e-10)
    probe = RidgeProbe(a)
    # Bayes accuracy of these Gaussians is ~0.93: both linear rules must be close to it.
    assert (probe.predict(h) == y).double().mean() > 0.85


def _weighted_between(m: ClassMoments) -> torch.Tensor:
    p = m.count / m.count.sum()
    M = m.means() - m.global_mean()
    return (M.T * p) @ M


# ---------------------------------------------------------------- CKA
def test_cka_reference_values_and_invariances() -> None:
    rs = np.random.RandomState(1337)  # numpy's legacy stream = np.random.seed(1337)
    X = rs.randn(100, 10)
    Y = rs.randn(100, 10) + X
    x, y = torch.from_numpy(X), torch.from_numpy(Y)
    assert linear_cka(x, y) == pytest.approx(0.55761, abs=1e-5)
    assert rbf_cka(x, y, 0.5) == pytest.approx(0.65483, abs=1e-5)
    Q, _ = torch.linalg.qr(torch.randn(10, 10, dtype=torch.float64))
    for kind in (linear_cka, rbf_cka):
        assert kind(x, x @ Q * 3.0) == pytest.approx(1.0, abs=1e-10)
        assert kind(x, y @ Q * 0.1) == pytest.approx(kind(x, y), abs=1e-10)
    A = torch.randn(10, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert abs(linear_cka(x, x @ A) - 1.0) > 0.05  # not invariant to invertible maps


def test_cka_of_independent_features_is_near_zero() -> None:
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(2000, 8, generator=g), torch.randn(2000, 8, generator=g)
    # biased CKA: E > 0 by about (effective rank) / n; RBF's kernel has a higher rank
    assert linear_cka(x, y) < 0.02 and rbf_cka(x, y) < 0.05
    assert rbf_cka(x, x + 0.5 * y) > 0.5
    # wide features (p > n) take the Gram path: same value as the feature form
    w = torch.randn(50, 300, generator=g, dtype=torch.float64)
    v = w[:, :200] + 0.5 * torch.randn(50, 200, generator=g, dtype=torch.float64)
    wc, vc = w - w.mean(0), v - v.mean(0)
    feature_form = (vc.T @ wc).square().sum() / ((wc.T @ wc).norm() * (vc.T @ vc).norm())
    assert linear_cka(w, v) == pytest.approx(float(feature_form), abs=1e-12)


def test_count_sketch_keeps_inner_products() -> None:
    g = torch.Generator().manual_seed(5)
    a = torch.randn(2, 20000, generator=g)
    sk = CountSketch(20000, 512, seed=0)
    sa = sk(a)
    assert sa.shape == (2, 512)
    assert (sa[0] @ sa[0]) / (a[0] @ a[0]) == pytest.approx(1.0, abs=0.2)
    assert abs(float(sa[0] @ sa[1]) - float(a[0] @ a[1])) < 0.2 * float(a[0].norm() * a[1].norm())


# ---------------------------------------------------------------- user errors
def test_unknown_layer_and_unlabelled_data_are_one_line_config_errors() -> None:
    net = MLP(2, 12, 1, widths=[10, 7])
    with pytest.raises(ConfigError) as e:
        resolve(net, ["layers.0", "layers.7"])
    msg = str(e.value)
    assert "layers.7" in msg and "\n" not in msg and "layers.0, layers.1" in msg
    with pytest.raises(ConfigError) as e:
        check_labels([(torch.randn(4, 12), torch.randn(4))])  # regression targets, not labels
    assert "labelled" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConfigError):
        check_labels([torch.randn(4, 12)])  # images only
    with pytest.raises(ConfigError, match="unknown analysis measure"):
        analyze(net, [], [], 2, measures=["nc5"])


def test_analyze_mlp_layers_end_to_end() -> None:
    torch.manual_seed(0)
    x = all_patterns().float()
    y = (x.sum(1) >= 6).long()
    net = MLP(2, 12, 1, widths=[10, 7, 5, 4, 3], activation="tanh")
    batches = [(x[i : i + 1024], y[i : i + 1024]) for i in range(0, 4096, 1024)]
    r = analyze(net, batches, batches, 2, keep=512)
    assert list(r["layers"]) == [f"layers.{i}" for i in range(5)]
    for i, vals in enumerate(r["layers"].values()):
        assert vals["dim"] == [10, 7, 5, 4, 3][i] and not vals["sketched"]
        # plug-in entropies of 512 images: at most log2(512) = 9 bits
        assert 0 <= vals["ixt_bin"] <= 9 + 1e-9 and 0 <= vals["ity_bin"] <= vals["ixt_bin"]
        assert 0 <= vals["ixt_kde"] <= 9 + 1e-9 and 0.5 < vals["probe_acc"] <= 1
    # the CKA of a layer with itself is 1
    assert all(abs(r["cka_linear"]["matrix"][i][i] - 1) < 1e-12 for i in range(5))
    assert r["images"] == {"fit": 4096, "eval": 4096, "kept": 512}


def test_cka_between_two_nets_is_one_for_a_rotated_copy() -> None:
    """Two MLPs whose first layer differs by an orthogonal map Q of its outputs (the next
    layer absorbs Q^T): linear CKA of layers.0 (linear activation) is 1, layers.1 equal."""
    torch.manual_seed(0)
    a = MLP(2, 12, 1, widths=[8, 6], activation="linear")
    b = MLP(2, 12, 1, widths=[8, 6], activation="linear")
    b.load_state_dict(a.state_dict())
    Q, _ = torch.linalg.qr(torch.randn(8, 8))
    with torch.no_grad():
        b.layers[0].linear.weight.copy_(Q @ a.layers[0].linear.weight)
        b.layers[0].linear.bias.copy_(Q @ a.layers[0].linear.bias)
        b.layers[1].linear.weight.copy_(a.layers[1].linear.weight @ Q.T)
    x = all_patterns().float()[:512]
    batches = [(x[:256], None), (x[256:], None)]
    fa, fb = collect_features(a, batches), collect_features(b, batches)
    _, _, mat = cka_matrix(fa, fb)
    assert mat[0, 0] == pytest.approx(1.0, abs=1e-6) and mat[1, 1] == pytest.approx(1.0, abs=1e-6)
    assert not torch.allclose(fa["layers.0"], fb["layers.0"])  # different features, same CKA


def test_default_layers_per_architecture() -> None:
    from scatterlab.analysis import classifier_name, default_layers
    from scatterlab.models import LearnedScattering, ResNet18

    scat = LearnedScattering(10, 1, 8, widths=[8, 8])
    assert default_layers(scat) == ["blocks.0.proj:in", "blocks.0", "blocks.1.proj:in", "blocks.1"]
    assert classifier_name(scat) == "classifier.linear"
    resnet = ResNet18(10, 3)
    assert default_layers(resnet) == ["layer1", "layer2", "layer3", "layer4"]
    assert classifier_name(resnet) == "fc"
    mlp = MLP(2, 12, 1, widths=[4, 3])
    assert default_layers(mlp) == ["layers.0", "layers.1"] and classifier_name(mlp) == "classifier"

    class WithHook(nn.Module):  # a new model plugs in through analysis_layers()
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(3, 3), nn.Linear(3, 2)

        def analysis_layers(self) -> list[str]:
            return ["a:in", "a"]

    assert default_layers(WithHook()) == ["a:in", "a"]
    with pytest.raises(ConfigError, match="no default analysis layers"):
        default_layers(nn.Sequential(nn.Linear(3, 2)))
