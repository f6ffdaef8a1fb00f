"""Matplotlib figures of the theory experiments (Agg backend, PNG files)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402


def save_figure(fig: plt.Figure, path: Path) -> Path:
    """Lay out, write (110 dpi) and close fig; returns path."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def phase_diagram(pd: dict, line: tuple, path: Path, phi: str) -> Path:
    """xi_c heat map over (sigma_w^2, sigma_b^2) with the chi_1 = 1 line; and chi_1 itself."""
    sw2, sb2 = pd["sw2"][:, 0].numpy(), pd["sb2"][0].numpy()
    xi = pd["xi_c"].numpy().clip(1e-2, 1e4)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    im = axes[0].pcolormesh(sw2, sb2, xi.T, norm=LogNorm(vmin=0.3, vmax=1e3), shading="auto")
    fig.colorbar(im, ax=axes[0], label=r"$\xi_c$")
    axes[0].set_title(rf"{phi}: depth scale $\xi_c$")
    im = axes[1].pcolormesh(sw2, sb2, pd["chi1"].numpy().T, cmap="coolwarm", shading="auto")
    fig.colorbar(im, ax=axes[1], label=r"$\chi_1$")
    axes[1].set_title(r"$\chi_1$ (ordered < 1 < chaotic)")
    for ax in axes:
        ax.plot(line[0], line[1], "k-", lw=2, label=r"$\chi_1 = 1$")
        ax.contour(sw2, sb2, pd["chi1"].numpy().T, levels=[1.0], colors="w", linestyles="--")
        ax.set_xlim(sw2[0], sw2[-1])
        ax.set_ylim(sb2[0], sb2[-1])
        ax.set_xlabel(r"$\sigma_w^2$")
        ax.set_ylabel(r"$\sigma_b^2$")
        ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def trajectories(curves: dict, path: Path) -> Path:
    """q^l and c^l: theory lines and simulated points for each phase (the widest net)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for i, (name, cur) in enumerate(curves.items()):
        col = f"C{i}"
        layers = np.arange(1, len(cur["q_theory"]) + 1)
        for ax, key in zip(axes, ("q", "c"), strict=True):
            ax.plot(layers, cur[f"{key}_theory"], "-", color=col, label=f"{name} theory")
            ax.errorbar(
                layers,
                cur[f"{key}_sim"],
                yerr=cur[f"{key}_sim_se"],
                fmt="o",
                color=col,
                ms=3,
                label=f"{name} N={cur['width']}",
            )
    axes[0].set_ylabel(r"$q^l$")
    axes[1].set_ylabel(r"$c^l$")
    for ax in axes:
        ax.set_xlabel("layer l")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def deviation(widths: Sequence[int], dev: dict, path: Path) -> Path:
    """Theory-simulation deviation against width, with the 1/sqrt(N) slope."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    w = np.asarray(widths, dtype=float)
    for i, (name, d) in enumerate(dev.items()):
        ax.loglog(w, d["q"], "o-", color=f"C{i}", label=f"{name}: q")
        ax.loglog(w, d["c"], "s--", color=f"C{i}", label=f"{name}: c")
    ref = np.asarray(next(iter(dev.values()))["q"])[0] * np.sqrt(w[0] / w)
    ax.loglog(w, ref, "k:", label=r"$\propto N^{-1/2}$")
    ax.set_xlabel("width N")
    ax.set_ylabel("RMS deviation from theory")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def circles(pcas: dict, path: Path) -> Path:
    """PCA projections (PC1, PC2, coloured by angle) of the circle: rows phases, cols layers."""
    names = list(pcas)
    layers = sorted(next(iter(pcas.values())))
    fig, axes = plt.subplots(
        len(names), len(layers), figsize=(3 * len(layers), 3 * len(names)), squeeze=False
    )
    for i, name in enumerate(names):
        for j, layer in enumerate(layers):
            p = pcas[name][layer].numpy()
            th = np.linspace(0, 1, len(p), endpoint=False)
            ax = axes[i, j]
            ax.scatter(p[:, 0], p[:, 1], c=th, cmap="hsv", s=4)
            ax.plot(p[:, 0], p[:, 1], "k-", lw=0.3)
            ax.set_title(f"{name}, layer {layer}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_aspect("equal", adjustable="datalim")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def curvature(curves: dict, path: Path) -> Path:
    """g_bar^l and kappa_bar^l of the propagated circle: theory vs simulation per phase."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for i, (name, cur) in enumerate(curves.items()):
        layers = np.arange(1, len(cur["g_theory"]) + 1)
        for ax, key in zip(axes, ("g", "kappa"), strict=True):
            ax.plot(layers, cur[f"{key}_theory"], "-", color=f"C{i}", label=f"{name} theory")
            ax.plot(layers, cur[f"{key}_sim"], "o", color=f"C{i}", ms=3, label=f"{name} sim")
    axes[0].set_yscale("log")
    axes[0].set_ylabel(r"$\bar g^l$ (metric per neuron)")
    axes[1].set_ylabel(r"$\bar\kappa^l = \sqrt{N}\kappa$")
    for ax in axes:
        ax.set_xlabel("layer l")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def spectra(results: list[dict], path: Path) -> Path:
    """Singular value densities of J: rows non-linearities, columns weights, one line a depth."""
    phis = list(dict.fromkeys(r["phi"] for r in results))
    weights = list(dict.fromkeys(r["weights"] for r in results))
    fig, axes = plt.subplots(
        len(phis), len(weights), figsize=(5.5 * len(weights), 3.4 * len(phis)), squeeze=False
    )
    for r in results:
        ax = axes[phis.index(r["phi"]), weights.index(r["weights"])]
        sv = np.asarray(r["singular_values"]).ravel()
        sv = sv[sv > 0]
        label = f"L={r['depth']}: var {r['var_measured']:.3g} (th {r['var_theory']:.3g})"
        lo, hi = max(sv.min(), sv.max() * 1e-8), sv.max()
        if hi / lo < 1.5:  # near isometry: a linear axis (a log axis of a 1e-14 range is noise)
            pad = max(hi - lo, 1e-3)
            dens, edges = np.histogram(sv, bins=np.linspace(lo - pad, hi + pad, 40), density=True)
            ax.plot((edges[1:] + edges[:-1]) / 2, dens, label=label)
        else:
            dens, edges = np.histogram(sv, bins=np.geomspace(lo, hi, 40), density=True)
            mid = np.sqrt(edges[1:] * edges[:-1])
            ax.plot(mid, dens * mid, label=label)  # density of log s
            ax.set_xscale("log")
        ax.set_title(f"{r['phi']}, {r['weights']} weights", fontsize=10)
        ax.set_xlabel("singular value s of J")
        ax.set_ylabel("density (of log s on log axes)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


__all__ = [
    "circles",
    "curvature",
    "deviation",
    "phase_diagram",
    "spectra",
    "trajectories",
]
