"""One figure per generative run: samples beside data, marginal histograms, radial spectra.

Plain matplotlib on CPU tensors (Agg backend, no display needed). Used by the WSGM/SGM module
at test time; any model of stationary fields can call ``comparison_figure`` the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from scatterlab.wsgm.metrics import radial_power_spectrum


def _unit_scale(x: Tensor, lo: float, hi: float) -> Tensor:
    return ((x - lo) / max(hi - lo, 1e-8)).clamp(0, 1)


def _tile(x: Tensor, nrow: int) -> Tensor:
    """(N, C, H, W) in [0, 1] -> (rows*H + pads, nrow*W + pads, 3) mosaic, NaN 1-px gaps."""
    from torchvision.utils import make_grid

    return make_grid(x, nrow=nrow, padding=1, pad_value=float("nan")).permute(1, 2, 0)


def figure_curves(samples: Tensor, reference: Tensor, bins: int = 80) -> dict[str, Tensor]:
    """The curves of the figure's lower row, from (N, C, H, W) samples and reference fields.

    ``edges`` (bins + 1,): common bins over the reference's 0.05%..99.95% quantiles;
    ``hist_samples``/``hist_data`` (bins,): densities on those bins (values outside are left
    out, so a density integrates to the fraction inside); ``spectrum_samples``/``spectrum_data``
    (L/2,): ``radial_power_spectrum`` of each set (square fields only).
    """
    ref = reference.detach().cpu().double()
    gen = samples.detach().cpu().double()
    flat = ref.flatten()[:1_000_000]
    lo = float(torch.quantile(flat, 0.0005))
    hi = float(torch.quantile(flat, 0.9995))
    edges = torch.linspace(lo, hi, bins + 1, dtype=torch.float64)
    out = {"edges": edges}
    for key, x in (("hist_samples", gen), ("hist_data", ref)):
        v = x.flatten()
        h = torch.histc(v, bins=bins, min=lo, max=hi)
        out[key] = h / (v.numel() * (edges[1] - edges[0]))
    if gen.shape[-1] == gen.shape[-2]:
        out["spectrum_samples"] = radial_power_spectrum(gen)
        out["spectrum_data"] = radial_power_spectrum(ref)
    return out


def comparison_figure(
    samples: Tensor,
    data: Tensor,
    path: str | Path,
    title: str = "",
    reference: Tensor | None = None,
    to_unit: Callable[[Tensor], Tensor] | None = None,
    n_show: int = 16,
    bins: int = 80,
    labels: tuple[str, str] = ("samples", "data"),
) -> Path:
    """Write a 2 x 2 PNG: sample mosaic | data mosaic / marginal histograms | radial spectra.

    samples: (N, C, H, W) generated fields; data: (M, C, H, W) training fields (shown);
    reference: (K, C, H, W) fields the histogram and spectrum curves of the data come from
    (default ``data``; the module passes the held-out test set its metrics use). Mosaics of
    ``n_show`` fields share one colour scale (the data's 0.5%..99.5% quantiles) unless
    ``to_unit`` maps fields to [0, 1] (RGB images). Non-finite samples are drawn as 0.
    Returns the path written.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401  (matplotlib.ticker below)

    samples = samples.detach().cpu().float().nan_to_num(0.0, 0.0, 0.0)
    data = data.detach().cpu().float()
    ref = data if reference is None else reference.detach().cpu().float()
    k = max(1, min(n_show, samples.shape[0], data.shape[0]))
    nrow = max(1, int(k**0.5))
    if to_unit is None:
        q = torch.quantile(
            data.flatten()[:1_000_000], torch.tensor([0.005, 0.995], dtype=torch.float32)
        )
        lo, hi = float(q[0]), float(q[1])

        def to_unit(x: Tensor) -> Tensor:
            return _unit_scale(x, lo, hi)

    fig, axes = plt.subplots(2, 2, figsize=(9.5, 8.5))
    for ax, x, name in ((axes[0, 0], samples, labels[0]), (axes[0, 1], data, labels[1])):
        img = _tile(to_unit(x[:k]), nrow)
        if x.shape[1] == 1:  # make_grid repeats one channel as RGB: draw it with a colour map
            cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="white")
            ax.imshow(img[..., 0], cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        else:
            ax.imshow(img.nan_to_num(1.0), interpolation="nearest")
        ax.set_title(f"{name} ({k} of {x.shape[0]})")
        ax.axis("off")

    curves = figure_curves(samples, ref, bins)
    ref_label = labels[1] if reference is None else "held-out data"
    ax = axes[1, 0]
    edges = curves["edges"]
    for key, name, style in (("hist_data", ref_label, "-"), ("hist_samples", labels[0], "--")):
        ax.stairs(curves[key].numpy(), edges.numpy(), ls=style, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("field value")
    ax.set_ylabel("density")
    ax.set_title("marginal histogram")
    ax.legend()

    ax = axes[1, 1]
    if "spectrum_data" in curves:
        r = torch.arange(1, curves["spectrum_data"].numel() + 1).numpy()
        for key, name, style in (
            ("spectrum_data", ref_label, "-"),
            ("spectrum_samples", labels[0], "--"),
        ):
            ax.plot(r, curves[key].numpy(), ls=style, marker=".", label=name)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("radial frequency |k| L / 2 pi")
        ax.set_ylabel("power")
        ax.legend()
    ax.set_title("radially averaged power spectrum")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
