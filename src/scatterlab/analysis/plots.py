"""Plots of analysis histories (matplotlib, Agg): per-layer curves, collapse vs epoch and
the information plane with the epoch as a colour scale.

A history is the list `analysis.json["history"]`: one analyze() result per analysed epoch,
each with an "epoch" key (completed epochs; 0 = before training).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

LAYER_MEASURES = (
    ("ratio", "tr Σ_W / tr Σ_B", True),
    ("nc1", "NC1 = tr(Σ_W Σ_B⁺)/K", True),
    ("ncm_acc", "nearest-class-mean accuracy", False),
    ("probe_acc", "linear-probe accuracy", False),
)
COLLAPSE = (
    "nc1",
    "nc2_equinorm_means",
    "nc2_equiangular_means",
    "nc2_maxangle_means",
    "nc3",
    "nc4",
)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _epoch_colours(history: list[dict[str, Any]]):
    import matplotlib.colors as mcolors

    plt = _plt()
    epochs = [max(h["epoch"], 0) for h in history]
    hi = max(epochs) if epochs else 1
    norm = (
        mcolors.LogNorm(vmin=1, vmax=max(hi, 2)) if hi >= 100 else mcolors.Normalize(0, max(hi, 1))
    )
    cmap = plt.get_cmap("viridis")
    return [cmap(norm(max(e, 1) if hi >= 100 else e)) for e in epochs], norm, cmap


def plot_layers(history: list[dict[str, Any]], path: Path, title: str = "") -> Path | None:
    """One panel per measure against the layer, one line per analysed epoch."""
    measures = [m for m in LAYER_MEASURES if any(m[0] in v for v in history[-1]["layers"].values())]
    if not measures:
        return None
    plt = _plt()
    colours, norm, cmap = _epoch_colours(history)
    fig, axes = plt.subplots(1, len(measures), figsize=(4.2 * len(measures), 3.6), squeeze=False)
    names = list(history[-1]["layers"])
    for ax, (key, label, log) in zip(axes[0], measures, strict=True):
        for h, c in zip(history, colours, strict=True):
            ax.plot(range(len(names)), [h["layers"][n].get(key, float("nan")) for n in names], "o-",
                    color=c, ms=3, lw=1)  # fmt: skip
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
        ax.set_title(label, fontsize=9)
        if log:
            ax.set_yscale("log")
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=axes[0].tolist(), label="epoch")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_collapse(history: list[dict[str, Any]], path: Path, title: str = "") -> Path | None:
    """Neural-collapse measures of the classifier input against the epoch (log axes)."""
    keys = [k for k in COLLAPSE if k in history[-1].get("classifier", {})]
    if not keys:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    epochs = [max(h["epoch"], 0) for h in history]
    for k in keys:
        ax.plot(
            epochs, [h["classifier"].get(k, float("nan")) for h in history], "o-", ms=3, label=k
        )
    ax.set_yscale("log")
    if max(epochs) >= 100:
        ax.set_xscale("symlog", linthresh=1)
    ax.set_xlabel("epoch")
    ax.legend(fontsize=7)
    ax.set_title(title or "neural collapse (classifier input)", fontsize=10)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_information_plane(
    history: list[dict[str, Any]], path: Path, estimator: str = "bin", title: str = ""
) -> Path | None:
    """I(T;Y) against I(X;T) for every layer, points coloured by epoch (`bin` or `kde`)."""
    kx, ky = f"ixt_{estimator}", f"ity_{estimator}"
    names = [n for n, v in history[-1]["layers"].items() if kx in v]
    if not names:
        return None
    plt = _plt()
    colours, norm, cmap = _epoch_colours(history)
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    for n in names:
        xs = [h["layers"][n][kx] for h in history]
        ys = [h["layers"][n][ky] for h in history]
        ax.plot(xs, ys, "-", color="0.8", lw=0.6, zorder=1)
        ax.scatter(xs, ys, c=colours, s=10, zorder=2)
        ax.annotate(n, (xs[-1], ys[-1]), fontsize=7)
    ax.set_xlabel("I(X;T) [bits]")
    ax.set_ylabel("I(T;Y) [bits]")
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="epoch")
    ax.set_title(title or f"information plane ({estimator})", fontsize=10)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_all(history: list[dict[str, Any]], out_dir: Path, title: str = "") -> list[Path]:
    """Every plot that the history has data for, into out_dir; returns the written paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [
        plot_layers(history, out_dir / "analysis_layers.png", title),
        plot_collapse(history, out_dir / "analysis_collapse.png", title),
        plot_information_plane(history, out_dir / "infoplane_bin.png", "bin", title),
        plot_information_plane(history, out_dir / "infoplane_kde.png", "kde", title),
    ]
    return [p for p in paths if p is not None]
