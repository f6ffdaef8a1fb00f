"""One figure per run: samples beside data, marginal histograms and radial spectra overlaid."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from scatterlab.wph.operator import require_square
from scatterlab.wsgm.metrics import radial_power_spectrum


def samples_vs_data_figure(
    samples: Tensor, data: Tensor, path: str | Path, title: str = "", n_show: int = 4
) -> Path:
    """Write a PNG: row 1 data fields, row 2 samples (same colour scale), then the marginal
    histograms and the radial power spectra of both sets. samples, data: (N, [1,] L, L)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = samples if samples.dim() == 4 else samples[:, None]
    d = data if data.dim() == 4 else data[:, None]
    require_square(s, "the samples figure")
    s, d = s.detach().float().cpu(), d.detach().float().cpu()
    k = min(n_show, len(s), len(d))
    lo, hi = float(d.quantile(0.005)), float(d.quantile(0.995))
    fig = plt.figure(figsize=(2.2 * k + 6.5, 4.6))
    gs = fig.add_gridspec(2, k + 2, width_ratios=[1] * k + [1.6, 1.6])
    for i in range(k):
        for row, (x, name) in enumerate(((d, "data"), (s, "sample"))):
            ax = fig.add_subplot(gs[row, i])
            ax.imshow(x[i, 0], cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_ylabel(name)
    ax = fig.add_subplot(gs[:, k])
    bins = torch.linspace(float(d.quantile(0.001)), float(d.quantile(0.999)), 80).numpy()
    ax.hist(d.flatten().numpy(), bins=bins, density=True, alpha=0.5, label="data")
    ax.hist(s.flatten().numpy(), bins=bins, density=True, histtype="step", lw=1.5, label="samples")
    ax.set_title("marginal histogram")
    ax.legend(fontsize=8)
    ax = fig.add_subplot(gs[:, k + 1])
    r = torch.arange(1, d.shape[-1] // 2 + 1)
    ax.loglog(r, radial_power_spectrum(d).numpy(), label="data")
    ax.loglog(r, radial_power_spectrum(s).numpy(), "--", label="samples")
    ax.set_xlabel("radial frequency bin")
    ax.set_title("radial power spectrum")
    ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
