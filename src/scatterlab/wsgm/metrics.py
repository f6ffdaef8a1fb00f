"""Sample-quality metrics for stationary fields and images (plain torch, any device).

``spectrum_error`` is the relative L2 error of the radially averaged power spectrum,
measured bin by bin: sqrt(mean_r ((S_gen(r) - S_ref(r)) / S_ref(r))^2) over the radial bins
r = 1 .. L/2 (DC excluded). Normalising per bin weights every scale equally; the plain
||S_gen - S_ref|| / ||S_ref|| (dominated by the largest scales) is ``spectrum_error_l2``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scatterlab.wsgm.phi4 import phi4_energy


def radial_average(power: Tensor) -> Tensor:
    """Average a (L, L) map over the radial bins r = round(|k| L / 2pi) = 1..L/2 -> (L//2,).

    Bin r holds the wave vectors with integer frequencies (f1, f2) and round(sqrt(f1^2 + f2^2))
    = r (so bin 1 includes the four diagonal (+-1, +-1) modes).
    """
    h = power.shape[-1]
    f = torch.fft.fftfreq(h, d=1.0 / h, device=power.device, dtype=torch.float64)
    r = torch.sqrt(f[:, None] ** 2 + f[None, :] ** 2).round().long()
    nbins = h // 2
    mask = (r >= 1) & (r <= nbins)
    idx = r[mask] - 1
    vals = power.double()[mask]
    sums = torch.zeros(nbins, dtype=torch.float64, device=power.device).index_add_(0, idx, vals)
    counts = torch.zeros(nbins, dtype=torch.float64, device=power.device).index_add_(
        0, idx, torch.ones_like(vals)
    )
    return sums / counts


def radial_power_spectrum(x: Tensor) -> Tensor:
    """Radially averaged power spectrum. x: (N, C, H, W), H == W -> (L//2,) for r = 1..L/2.

    S(r) = mean over samples, channels and wave vectors of bin r (see ``radial_average``) of
    |fft2(x)(k)|^2 / (H W). The per-sample spatial mean is not removed (DC is excluded).
    """
    n, c, h, w = x.shape
    if h != w:
        raise ValueError(f"radial_power_spectrum needs square images, got {h}x{w}")
    xf = torch.fft.fft2(x.double())
    power = (xf.real.pow(2) + xf.imag.pow(2)).mean(dim=(0, 1)) / (h * w)  # (H, W)
    return radial_average(power)


def spectrum_error(samples: Tensor, reference: Tensor) -> float:
    """Per-bin relative L2 error of radial spectra (see module docstring). Both (N, C, L, L)."""
    s, r = radial_power_spectrum(samples), radial_power_spectrum(reference)
    return float(((s - r) / r).pow(2).mean().sqrt())


def spectrum_error_l2(samples: Tensor, reference: Tensor) -> float:
    """||S_gen - S_ref||_2 / ||S_ref||_2 over radial bins."""
    s, r = radial_power_spectrum(samples), radial_power_spectrum(reference)
    return float((s - r).norm() / r.norm())


def histogram_distance(samples: Tensor, reference: Tensor, bins: int = 100) -> float:
    """Total-variation distance (in [0, 1]) between the marginal (all pixels) histograms.

    Bins span the 0.1%..99.9% quantile range of the reference, with two overflow bins.
    """
    ref = reference.detach().flatten().double()
    gen = samples.detach().flatten().double().to(ref.device)
    q = torch.quantile(
        ref[torch.randperm(ref.numel(), device=ref.device)[:100_000]],
        torch.tensor([0.001, 0.999], dtype=torch.float64, device=ref.device),
    )
    edges = torch.linspace(
        float(q[0]), float(q[1]), bins + 1, dtype=torch.float64, device=ref.device
    )

    def hist(v: Tensor) -> Tensor:
        idx = torch.bucketize(v, edges)  # 0 .. bins+1 (two overflow bins)
        h = torch.bincount(idx, minlength=bins + 2).double()
        return h / h.sum()

    return float(0.5 * (hist(gen) - hist(ref)).abs().sum())


def energy_per_site(x: Tensor, beta: float = 0.68, mass2: float | None = None) -> float:
    """Mean phi^4 energy per lattice site. x: (N, 1, L, L) or (N, L, L)."""
    if x.dim() == 4:
        x = x[:, 0]
    return float(phi4_energy(x.double(), beta, mass2).mean() / (x.shape[-1] * x.shape[-2]))


def abs_magnetization(x: Tensor) -> Tensor:
    """|m| = |spatial mean| of each field: a large-scale statistic the spectrum does not see.
    x: (N, [1,] L, L) -> (N,)."""
    return x.double().flatten(1).mean(dim=1).abs()


def wasserstein1(a: Tensor, b: Tensor, n_quantiles: int = 512) -> float:
    """W1 distance between the empirical laws of two 1D samples (quantile functions).

    W1 = int_0^1 |F_a^{-1}(q) - F_b^{-1}(q)| dq, approximated on a midpoint grid of q.
    """
    q = (torch.arange(n_quantiles, dtype=torch.float64) + 0.5) / n_quantiles
    return float((torch.quantile(a.double(), q) - torch.quantile(b.double(), q)).abs().mean())


def lattice_metrics(
    samples: Tensor, reference: Tensor, beta: float = 0.68, mass2: float | None = None
) -> dict[str, float]:
    """phi^4 statistics of samples vs reference fields: energy per site (and its relative
    error) and the law of the mean magnetisation |m| (means, stds, W1 distance)."""
    e, e_data = energy_per_site(samples, beta, mass2), energy_per_site(reference, beta, mass2)
    ms, mr = abs_magnetization(samples), abs_magnetization(reference)
    return {
        "energy_per_site": e,
        "energy_per_site_data": e_data,
        "energy_error": abs(e - e_data) / abs(e_data),
        "abs_m_mean": float(ms.mean()),
        "abs_m_mean_data": float(mr.mean()),
        "abs_m_std": float(ms.std()),
        "abs_m_std_data": float(mr.std()),
        "abs_m_w1": wasserstein1(ms, mr),
    }
