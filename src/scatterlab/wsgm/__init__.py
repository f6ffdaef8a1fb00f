"""Wavelet score-based generative models (WSGM) and phi^4 fields, in plain torch."""

from scatterlab.wsgm.diffusion import EMA, SGM, WSGM, OUDiffusion, ScoreModel, time_grid
from scatterlab.wsgm.dwt import DWT2d, check_size
from scatterlab.wsgm.metrics import (
    energy_per_site,
    histogram_distance,
    radial_average,
    radial_power_spectrum,
    spectrum_error,
    spectrum_error_l2,
)
from scatterlab.wsgm.nets import ScoreUNet
from scatterlab.wsgm.phi4 import (
    HMCSampler,
    Phi4Config,
    gaussian_spectrum,
    generate_phi4,
    phi4_energy,
    sample_gaussian_field,
)

__all__ = [
    "DWT2d",
    "EMA",
    "HMCSampler",
    "OUDiffusion",
    "Phi4Config",
    "SGM",
    "ScoreModel",
    "ScoreUNet",
    "WSGM",
    "check_size",
    "energy_per_site",
    "gaussian_spectrum",
    "generate_phi4",
    "histogram_distance",
    "phi4_energy",
    "radial_average",
    "radial_power_spectrum",
    "sample_gaussian_field",
    "spectrum_error",
    "spectrum_error_l2",
    "time_grid",
]
