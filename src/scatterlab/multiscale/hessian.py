"""Hessians of phi^4 and Gaussian energies in pixel and orthogonal wavelet coordinates.

phi^4 energy (``scatterlab.wsgm.phi4_energy``, each nearest-neighbour pair counted once):

    E(x) = beta/2 sum_{u, d} (x(u + e_d) - x(u))^2 + sum_u V(x(u)),  V(x) = (x^2 - 1)^2,

so its Hessian is the closed form H(x) = beta (-Delta) + diag(V''(x)), V''(x) = 12 x^2 - 4, with
-Delta = 4 I - (periodic nearest-neighbour adjacency); V = mass2 x^2 gives the Gaussian field,
H = beta (-Delta) + 2 mass2 I. H has negative eigenvalues where V'' < 0 (|x| < 1/sqrt(3)) on a
region large enough to beat the Laplacian: E is not convex.

Conditional energies (Guth, Lempereur, Bruna & Mallat 2023): with the one-level orthogonal
transform x_{j-1} -> (x_j, xbar_j), p(xbar_j | x_j) is proportional to p_{j-1}(x_{j-1}), so
the Hessian of E(xbar_j | x_j) = -log p(xbar_j | x_j) is the detail-detail block of
W_1 H_{j-1} W_1^T, H_{j-1} the Hessian of the energy of x_{j-1}. At j = 1 that energy is E
itself (exact for phi^4). At j >= 2 it is the renormalised energy -log p_{j-1}, known in
closed form only for Gaussian fields: precision K_{j-1} = (A K^{-1} A^T)^{-1}, A the rows of
the (j-1)-level low-pass (a Schur complement of K).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from scatterlab.multiscale.wavelets import wavelet_blocks, wavelet_matrix


def neg_laplacian(size: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """-Delta on the periodic size x size lattice, (size^2, size^2): 4 I - adjacency."""
    n = size * size
    idx = torch.arange(n).reshape(size, size)
    out = 4 * torch.eye(n, dtype=dtype)
    for shift, dim in ((1, 0), (-1, 0), (1, 1), (-1, 1)):
        nb = torch.roll(idx, shift, dim).reshape(-1)
        # += (not =) so that size 2, where +1 and -1 neighbours coincide, counts both edges
        out[torch.arange(n), nb] -= 1.0
    return out


def family_hessian(x: Tensor, theta: Sequence[float]) -> Tensor:
    """Closed-form Hessian of the phi^4-family energy (``cslc.phi4_family_energy``)
    E = theta_kin/2 sum_edges (dx)^2 + theta_2 sum x^2 + theta_4 sum x^4:
    theta_kin (-Delta) + diag(2 theta_2 + 12 theta_4 x^2). x: (B, L, L) -> (B, L^2, L^2)."""
    kin, quad, quart = (float(t) for t in theta)
    size = x.shape[-1]
    x = x.reshape(-1, size * size).double()
    return kin * neg_laplacian(size) + torch.diag_embed(2 * quad + 12 * quart * x.pow(2))


def phi4_hessian(x: Tensor, beta: float, mass2: float | None = None) -> Tensor:
    """Closed-form Hessian of ``phi4_energy``. x: (B, L, L) -> (B, L^2, L^2), float64."""
    # (x^2 - 1)^2 = x^4 - 2 x^2 + 1; the mass term is the family without the quartic
    return family_hessian(x, (beta, -2.0, 1.0) if mass2 is None else (beta, mass2, 0.0))


def phi4_hessian_autograd(x: Tensor, beta: float, mass2: float | None = None) -> Tensor:
    """The same Hessian by double autograd of ``phi4_energy``, one (L, L) field -> (L^2, L^2)."""
    from scatterlab.wsgm.phi4 import phi4_energy

    size = x.shape[-1]

    def energy(flat: Tensor) -> Tensor:
        return phi4_energy(flat.reshape(size, size), beta, mass2)

    return torch.autograd.functional.hessian(energy, x.reshape(-1).double())


def conditional_block(hess: Tensor, wavelet: str) -> Tensor:
    """Hessian of E(xbar | x_low) for one DWT level from the Hessian of E(x).

    hess: (..., n^2, n^2) on an n x n field -> (..., 3 n^2 / 4, 3 n^2 / 4), the detail block of
    W_1 hess W_1^T (W_1 the one-level orthogonal DWT matrix).
    """
    size = int(round(hess.shape[-1] ** 0.5))
    w = wavelet_matrix(size, 1, wavelet)
    rot = w @ hess @ w.T
    d = wavelet_blocks(size, 1)["detail_1"]
    return rot[..., d, d]


def lowpass_rows(size: int, levels: int, wavelet: str) -> Tensor:
    """A: (n_j^2, size^2), the rows of the orthogonal j-level DWT giving x_j (n_j = size/2^j)."""
    if levels == 0:
        return torch.eye(size * size, dtype=torch.float64)
    w = wavelet_matrix(size, levels, wavelet)
    return w[wavelet_blocks(size, levels)["low"]]


def gaussian_marginal_precision(prec: Tensor, size: int, levels: int, wavelet: str) -> Tensor:
    """Precision of x_j when x ~ N(0, prec^{-1}) on size x size: (A prec^{-1} A^T)^{-1}."""
    if levels == 0:
        return prec
    a = lowpass_rows(size, levels, wavelet)
    cov = a @ torch.linalg.inv(prec) @ a.T
    return torch.linalg.inv(0.5 * (cov + cov.T))


def min_eigenvalue(hess: Tensor) -> Tensor:
    """Smallest eigenvalue of symmetric (..., n, n) matrices -> (...)."""
    return torch.linalg.eigvalsh(0.5 * (hess + hess.transpose(-1, -2)))[..., 0]


def phi4_min_eigenvalues(
    x: Tensor, beta: float, wavelets: list[str], mass2: float | None = None
) -> dict[str, Tensor]:
    """Smallest Hessian eigenvalue per sample of E(x) ("unconditional") and of the finest-scale
    conditional E(xbar_1 | x_1) for each wavelet ("conditional/<wavelet>").

    x: (B, L, L) fields -> {name: (B,) float64}.
    """
    hess = phi4_hessian(x, beta, mass2)
    out = {"unconditional": min_eigenvalue(hess)}
    for w in wavelets:
        out[f"conditional/{w}"] = min_eigenvalue(conditional_block(hess, w))
    return out


def cascade_min_eigenvalues(
    x: Tensor, thetas: list[Sequence[float]], wavelet: str, max_sites: int = 1024
) -> list[dict[str, Tensor | None]]:
    """Smallest Hessian eigenvalues of a fitted CSLC cascade's energies (``cslc.fit_cascade``:
    [coarsest, scale J, ..., scale 1]) on data fields x (B, L, L): for scale j the ansatz for
    the renormalised energy of x_{j-1} (its "unconditional" Hessian) and its conditional
    E(xbar_j | x_j) (the detail block, "conditional"); for the coarsest the energy of x_J.
    Fields of more than ``max_sites`` sites are skipped (None: a dense eigensolve).
    Returns per scale {"unconditional": (B,) or None, "conditional": (B,) or None}."""
    from scatterlab.wsgm.dwt import DWT2d

    levels = len(thetas) - 1
    lows = DWT2d(wavelet, levels).lowpass_pyramid(x.double()[:, None])  # [x_0, .., x_J]
    out = []
    for k, theta in enumerate(thetas):
        field = lows[levels if k == 0 else levels - k][:, 0]  # x_J, then x_{j-1}, j = J..1
        if field[0].numel() > max_sites:
            out.append({"unconditional": None, "conditional": None})
            continue
        hess = family_hessian(field, theta)
        cond = None if k == 0 else min_eigenvalue(conditional_block(hess, wavelet))
        out.append({"unconditional": min_eigenvalue(hess), "conditional": cond})
    return out


def gaussian_scale_table(prec: Tensor, size: int, levels: int, wavelet: str) -> list[dict]:
    """Per scale j = 1..levels of a Gaussian field with precision prec (size^2, size^2): the
    extreme eigenvalues and condition number of the conditional Hessian of xbar_j given x_j
    (exact: the detail block of the marginal precision of x_{j-1}) and of the marginal
    precision of x_{j-1} itself (the unconditional energy at that scale)."""
    rows = []
    for j in range(1, levels + 1):
        k_prev = gaussian_marginal_precision(prec, size, j - 1, wavelet)
        cond = torch.linalg.eigvalsh(conditional_block(k_prev, wavelet))
        unc = torch.linalg.eigvalsh(0.5 * (k_prev + k_prev.T))
        rows.append(
            {
                "scale": j,
                "size": size >> (j - 1),
                "conditional_min": float(cond[0]),
                "conditional_max": float(cond[-1]),
                "conditional_kappa": float(cond[-1] / cond[0]),
                "unconditional_min": float(unc[0]),
                "unconditional_max": float(unc[-1]),
                "unconditional_kappa": float(unc[-1] / unc[0]),
            }
        )
    return rows
