"""Score matching of the finest-scale conditional energy of phi^4 (CSLC / WC-RG, reduced).

Model (the phi^4 family, linear in its parameters theta = (kinetic, quadratic, quartic)):

    E_theta(x) = theta_kin sum_edges (x(u) - x(v))^2 / 2
                 + theta_2 sum_u x(u)^2 + theta_4 sum_u x(u)^4,

as a conditional energy of the details xbar_1 given x_1, x = W_1^T (x_1, xbar_1). phi^4 itself
is theta = (beta, -2, 1) (up to a constant), so at the finest scale the fit can be checked
against the true couplings. Hyvarinen's score matching of the conditional,

    J(theta) = E[ |grad_xbar E_theta|^2 / 2 - Laplacian_xbar E_theta ],

is quadratic in theta: theta* = E[G^T G]^{-1} E[h], with G = (W_d grad Phi_i) (the detail rows
W_d of the one-level transform applied to each feature's gradient) and h_i = tr(W_d Hess Phi_i
W_d^T): for the kinetic term tr(W_d (-Delta) W_d^T), for x^2: 2 * (3/4) L^2, for x^4:
sum_u 12 x(u)^2 (W_d^T W_d)_uu. The coarser scales need the renormalised energies (not
identifiable against a known truth) and are not fitted here.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scatterlab.multiscale.hessian import neg_laplacian
from scatterlab.multiscale.wavelets import wavelet_blocks, wavelet_matrix

FEATURES = ("kinetic", "quadratic", "quartic")


def feature_gradients(x: Tensor) -> Tensor:
    """Gradients of the three features. x: (B, L, L) -> (B, 3, L, L), float64."""
    x = x.double()
    nb = sum(torch.roll(x, s, d) for s in (1, -1) for d in (-1, -2))
    return torch.stack([4 * x - nb, 2 * x, 4 * x.pow(3)], dim=1)


def fit_conditional_phi4(x: Tensor, wavelet: str = "haar") -> dict[str, Tensor]:
    """Score-matching estimate of theta for E(xbar_1 | x_1) from fields x (B, L, L).

    Returns {"theta": (3,), "se": (3,) standard errors from the per-sample spread of the
    estimating equations, "a": (3, 3), "h": (3,)}."""
    size = x.shape[-1]
    w = wavelet_matrix(size, 1, wavelet)
    wd = w[wavelet_blocks(size, 1)["detail_1"]]  # (3 L^2 / 4, L^2)
    g = feature_gradients(x).reshape(x.shape[0], 3, -1) @ wd.T  # (B, 3, n_d)
    a_s = g @ g.transpose(-1, -2)  # (B, 3, 3)
    diag = (wd * wd).sum(0)  # (W_d^T W_d)_uu, (L^2,)
    t_kin = torch.trace(wd @ neg_laplacian(size) @ wd.T)
    x2 = x.double().reshape(x.shape[0], -1).pow(2)
    h_s = torch.stack(
        [
            t_kin.expand(x.shape[0]),
            torch.full((x.shape[0],), 2.0 * wd.shape[0], dtype=torch.float64),
            12 * (x2 * diag).sum(-1),
        ],
        dim=-1,
    )  # (B, 3)
    a, h = a_s.mean(0), h_s.mean(0)
    theta = torch.linalg.solve(a, h)
    # sandwich standard errors of the M-estimator: per-sample residuals A_s theta - h_s
    res = (a_s @ theta - h_s).reshape(x.shape[0], 3)
    cov = torch.linalg.inv(a) @ (res.T @ res / x.shape[0]) @ torch.linalg.inv(a).T
    return {"theta": theta, "se": (cov.diagonal() / x.shape[0]).sqrt(), "a": a, "h": h}
