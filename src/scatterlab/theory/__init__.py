"""Mean-field theory of deep random networks, in plain torch (float64, no Lightning).

- `MeanField`: length map q, C-map c, fixed points q*, c*, chi_1, chi_c, chi_2, depth scales
  xi_q, xi_c, the curvature recursion, phase diagrams and the critical line (meanfield.py).
- `jacobian_spectrum`, `spectrum_theory`, `mu_k`: input-output Jacobian spectra of finite random
  networks and their free-probability moments (jacobian.py).
- `propagate_pair`, `propagate_circle`: measured q^l, c^l, length and curvature (simulate.py).
- `trainable_depth`: the depth factor * xi_c up to which a random network trains
  (trainability.py; the theory line of the trainability study's heat map).
- `closed_forms`, `quadrature`: the Gaussian integrals.
"""

from scatterlab.theory.activations import PHIS, Phi, get_phi
from scatterlab.theory.jacobian import jacobian, jacobian_spectrum, mu_k, spectrum_theory
from scatterlab.theory.meanfield import MeanField
from scatterlab.theory.simulate import propagate_circle, propagate_pair
from scatterlab.theory.trainability import trainable_depth

__all__ = [
    "PHIS",
    "MeanField",
    "Phi",
    "get_phi",
    "jacobian",
    "jacobian_spectrum",
    "mu_k",
    "propagate_circle",
    "propagate_pair",
    "spectrum_theory",
    "trainable_depth",
]
