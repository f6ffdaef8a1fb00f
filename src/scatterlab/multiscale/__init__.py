"""Multiscale generative models beyond WSGM, in plain torch (issue 25).

- ``wavelets``: orthogonal periodic wavelet transforms as dense matrices (small lattices).
- ``hessian``: the phi^4 Hessian (closed form and autograd), conditional-energy Hessians in
  wavelet coordinates, Gaussian marginal precisions per scale (claim 1: conditional
  log-concavity).
- ``steps``: the exact KL error of exact-score SGM and WSGM on Gaussian fields against the
  number of sampling steps (claim 3: steps vs size).
"""

from scatterlab.multiscale.hessian import (
    conditional_block,
    gaussian_marginal_precision,
    gaussian_scale_table,
    min_eigenvalue,
    neg_laplacian,
    phi4_hessian,
    phi4_hessian_autograd,
    phi4_min_eigenvalues,
)
from scatterlab.multiscale.steps import (
    SGMTerms,
    WSGMTerms,
    ddpm_gaussian,
    kl_gauss,
    power_law_spectrum,
    steps_needed,
)
from scatterlab.multiscale.wavelets import wavelet_blocks, wavelet_matrix

__all__ = [
    "SGMTerms",
    "WSGMTerms",
    "conditional_block",
    "ddpm_gaussian",
    "gaussian_marginal_precision",
    "gaussian_scale_table",
    "kl_gauss",
    "min_eigenvalue",
    "neg_laplacian",
    "phi4_hessian",
    "phi4_hessian_autograd",
    "phi4_min_eigenvalues",
    "power_law_spectrum",
    "steps_needed",
    "wavelet_blocks",
    "wavelet_matrix",
]
