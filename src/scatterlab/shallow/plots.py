"""Matplotlib figures of the shallow-network experiments (Agg backend, PNG files)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from scatterlab.theory.plots import save_figure  # noqa: E402


def _width_ticks(ax: plt.Axes, widths: Sequence[int]) -> None:
    ax.set_xticks(list(widths), [str(m) for m in widths])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())


def _guide(ax: plt.Axes, x: Sequence[float], y0: float, slope: float, label: str) -> None:
    """A dashed power-law guide x^slope through (x[0], y0)."""
    x = np.asarray(x, dtype=float)
    ax.loglog(x, y0 * (x / x[0]) ** slope, "k--", lw=1, label=label)


def kernel_errors(res: dict, path: Path) -> Path:
    """Left: relative kernel error against m (log-log, one line per activation and d).
    Right: closed-form kernel against the angle with the Monte-Carlo values."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    ax = axes[0]
    widths = res["widths"]
    for i, row in enumerate(res["errors"]):
        err = np.asarray(row["errors"])
        rms = np.sqrt((err**2).mean(0))
        label = f"{row['activation']} d={row['d']} (slope {row['slope']:.3f})"
        ax.loglog(widths, rms, "o-", color=f"C{i}", ms=3, label=label)
    _guide(ax, widths, 1.0, -0.5, r"$m^{-1/2}$")
    _width_ticks(ax, widths)
    ax.set_xlabel("width m")
    ax.set_ylabel(r"$\|K_m - K\|_F / \|K\|_F$ (RMS over seeds)")
    ax.legend(fontsize=7)
    ax = axes[1]
    t = np.asarray(res["check"]["angles"])
    for i, (act, c) in enumerate(res["check"]["kernels"].items()):
        ax.plot(t, c["closed_form"], "-", color=f"C{i}", label=f"{act} closed form")
        ax.plot(t, c["monte_carlo"], "o", color=f"C{i}", ms=4, label=f"{act} m={res['check']['m']}")
    ax.set_xlabel(r"angle between $x$ and $x'$ ($|x| = |x'| = 1$)")
    ax.set_ylabel(r"$k(x, x')$")
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def alignment_errors(res: dict, path: Path) -> Path:
    """Held-out Procrustes alignment error against m, one panel per activation, lines per d."""
    acts = list(dict.fromkeys(r["activation"] for r in res["rows"]))
    fig, axes = plt.subplots(1, len(acts), figsize=(4.2 * len(acts), 4), squeeze=False)
    widths = res["widths"]
    for ax, act in zip(axes[0], acts, strict=True):
        rows = [r for r in res["rows"] if r["activation"] == act]
        for i, r in enumerate(rows):
            test = np.sqrt((np.asarray(r["test_error"]) ** 2).mean(0))
            fit = np.sqrt((np.asarray(r["fit_error"]) ** 2).mean(0))
            label = f"d={r['d']} (slope {r['slope']:.2f})"
            ax.loglog(widths, test, "o-", color=f"C{i}", ms=3, label=label)
            ax.loglog(widths, fit, ":", color=f"C{i}", lw=1)
        _guide(ax, widths, 0.5, -0.5, r"$m^{-1/2}$")
        _width_ticks(ax, widths)
        ax.set_title(f"{act}: two random maps aligned")
        ax.set_xlabel("width m")
        ax.set_ylabel(r"$E|A\psi - \phi|^2 / E|\phi|^2$ (held out; dotted: fit set)")
        ax.legend(fontsize=7)
    return save_figure(fig, path)


def particles(ax: plt.Axes, traj_w: np.ndarray, traj_a: np.ndarray, w_star, a_star, title: str):
    """Trajectories of p_i = |a_i| w_i (2 first coordinates), red: a_i > 0, blue: a_i < 0;
    teacher atoms as stars on dashed lines through 0 (a neuron at -u is equivalent to +u up to a
    linear function)."""
    p = np.abs(traj_a)[..., None] * traj_w  # (R, m, d)
    sign = np.sign(traj_a[-1])
    for i in range(p.shape[1]):
        col = "tab:red" if sign[i] > 0 else "tab:blue"
        ax.plot(p[:, i, 0], p[:, i, 1], "-", color=col, lw=0.6, alpha=0.6)
    ax.scatter(p[-1, :, 0], p[-1, :, 1], c=np.where(sign > 0, "tab:red", "tab:blue"), s=6)
    ps = np.abs(a_star)[:, None] * w_star
    lim = 1.15 * max(np.abs(ps[:, :2]).max(), np.abs(p[..., :2]).max())
    for q, s in zip(ps, a_star, strict=True):
        u = q[:2] / max(np.linalg.norm(q[:2]), 1e-12)
        ax.plot([-lim * u[0], lim * u[0]], [-lim * u[1], lim * u[1]], "k--", lw=0.5)
        ax.plot(q[0], q[1], "*", ms=13, mec="k", color="tab:red" if s > 0 else "tab:blue")
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)


def meanfield(res: dict, traj: dict, teacher: tuple, path: Path) -> Path:
    """Particles of two widths; loss against time; final loss and distance against m."""
    fig, axes = plt.subplots(1, 4, figsize=(18, 4.2))
    for ax, (m, t) in zip(axes[:2], traj.items(), strict=False):
        particles(ax, t["w"], t["a"], *teacher, f"m = {m}: particles $|a_i| w_i$ (seed 0)")
    ax = axes[2]
    for i, r in enumerate(res["runs"]):
        ax.loglog(
            np.maximum(r["steps"], 1),
            np.median(r["loss"], 0),
            color=f"C{i % 10}",
            label=f"m={r['m']}",
        )
    ax.set_xlabel("GD step")
    ax.set_ylabel("training loss (median over seeds)")
    ax.legend(fontsize=7)
    ax = axes[3]
    widths = [r["m"] for r in res["runs"]]
    for r in res["runs"]:
        ax.scatter([r["m"]] * len(r["final_rel_loss"]), r["final_rel_loss"], s=8, c="C0")
        ax.scatter([r["m"]] * len(r["distance"]), r["distance"], s=8, c="C1", marker="x")
    med_loss = [np.median(r["final_rel_loss"]) for r in res["runs"]]
    ax.plot(widths, med_loss, "C0-", label="loss / loss(0)")
    ax.plot(widths, [np.median(r["distance"]) for r in res["runs"]], "C1-", label="distance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("student width m")
    ax.axvline(res["m0"], color="k", lw=0.5, ls=":")
    ax2 = ax.twinx()
    ax2.plot(widths, [r["converged_fraction"] for r in res["runs"]], "k.-", label="converged")
    ax2.set_ylim(-0.05, 1.05)
    ax2.set_ylabel("fraction of seeds converged")
    ax.legend(fontsize=7, loc="lower left")
    return save_figure(fig, path)


def lazy(res: dict, path: Path) -> Path:
    """Against alpha: relative weight change, pattern change, distance to the linearised model,
    and test loss of the network and of its linearisation."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    alphas = np.asarray(res["alphas"])
    ax = axes[0]
    styles = {"relative_change": "o-", "pattern_change": "s-", "linear_gap": "^-"}
    for j, (act, r) in enumerate(res["by_activation"].items()):
        for key, st in styles.items():
            y = np.asarray(r[key], dtype=float)
            ok = y > 0
            ax.loglog(alphas[ok], y[ok], st, color=f"C{j}", ms=3, label=f"{act} {key}")
    _guide(ax, alphas, 1.0, -1.0, r"$1/\alpha$")
    ax.set_xlabel(r"output scale $\alpha$")
    ax.legend(fontsize=6)
    ax = axes[1]
    for j, (act, r) in enumerate(res["by_activation"].items()):
        ax.loglog(alphas, r["test_loss"], "o-", color=f"C{j}", ms=3, label=f"{act} network")
        ax.axhline(r["linear_test_loss"], color=f"C{j}", ls="--", lw=1, label=f"{act} linearised")
    ax.set_xlabel(r"output scale $\alpha$")
    ax.set_ylabel("test loss after training")
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def lazy_particles(traj: dict, teacher: tuple, path: Path) -> Path:
    """Particle trajectories for the smallest and largest alpha (the 2D illustration)."""
    fig, axes = plt.subplots(1, len(traj), figsize=(4.5 * len(traj), 4.5), squeeze=False)
    for ax, (title, t) in zip(axes[0], traj.items(), strict=True):
        particles(ax, t["w"], t["a"], *teacher, title)
    return save_figure(fig, path)


def lazy_cnn(res: dict, path: Path) -> Path:
    """The CNN panel against alpha: test accuracy (network and linearised model), fraction of
    unchanged ReLU patterns, and (log-log) weight movement and distance to the linearisation."""
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    alphas = np.asarray(res["alphas"], dtype=float)
    # the scattering network's pattern is the quadrant of its modulus inputs' phases
    pattern = res.get("pattern_label", "ReLU activation patterns")
    ax = axes[0]
    ax.semilogx(alphas, 100 * np.asarray(res["test_acc"]), "o-", ms=4, label="trained network")
    ax.axhline(100 * res["linear_test_acc"], color="C1", ls="--", label="linearised at init")
    ax.set_xlabel(r"output scale $\alpha$")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(res["title"], fontsize=9)
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.semilogx(alphas, 100 * np.asarray(res["unchanged_patterns"]), "s-", ms=4, color="C2")
    ax.set_xlabel(r"output scale $\alpha$")
    ax.set_ylabel(f"unchanged {pattern} (%)")
    ax = axes[2]
    for key, st, label in (
        ("relative_change", "o-", r"$|\theta - \theta_0| / |\theta_0|$"),
        ("changed_patterns", "s-", f"changed {pattern}"),
        ("linear_gap", "^-", r"$|g_\alpha - g_{lin}| / |g_{lin}|$ (test)"),
    ):
        y = np.asarray(res[key], dtype=float)
        ok = y > 0
        ax.loglog(alphas[ok], y[ok], st, ms=4, label=label)
    _guide(ax, alphas, float(res["relative_change"][0]), -1.0, r"$1/\alpha$")
    ax.set_xlabel(r"output scale $\alpha$")
    ax.legend(fontsize=7)
    return save_figure(fig, path)
