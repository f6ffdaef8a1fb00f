"""Figures of the landscapes experiments (matplotlib, Agg): histograms under theory curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from scatterlab.theory.plots import save_figure  # noqa: E402


def histograms(panels: list[dict], path: Path, cols: int = 3) -> Path:
    """One panel per dict: samples (histogram), x / rho (theory lines), title, optional
    logx (histogram of log10 values, theory as density of log10 x)."""
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.3 * rows), squeeze=False)
    for ax, p in zip(axes.ravel(), panels, strict=False):
        s = np.asarray(p["samples"], dtype=float).ravel()
        if p.get("logx"):
            s = s[s > 0]
            lo = np.log10(max(s.min(), p.get("floor", 1e-12)))
            ax.hist(
                np.log10(np.maximum(s, 10**lo)), bins=60, density=True, alpha=0.45, label="sampled"
            )
            for x, rho, lab in p["theory"]:
                x, rho = np.asarray(x), np.asarray(rho)
                keep = x >= 10**lo
                ax.plot(np.log10(x[keep]), rho[keep] * x[keep] * np.log(10), lw=1.4, label=lab)
            ax.set_xlabel(p.get("xlabel", "log10 x"))
        else:
            ax.hist(s, bins=60, density=True, alpha=0.45, label="sampled")
            for x, rho, lab in p["theory"]:
                ax.plot(np.asarray(x), np.asarray(rho), lw=1.4, label=lab)
            ax.set_xlabel(p.get("xlabel", "x"))
        ax.set_title(p["title"], fontsize=9)
        ax.legend(fontsize=7)
    for ax in axes.ravel()[len(panels) :]:
        ax.axis("off")
    return save_figure(fig, path)


def spin_glass(result: dict, path: Path) -> Path:
    """Energy histograms per N beside -E_0, -E_inf; complexity curves; index vs energy."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    ax = axes[0]
    for n, e in result["energies"].items():
        ax.hist(np.asarray(e), bins=40, density=True, histtype="step", lw=1.4, label=f"N={n}")
    for val, lab, st in ((-result["E_0"], "-E_0", "--"), (-result["E_inf"], "-E_inf", ":")):
        ax.axvline(val, color="k", ls=st, lw=1, label=lab)
    ax.set_xlabel("energy per site H / N at the end of descent")
    ax.set_title(f"p={result['p']}: gradient descent from random starts", fontsize=9)
    ax.legend(fontsize=7)
    ax = axes[1]
    u = np.asarray(result["complexity"]["u"])
    ax.plot(u, result["complexity"]["theta"], "k", lw=1.6, label="Theta_p(u)")
    for k, th in result["complexity"]["theta_k"].items():
        ax.plot(u, th, lw=1, label=f"Theta_{{{k},p}}(u)")
    ax.axhline(0, color="gray", lw=0.6)
    ax.axvline(-result["E_inf"], color="k", ls=":", lw=1)
    ax.set_xlim(-result["E_0"] - 0.05, -result["E_inf"] + 0.25)
    ax.set_ylim(-0.03, 0.03)
    ax.set_xlabel("u (energy per site)")
    ax.set_title("complexity (Auffinger, Ben Arous & Cerny 2013)", fontsize=9)
    ax.legend(fontsize=7)
    ax = axes[2]
    for n, d in result["index"].items():
        ax.scatter(d["energy"], d["index"], s=8, label=f"N={n} (descent)")
    for k, d in result.get("saddles", {}).items():
        idx = np.asarray(d["index"], dtype=float) / (d["n"] - 1)
        ax.scatter(d["energy"], idx, s=10, marker="x", label=f"N={d['n']}, index-{k} search")
    ax.axvline(-result["E_inf"], color="k", ls=":", lw=1)
    ax.set_xlabel("energy per site")
    ax.set_ylabel("index (fraction of negative Hessian eigenvalues)")
    ax.set_title("Riemannian Hessian index of the points found", fontsize=9)
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def spectra(panels: list[dict], path: Path) -> Path:
    """Hessian spectra: exact eigenvalue histogram (log count), SLQ and other densities."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, p in zip(axes[0], panels, strict=True):
        if p.get("exact") is not None:
            ax.hist(np.asarray(p["exact"]), bins=80, density=True, alpha=0.4, label="exact eig")
        for x, rho, lab in p["curves"]:
            ax.plot(np.asarray(x), np.asarray(rho), lw=1.3, label=lab)
        ax.set_yscale("log")
        top = max(float(np.nanmax(np.asarray(rho))) for _, rho, _ in p["curves"])
        ax.set_ylim(1e-4, 10 * max(top, 1e-3))
        ax.set_title(p["title"], fontsize=9)
        ax.set_xlabel("Hessian eigenvalue")
        ax.legend(fontsize=7)
    return save_figure(fig, path)


def scatter(points: list[dict], path: Path, xlabel: str, ylabel: str, title: str) -> Path:
    """Scatter series (x, y, label) and optional fitted lines (x, y, label, 'line')."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for p in points:
        if p.get("line"):
            ax.plot(p["x"], p["y"], "k--", lw=1, label=p["label"])
        else:
            ax.scatter(p["x"], p["y"], s=10, label=p["label"])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def cdfs(panels: list[dict], path: Path, cols: int = 2, floor: float = 1e-12) -> Path:
    """Theory CDFs (solid) and empirical CDFs (dotted) on a log10 x axis, one colour per case.

    panels: {title, cases: [(x, cdf, samples, label)]}; values below `floor` (atoms at 0, the
    mass a log grid cannot hold) are drawn at log10(floor).
    """
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.4 * rows), squeeze=False)
    for ax, p in zip(axes.ravel(), panels, strict=False):
        for i, (x, cdf, samples, label) in enumerate(p["cases"]):
            color = f"C{i}"
            x = np.log10(np.maximum(np.asarray(x, dtype=float), floor))
            ax.plot(x, np.asarray(cdf), color=color, lw=1.4, label=label)
            s = np.sort(np.log10(np.maximum(np.asarray(samples, dtype=float).ravel(), floor)))
            ax.step(s, np.arange(1, len(s) + 1) / len(s), where="post", color=color, ls=":", lw=1.2)
        ax.set_title(p["title"], fontsize=9)
        ax.set_xlabel(p.get("xlabel", "log10 x"))
        ax.set_ylabel("CDF (solid: theory, dotted: sampled)")
        ax.legend(fontsize=7)
    for ax in axes.ravel()[len(panels) :]:
        ax.axis("off")
    return save_figure(fig, path)


def loss_histograms(losses: dict, rows: list[dict], path: Path) -> Path:
    """Test-loss histograms per width (scaled by their mean, as Choromanska et al. Fig. 5
    compare shapes) and the train / test correlation per width beside the published one."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for w, loss in losses.items():
        v = np.asarray(loss, dtype=float)
        axes[0].hist(v / v.mean(), bins=20, histtype="step", lw=1.4, label=f"n1={w}")
    axes[0].set_xlabel("test loss / mean test loss (per width)")
    axes[0].set_title("spread of the final test losses over restarts", fontsize=9)
    axes[0].legend(fontsize=7)
    ws = [r["width"] for r in rows]
    axes[1].plot(ws, [r["pearson_train_test"] for r in rows], "o-", label="ours (digits 8x8)")
    pub = [
        (r["width"], r["published_pearson"]) for r in rows if np.isfinite(r["published_pearson"])
    ]
    if pub:
        axes[1].plot(
            *zip(*pub, strict=True), "s--", label="Choromanska et al. Table 1 (MNIST 10x10)"
        )
    axes[1].set_xscale("log")
    axes[1].set_xticks(ws, [str(w) for w in ws])
    axes[1].minorticks_off()
    axes[1].set_xlabel("hidden units n1")
    axes[1].set_ylabel("Pearson correlation, train vs test loss")
    axes[1].legend(fontsize=7)
    return save_figure(fig, path)


def index_law(result: dict, path: Path) -> Path:
    """Index against loss of the critical points with the fitted laws, then the exact Hessian
    spectrum at a few loss levels beside the free sum H0 + H1."""
    sp = result["spectra"]
    fig, axes = plt.subplots(1, 1 + len(sp), figsize=(4.6 * (1 + len(sp)), 3.6), squeeze=False)
    ax = axes[0][0]
    eps = np.asarray(result["points"]["loss"], float)
    alpha = np.asarray(result["points"]["index"], float)
    ax.scatter(eps, alpha, s=12, label="critical points")
    fit = result.get("fit") or {}
    if fit:
        e = np.linspace(eps.min(), eps.max(), 300)
        for a, ec, k, style, lab in (
            (fit["a"], fit["eps_c"], fit["k"], "k-", f"fit: k = {fit['k']:.2f}"),
            (fit["a_32"], fit["eps_c_32"], 1.5, "r--", "fit: k = 3/2"),
        ):
            ax.plot(e, a * np.clip((e - ec) / ec, 0, None) ** k, style, lw=1, label=lab)
    ax.set_xlabel("loss eps at the critical point")
    ax.set_ylabel("index alpha")
    ax.set_title("index vs loss (Pennington & Bahri 2017)", fontsize=9)
    ax.legend(fontsize=7)
    for ax, s in zip(axes[0][1:], sp, strict=True):
        ax.hist(np.asarray(s["eig"]), bins=40, density=True, alpha=0.4, label="exact eig")
        ax.plot(np.asarray(s["grid"]), np.asarray(s["rho_free"]), lw=1.2, label="free sum H0 + H1")
        ax.set_yscale("log")
        ax.set_ylim(1e-3, None)
        ax.set_title(
            f"loss {s['loss']:.3f}: index {s['index']:.3f} (free sum {s['index_free_sum']:.3f})",
            fontsize=9,
        )
        ax.set_xlabel("Hessian eigenvalue")
        ax.legend(fontsize=7)
    return save_figure(fig, path)
