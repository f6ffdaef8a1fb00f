"""Looking inside trained networks (plain torch, no Lightning).

- `moments`: streaming float64 per-class moments; within/between-class variance, NC1-NC3,
  nearest-class-mean and closed-form ridge probes.
- `cka`: linear and RBF centred kernel alignment.
- `information`: I(X;T), I(T;Y) by binning and by the KDE upper bound.
- `hooks`: layer names, defaults per architecture, forward-hook capture with count sketching.
- `runner.analyze`: one analysis of a classifier on fixed images (what the callback calls).
"""

from scatterlab.analysis.cka import cka_matrix, gram_rbf, linear_cka, rbf_cka
from scatterlab.analysis.hooks import (
    CountSketch,
    LayerCapture,
    classifier_name,
    default_layers,
    resolve,
)
from scatterlab.analysis.information import binning_mi, discretize, kde_lower_mi, kde_mi
from scatterlab.analysis.moments import (
    ClassMoments,
    RidgeProbe,
    collapse,
    ncm_predict,
    pinv_rank,
    separation,
)
from scatterlab.analysis.runner import (
    MEASURES,
    analyze,
    check_labels,
    collect_features,
    flat_scalars,
)

__all__ = [
    "MEASURES",
    "ClassMoments",
    "CountSketch",
    "LayerCapture",
    "RidgeProbe",
    "analyze",
    "binning_mi",
    "check_labels",
    "cka_matrix",
    "classifier_name",
    "collapse",
    "collect_features",
    "default_layers",
    "discretize",
    "flat_scalars",
    "gram_rbf",
    "kde_lower_mi",
    "kde_mi",
    "linear_cka",
    "ncm_predict",
    "pinv_rank",
    "rbf_cka",
    "resolve",
    "separation",
]
