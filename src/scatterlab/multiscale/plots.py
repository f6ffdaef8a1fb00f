"""Figures of the multiscale experiments (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from scatterlab.theory.plots import save_figure  # noqa: E402


def log_concavity(rows: list[dict], gauss: dict[str, list[dict]], path: Path) -> None:
    """Left: smallest Hessian eigenvalue (median, min-max band over samples) against beta,
    unconditional vs finest-scale conditional per wavelet. Right: condition numbers per scale
    of a Gaussian field's conditional vs unconditional energies."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    names = [k for k in rows[0]["min_eig"]]
    betas = [r["beta"] for r in rows]
    for name in names:
        med = [r["min_eig"][name]["median"] for r in rows]
        lo = [r["min_eig"][name]["min"] for r in rows]
        hi = [r["min_eig"][name]["max"] for r in rows]
        (line,) = a.plot(betas, med, "o-", label=name)
        a.fill_between(betas, lo, hi, color=line.get_color(), alpha=0.2)
    a.axhline(0, color="k", lw=0.8)
    a.set_xlabel("beta")
    a.set_ylabel("smallest Hessian eigenvalue")
    a.set_title(f"phi^4, L = {rows[0]['size']}: E(x) vs E(xbar_1 | x_1)")
    a.legend(fontsize=8)
    for w, table in gauss.items():
        js = [r["scale"] for r in table]
        b.plot(js, [r["conditional_kappa"] for r in table], "o-", label=f"conditional ({w})")
        b.plot(js, [r["unconditional_kappa"] for r in table], "s--", label=f"x_(j-1) ({w})")
    b.set_yscale("log")
    b.set_xlabel("scale j")
    b.set_ylabel("condition number of the Hessian")
    b.set_title("Gaussian critical-like field: per scale")
    b.legend(fontsize=8)
    save_figure(fig, path)


def steps_vs_size(rows: list[dict], path: Path) -> None:
    """N needed to reach each KL target against L, one panel per (eta, grid), log-log."""
    panels = sorted({(r["eta"], r["grid"]) for r in rows})
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False)
    for ax, (eta, grid) in zip(axes[0], panels, strict=True):
        for model, marker in (("sgm", "o-"), ("wsgm", "s--")):
            for eps in sorted({r["eps"] for r in rows}):
                sel = [
                    r
                    for r in rows
                    if r["eta"] == eta
                    and r["grid"] == grid
                    and r["model"] == model
                    and r["eps"] == eps
                    and r["steps"] is not None
                ]
                if sel:
                    ax.plot(
                        [r["size"] for r in sel],
                        [r["steps"] for r in sel],
                        marker,
                        label=f"{model.upper()}, KL/pixel <= {eps:g}",
                    )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("lattice size L")
        ax.set_ylabel("sampling steps N needed")
        ax.set_title(f"P(k) ~ |k|^-{eta:g}, {grid} grid")
        ax.legend(fontsize=7)
    save_figure(fig, path)
