"""Rainbow networks (Guth, Menard, Rochette, Mallat): alignment, weight covariances, resampling.

Plain torch math: `stats` (streaming moments, Procrustes alignment), `weights` (covariances,
spectra, Gaussian sampling, clipping), `network` (layer-by-layer resampling of learned
scattering networks with real P_j).
"""

from scatterlab.rainbow.network import (
    block_input_alignment,
    clip_layer,
    evaluate,
    layer_covariances,
    parse_layers,
    reestimate_statistics,
    resample,
    retrain_head,
    width_alignment,
    width_cka,
)
from scatterlab.rainbow.stats import MomentAccumulator, align, procrustes, standardized_alignment
from scatterlab.rainbow.weights import (
    clip_to_top_k,
    gaussianity,
    marchenko_pastur_outside,
    random_orthogonal,
    sample_rows,
    spectrum,
    weight_covariance,
)

__all__ = [
    "MomentAccumulator",
    "align",
    "block_input_alignment",
    "clip_layer",
    "clip_to_top_k",
    "evaluate",
    "gaussianity",
    "layer_covariances",
    "marchenko_pastur_outside",
    "parse_layers",
    "procrustes",
    "random_orthogonal",
    "reestimate_statistics",
    "resample",
    "retrain_head",
    "sample_rows",
    "spectrum",
    "standardized_alignment",
    "weight_covariance",
    "width_alignment",
    "width_cka",
]
