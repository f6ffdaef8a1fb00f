"""Streaming per-class moments of features and the measures computed from them.

`ClassMoments` accumulates, in float64, the count n_c and the sum s_c = sum_i h_ci of every
class c, the sum of squares q_c = sum_i ||h_ci||^2, and one pooled second moment
S = sum_{c,i} h_ci h_ci^T, around a fixed shift (the mean of the first batch) so that
Sigma = S/N - mu mu^T does not lose digits to cancellation. Pooled is enough: every measure
here needs Sigma_W = (S - sum_c s_c s_c^T / n_c) / N, not the per-class covariances. Memory is
O(D^2 + K D) per layer, independent of the number of images; wide layers are sketched to at
most D dimensions before they reach it (see `scatterlab.analysis.hooks.CountSketch`).

Notation (Papyan, Han & Donoho 2020): K classes, N images, mu_c class means, mu_G the
count-weighted global mean,
  Sigma_W = (1/N) sum_c sum_i (h_ci - mu_c)(h_ci - mu_c)^T,
  Sigma_B = (1/K) sum_c (mu_c - mu_G)(mu_c - mu_G)^T.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from scatterlab.errors import ConfigError


class ClassMoments:
    """Per-class count, sum and second moment of features (B, D), accumulated in float64."""

    def __init__(self, num_classes: int, dim: int) -> None:
        self.K, self.D = num_classes, dim
        self.count = torch.zeros(num_classes, dtype=torch.float64)
        self.sum = torch.zeros(num_classes, dim, dtype=torch.float64)
        self.sumsq = torch.zeros(num_classes, dtype=torch.float64)
        self.second = torch.zeros(dim, dim, dtype=torch.float64)
        self.shift: Tensor | None = None

    def update(self, h: Tensor, y: Tensor) -> None:
        """Add a batch: h (B, D) features (any float dtype/device), y (B,) labels in [0, K)."""
        if h.ndim != 2 or h.shape[1] != self.D:
            raise ValueError(f"expected features (B, {self.D}), got {tuple(h.shape)}")
        h = h.detach().to("cpu", torch.float64)
        y = y.detach().to("cpu", torch.long)
        if self.shift is None:
            self.shift = h.mean(0)
        h = h - self.shift
        onehot = torch.nn.functional.one_hot(y, self.K).to(torch.float64)  # (B, K)
        self.count += onehot.sum(0)
        self.sum += onehot.T @ h
        self.sumsq += onehot.T @ (h * h).sum(1)
        self.second += h.T @ h

    # ---- derived statistics (all float64) ----
    def _check(self) -> None:
        present = int((self.count > 0).sum())
        if present < 2:
            raise ConfigError(
                f"the analysis saw {present} class(es): it needs labelled images of at least "
                "two classes (raise callbacks.analysis.images)"
            )

    @property
    def present(self) -> Tensor:
        """Boolean mask (K,) of the classes with at least one image."""
        return self.count > 0

    def means(self) -> Tensor:
        """Class means (K', D) of the present classes, in the original coordinates."""
        n = self.count[self.present]
        return self.sum[self.present] / n[:, None] + self.shift

    def global_mean(self) -> Tensor:
        return self.sum.sum(0) / self.count.sum() + self.shift

    def within(self) -> Tensor:
        """Sigma_W (D, D): the pooled within-class covariance (divided by N)."""
        self._check()
        p = self.present
        n, s = self.count[p], self.sum[p]
        # S - sum_c s_c s_c^T / n_c: shift-invariant, so the shift drops out.
        scatter = self.second - (s / n[:, None]).T @ s
        return _sym(scatter / n.sum())

    def class_variances(self) -> Tensor:
        """tr Sigma_c (K',) of the present classes: mean squared distance to their mean."""
        p = self.present
        n, s = self.count[p], self.sum[p]
        return self.sumsq[p] / n - (s * s).sum(1) / n**2

    def between(self) -> Tensor:
        """Sigma_B (D, D) = (1/K) sum_c (mu_c - mu_G)(mu_c - mu_G)^T, K = present classes."""
        self._check()
        M = self.means() - self.global_mean()
        return _sym(M.T @ M / M.shape[0])

    def total(self) -> Tensor:
        """Sigma_T (D, D): covariance of all features (= Sigma_W + count-weighted Sigma_B)."""
        n = self.count.sum()
        s = self.sum.sum(0)
        return _sym(self.second / n - torch.outer(s, s) / n**2)


def _sym(a: Tensor) -> Tensor:
    return (a + a.T) / 2


def pinv_rank(a: Tensor, rank: int) -> Tensor:
    """Pseudo-inverse of a symmetric PSD matrix keeping its `rank` largest eigenvalues.

    An explicit rank (K - 1 for Sigma_B) instead of a tolerance: float round-off leaves
    eigenvalues of ~1e-8 beyond the true rank that a default rcond would invert.
    """
    evals, evecs = torch.linalg.eigh(a.to(torch.float64))
    rank = max(0, min(rank, int((evals > evals.max().clamp_min(0) * 1e-12).sum())))
    v, e = evecs[:, -rank:] if rank else evecs[:, :0], evals[-rank:] if rank else evals[:0]
    return (v / e) @ v.T


def separation(m: ClassMoments) -> dict[str, float]:
    """Within- and between-class variance, their ratio, and NC1 of one layer.

    within = tr Sigma_W, between = tr Sigma_B, ratio = within / between (Tirer et al.'s
    "quotient" form: small = concentrated relative to the class-mean spread),
    nc1 = tr(Sigma_W Sigma_B^+) / K with Sigma_B^+ of rank K - 1 (Papyan et al.).
    """
    sw = m.within()
    M = m.means() - m.global_mean()  # (K, D), Sigma_B = M^T M / K
    K = M.shape[0]
    within, between = float(torch.trace(sw)), float((M * M).sum() / K)
    # Sigma_B^+ from the SVD of the K x D matrix M (rank K - 1): no D x D eigendecomposition.
    _, sv, vt = torch.linalg.svd(M, full_matrices=False)
    r = min(K - 1, int((sv > sv.max() * 1e-10).sum()))
    v, lam = vt[:r], sv[:r] ** 2 / K  # eigenvectors (r, D) and eigenvalues of Sigma_B
    nc1 = float(((v @ sw * v).sum(1) / lam).sum()) / K
    return {
        "within": within,
        "between": between,
        "ratio": within / between if between > 0 else math.inf,
        "nc1": nc1,
    }


def ncm_predict(means: Tensor, h: Tensor) -> Tensor:
    """Nearest class mean: argmin_c ||h - mu_c||. means (K, D), h (B, D) -> (B,) indices."""
    h = h.to(torch.float64)
    d = (h * h).sum(1, keepdim=True) - 2 * h @ means.T + (means * means).sum(1)
    return d.argmin(1)


class RidgeProbe:
    """Linear probe fitted in closed form from the moments: ridge regression of the one-hot
    labels on the features, with an intercept.

    beta = (Sigma_T + lam I)^-1 C, C[:, c] = p_c (mu_c - mu_G), lam = ridge * tr(Sigma_T) / D;
    the prediction is argmax_c p_c + (h - mu_G) beta_c. A least-squares probe needs no SGD and
    no stored features; its accuracy is a lower bound on the best linear classifier's.
    """

    def __init__(self, m: ClassMoments, ridge: float = 1e-3) -> None:
        m._check()
        n = m.count.sum()
        self.classes = m.present.nonzero().flatten()
        p = m.count[self.classes] / n
        self.mu_g = m.global_mean()
        st = m.total()
        lam = ridge * float(torch.trace(st)) / m.D
        C = (m.means() - self.mu_g).T * p  # (D, K')
        eye = torch.eye(m.D, dtype=torch.float64)
        self.beta = torch.linalg.solve(st + lam * eye, C)
        self.prior = p

    def predict(self, h: Tensor) -> Tensor:
        """h (B, D) -> predicted labels (B,) in the original class indices."""
        scores = (h.to(torch.float64) - self.mu_g) @ self.beta + self.prior
        return self.classes[scores.argmax(1)]


def _cosines(v: Tensor) -> Tensor:
    """Off-diagonal cosines between the rows of v (K, D): (K (K - 1),)."""
    u = v / v.norm(dim=1, keepdim=True).clamp_min(1e-300)
    g = u @ u.T
    K = g.shape[0]
    return g[~torch.eye(K, dtype=torch.bool)]


def collapse(m: ClassMoments, weight: Tensor | None = None) -> dict[str, float]:
    """NC1-NC3 of the classifier's input features (Papyan, Han & Donoho 2020).

    weight: the last linear layer (K, D) in the features' coordinates, or None (then only
    the measures of the means). Returns
      nc1 = tr(Sigma_W Sigma_B^+) / K;
      nc2_equinorm_means/_weights = std/mean of ||mu_c - mu_G|| / of ||w_c|| (unbiased std,
        as the official notebook's torch.std);
      nc2_equiangular_means/_weights = std of the off-diagonal cosines;
      nc2_maxangle_means/_weights = mean |cos + 1/(K - 1)| (0 for a simplex ETF);
      nc3 = || W^T/||W||_F - M/||M||_F ||_F^2, M = [mu_c - mu_G] (D, K) (self-duality).
    """
    out = {"nc1": separation(m)["nc1"]}
    M = m.means() - m.global_mean()  # (K', D)
    K = M.shape[0]
    vecs = {"means": M}
    if weight is not None:
        vecs["weights"] = weight.detach().to("cpu", torch.float64)[m.present]
    for name, v in vecs.items():
        norms = v.norm(dim=1)
        cos = _cosines(v)
        out[f"nc2_equinorm_{name}"] = float(norms.std() / norms.mean())
        out[f"nc2_equiangular_{name}"] = float(cos.std())
        out[f"nc2_maxangle_{name}"] = float((cos + 1 / (K - 1)).abs().mean())
    if weight is not None:
        W = vecs["weights"]
        out["nc3"] = float(((W / W.norm() - M / M.norm()) ** 2).sum())
    return out
