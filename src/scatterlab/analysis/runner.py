"""One analysis of a classifier: two streaming passes over fixed images, all measures.

Pass 1 (`fit` images): per-layer per-class moments (-> within/between variance, NC1, class
means, the ridge probe). Pass 2 (`eval` images): nearest-class-mean and probe accuracy,
NC4 (classifier vs nearest class centre), and the features of the first `keep` images for CKA
and mutual information. Nothing else is stored: memory is O(layers * K * max_dim^2 +
keep * max_dim).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from scatterlab.analysis.cka import cka_matrix
from scatterlab.analysis.hooks import LayerCapture, classifier_name, default_layers
from scatterlab.analysis.information import binning_mi, discretize, kde_mi
from scatterlab.analysis.moments import ClassMoments, RidgeProbe, collapse, ncm_predict, separation
from scatterlab.errors import ConfigError

MEASURES = ("separation", "probe", "collapse", "cka", "information")

Batches = Iterable[tuple[Tensor, Tensor]]


def check_labels(batches: Sequence[Any]) -> None:
    """ConfigError unless batches are (x, y) with integer class labels y (B,)."""
    for b in batches:
        ok = isinstance(b, tuple | list) and len(b) >= 2 and isinstance(b[1], Tensor)
        if not ok or b[1].ndim != 1 or b[1].dtype.is_floating_point or b[1].is_complex():
            raise ConfigError(
                "the analysis needs labelled classification batches (images, integer labels); "
                "this run's data has none: remove callbacks=analysis or use a classification "
                "data set"
            )


def analyze(
    net: nn.Module,
    fit_batches: Sequence[tuple[Tensor, Tensor]],
    eval_batches: Sequence[tuple[Tensor, Tensor]],
    num_classes: int,
    layers: Sequence[str] | None = None,
    measures: Sequence[str] = MEASURES,
    max_dim: int = 512,
    ridge: float = 1e-3,
    keep: int = 256,
    mi_bins: int | None = 30,
    mi_range: Sequence[float] | None = (-1.0, 1.0),
    mi_bin_size: float | None = None,
    kde_noise_variance: float = 1e-1,
    kde_images: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Measures of `net`'s layers (see the module docstring). Batches: (x (B, ...), y (B,)) on
    the net's device. Returns {"layers": {spec: {measure: value}}, "classifier": {...},
    "cka_linear"/"cka_rbf": {"layers": [...], "matrix": [[...]]}}; the net's train/eval mode
    is restored. Binning uses all `keep` kept images, the KDE the first `kde_images` of them
    (its cost is O(kde_images^2) per layer).
    """
    unknown = set(measures) - set(MEASURES)
    if unknown:
        raise ConfigError(
            f"unknown analysis measure(s) {sorted(unknown)}: choose from {', '.join(MEASURES)}"
        )
    check_labels(fit_batches)
    check_labels(eval_batches)
    specs = list(layers) if layers else default_layers(net)
    clf = classifier_name(net)
    clf_in = f"{clf}:in" if clf is not None else None
    clf_out = f"{clf}:out" if clf is not None else None
    extra = [s for s in (clf_in, clf_out) if s is not None and s not in specs]
    capture = LayerCapture(net, specs + extra, max_dim, seed)
    moment_specs = specs + ([clf_in] if clf_in in extra else [])
    need_moments = bool({"separation", "probe", "collapse"} & set(measures))
    moments: dict[str, ClassMoments] = {}

    was_training = net.training
    net.eval()
    try:
        with torch.no_grad(), capture.attached(net):
            if need_moments:
                for x, y in fit_batches:
                    net(x)
                    for s in moment_specs:
                        f = capture.features[s]
                        if s not in moments:
                            moments[s] = ClassMoments(num_classes, f.shape[1])
                        moments[s].update(f, y)
            results = _eval_pass(
                net, capture, eval_batches, moments, specs, clf_in, clf_out, measures,
                ridge, keep,
            )  # fmt: skip
    finally:
        net.train(was_training)

    layers_out, kept, kept_y = results["layers"], results.pop("kept"), results.pop("kept_y")
    for s in specs:
        layers_out[s]["dim"] = capture.dims[s]
        layers_out[s]["sketched"] = capture.sketches[s] is not None
        if "separation" in measures:
            layers_out[s].update(separation(moments[s]))
    if "collapse" in measures and clf_in is not None:
        weight = dict(net.named_modules())[clf].weight
        results["classifier"].update(
            collapse(moments[clf_in], capture.project(clf_in, weight.detach()).cpu())
        )
    if "information" in measures and kept_y is not None:
        for s in specs:
            sym = discretize(kept[s], mi_bins, tuple(mi_range) if mi_range else None, mi_bin_size)
            b = binning_mi(sym, kept_y)
            n_kde = len(kept_y) if kde_images is None else kde_images
            k = kde_mi(kept[s][:n_kde], kept_y[:n_kde], kde_noise_variance)
            layers_out[s].update(
                {"ixt_bin": b["ixt"], "ity_bin": b["ity"], "ixt_kde": k["ixt"], "ity_kde": k["ity"]}
            )
    if "cka" in measures and kept_y is not None:
        feats = {s: kept[s] for s in specs}
        for kind in ("linear", "rbf"):
            rows, _, mat = cka_matrix(feats, kind=kind)
            results[f"cka_{kind}"] = {"layers": rows, "matrix": mat.tolist()}
    results["images"] = {
        "fit": sum(len(y) for _, y in fit_batches) if need_moments else 0,
        "eval": sum(len(y) for _, y in eval_batches),
        "kept": 0 if kept_y is None else len(kept_y),
    }
    return results


def _eval_pass(
    net, capture, batches, moments, specs, clf_in, clf_out, measures, ridge, keep
) -> dict[str, Any]:
    means = {s: m.means() for s, m in moments.items()}
    classes = {s: m.present.nonzero().flatten() for s, m in moments.items()}
    probes = {}
    if "probe" in measures:
        probes = {s: RidgeProbe(moments[s], ridge) for s in specs}
    hits = {s: {"ncm": 0, "probe": 0} for s in specs}
    nc4_mismatch, clf_correct, total = 0, 0, 0
    kept: dict[str, list[Tensor]] = {s: [] for s in specs}
    kept_y: list[Tensor] = []
    n_kept = 0
    for x, y in batches:
        net(x)
        y_cpu = y.cpu()
        total += len(y)
        for s in specs:
            f = capture.features[s].cpu()
            if s in means:
                pred = classes[s][ncm_predict(means[s], f)]
                hits[s]["ncm"] += int((pred == y_cpu).sum())
            if s in probes:
                hits[s]["probe"] += int((probes[s].predict(f) == y_cpu).sum())
            if n_kept < keep:
                kept[s].append(f[: keep - n_kept].double())
        if n_kept < keep:
            kept_y.append(y_cpu[: keep - n_kept])
            n_kept += len(kept_y[-1])
        if clf_out is not None:
            logits = capture.features[clf_out].cpu()
            clf_pred = logits.argmax(1)
            clf_correct += int((clf_pred == y_cpu).sum())
            if clf_in in means:
                ncc = classes[clf_in][ncm_predict(means[clf_in], capture.features[clf_in].cpu())]
                nc4_mismatch += int((ncc != clf_pred).sum())
    layers_out: dict[str, dict[str, Any]] = {s: {} for s in specs}
    for s in specs:
        if s in means:
            layers_out[s]["ncm_acc"] = hits[s]["ncm"] / total
        if s in probes:
            layers_out[s]["probe_acc"] = hits[s]["probe"] / total
    classifier: dict[str, Any] = {"layer": clf_in}
    if clf_out is not None and total:
        classifier["acc"] = clf_correct / total
        if clf_in in means and "collapse" in measures:
            classifier["nc4"] = nc4_mismatch / total
    return {
        "layers": layers_out,
        "classifier": classifier,
        "kept": {s: torch.cat(v) if v else torch.empty(0) for s, v in kept.items()},
        "kept_y": torch.cat(kept_y) if kept_y else None,
    }


def flat_scalars(result: dict[str, Any], prefix: str = "analysis") -> dict[str, float]:
    """The finite scalar measures of one analysis as {"analysis/<layer>/<measure>": value}."""
    out = {}
    for spec, vals in result.get("layers", {}).items():
        for k, v in vals.items():
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
                out[f"{prefix}/{spec}/{k}"] = float(v)
    for k, v in result.get("classifier", {}).items():
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
            out[f"{prefix}/classifier/{k}"] = float(v)
    return out


def collect_features(
    net: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    layers: Sequence[str] | None = None,
    max_dim: int = 512,
    seed: int = 0,
) -> dict[str, Tensor]:
    """Features (N, d) (float64 on the CPU, sketched past max_dim) of `layers` on all batches.

    For CKA between two networks: with the same batches, layers and seed the two nets' layers
    of equal width get the same sketch, so
    `cka_matrix(collect_features(a, b), collect_features(c, b))` compares them layer by layer.
    Memory O(N * max_dim) per layer.
    """
    specs = list(layers) if layers else default_layers(net)
    capture = LayerCapture(net, specs, max_dim, seed)
    out: dict[str, list[Tensor]] = {s: [] for s in specs}
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad(), capture.attached(net):
            for x, *_ in batches:
                net(x)
                for s in specs:
                    out[s].append(capture.features[s].cpu().double())
    finally:
        net.train(was_training)
    return {s: torch.cat(v) for s, v in out.items()}
