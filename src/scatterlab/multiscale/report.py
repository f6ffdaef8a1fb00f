"""Results files of the multiscale experiments: a run dir -> results/<stem>.md/.json/.png.

    python -m scatterlab.multiscale.report RUN_DIR [RUN_DIR ...] --out results/multiscale_steps \
        --hardware "AMD EPYC, 2 cores, CPU only" --command "python train.py experiment=..."
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np


def _fmt(v: float | None, spec: str = ".2f") -> str:
    return "not reached" if v is None else format(v, spec)


def log_concavity_md(res: dict, metrics: dict) -> list[str]:
    """Tables of ``LogConcavityModule`` results."""
    rows = res["phi4"]
    names = list(rows[0]["min_eig"])
    out = [
        f"phi^4 energy: {res['energy']}; L = {rows[0]['size']}, "
        f"{len(rows[0]['min_eig_per_sample'][names[0]])} HMC samples per beta.",
        "",
        "Smallest Hessian eigenvalue over the samples: min / median / max "
        "(fraction of samples with a positive-definite Hessian).",
        "",
        "| beta | mean x^2 | mean abs(m) | " + " | ".join(names) + " |",
        "|---" * (3 + len(names)) + "|",
    ]
    for r in rows:
        cells = [
            f"{s['min']:.2f} / {s['median']:.2f} / {s['max']:.2f} ({s['fraction_positive']:.0%})"
            for s in (r["min_eig"][n] for n in names)
        ]
        out.append(
            f"| {r['beta']:g} | {r['x2_mean']:.3f} | {r['abs_m_mean']:.3f} | "
            + " | ".join(cells)
            + " |"
        )
    out += [
        "",
        "Score matching of the finest-scale conditional energy E(xbar_1 | x_1) in the phi^4 "
        "family (kinetic, x^2, x^4 couplings; `scatterlab.multiscale.cslc`), +- standard error; "
        "the true values are (beta, -2, 1).",
        "",
        "| beta | true | "
        + " | ".join(
            f"fit ({w})" for w in rows[0]["score_matching"] if w not in ("true", "features")
        )
        + " |",
        "|---|---|" + "---|" * (len(rows[0]["score_matching"]) - 2),
    ]
    for r in rows:
        sm = r["score_matching"]
        fits = [
            ", ".join(f"{t:.3f} +- {e:.3f}" for t, e in zip(v["theta"], v["se"], strict=True))
            for k, v in sm.items()
            if k not in ("true", "features")
        ]
        out.append(
            f"| {r['beta']:g} | {', '.join(f'{t:g}' for t in sm['true'])} | "
            + " | ".join(fits)
            + " |"
        )
    g = res["gaussian"]
    out += [
        "",
        f"Gaussian field P = 1 / (beta lambda + 2 m^2), beta = {g['beta']:g}, "
        f"m^2 = {g['mass2']:.4g}, L = {g['size']}: exact conditional Hessian of xbar_j given "
        "x_j (detail block of the marginal precision of x_{j-1}) against the marginal "
        "precision of x_{j-1} itself.",
        "",
        "| wavelet | j | size of x_(j-1) | conditional min eig | conditional kappa | "
        "x_(j-1) min eig | x_(j-1) kappa |",
        "|---|---|---|---|---|---|---|",
    ]
    for w, table in g["scales"].items():
        for t in table:
            out.append(
                f"| {w} | {t['scale']} | {t['size']} | {t['conditional_min']:.3f} | "
                f"{t['conditional_kappa']:.2f} | {t['unconditional_min']:.3f} | "
                f"{t['unconditional_kappa']:.1f} |"
            )
    return out


def cslc_md(res: dict, metrics: dict) -> list[str]:
    """Tables of ``CSLCModule`` results."""
    keys = [
        ("spectrum_error", ".3f"),
        ("hist_distance", ".3f"),
        ("energy_per_site", ".3f"),
        ("energy_per_site_data", ".3f"),
        ("energy_error", ".3f"),
        ("abs_m_mean", ".3f"),
        ("abs_m_mean_data", ".3f"),
        ("abs_m_w1", ".3f"),
    ]
    out = [
        "| model | " + " | ".join(k for k, _ in keys) + " |",
        "|---" * (len(keys) + 1) + "|",
    ]
    for tag, label in (("cslc", "CSLC cascade (MALA)"), ("floor", "training fields (floor)")):
        sc = res["scores"][tag]
        out.append(f"| {label} | " + " | ".join(format(sc[k], f) for k, f in keys) + " |")
    out += [
        "",
        f"Sampling: {metrics.get('samples_per_s', float('nan')):.1f} samples per second; MALA "
        "acceptance after adaptation: "
        + ", ".join(f"{n} {r:.2f}" for n, r in zip(res["scales"], res["acceptance"], strict=True))
        + ".",
        "",
        "Fitted couplings (kinetic, x^2, x^4) +- standard error, per scale (the finest is "
        "phi^4's own conditional: (beta, -2, 1)):",
        "",
        "| scale | " + " | ".join(res["features"]) + " |",
        "|---" * (len(res["features"]) + 1) + "|",
    ]
    for name, th, se in zip(res["scales"], res["theta"], res["se"], strict=True):
        cells = [f"{t:.3f} +- {e:.3f}" for t, e in zip(th, se, strict=True)]
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    return out


def steps_md(res: dict, metrics: dict) -> list[str]:
    """Tables of ``StepsVsSizeModule`` results."""
    rows = res["steps_needed"]
    sizes = sorted({r["size"] for r in rows})
    out = [
        f"Exact scores, DDPM ancestral sampler ({res['variance']} variance), T = {res['T']:g}, "
        f"WSGM {res['wavelet']} down to 8 x 8; P(k) = (lambda(k) + (2 pi "
        f"{res['mass_L']:g} / L)^2)^(-eta/2). Error: exact KL(data || samples) per pixel "
        "(no Monte-Carlo floor). Entries: the N needed to reach the target (to within 1/32).",
        "",
    ]
    for eta in sorted({r["eta"] for r in rows}):
        for grid in sorted({r["grid"] for r in rows}, reverse=True):
            for eps in sorted({r["eps"] for r in rows}, reverse=True):

                def pick(model, size, eta=eta, grid=grid, eps=eps):
                    for r in rows:
                        if (r["model"], r["size"], r["eta"], r["grid"], r["eps"]) == (
                            model,
                            size,
                            eta,
                            grid,
                            eps,
                        ):
                            return r["steps"]
                    return None

                alphas = {
                    f["model"]: f["alpha"]
                    for f in res["exponents"]
                    if (f["eta"], f["grid"], f["eps"]) == (eta, grid, eps)
                }
                out.append(f"**eta = {eta:g}, {grid} grid, KL/pixel <= {eps:g}**")
                out.append("")
                out.append("| model | " + " | ".join(f"L={s}" for s in sizes) + " | alpha |")
                out.append("|---" * (len(sizes) + 2) + "|")
                for model in ("sgm", "wsgm"):
                    cells = [
                        _fmt(pick(model, s), "d") if pick(model, s) else "not reached"
                        for s in sizes
                    ]
                    a = alphas.get(model)
                    out.append(f"| {model.upper()} | " + " | ".join(cells) + f" | {_fmt(a)} |")
                out.append("")
    out += [
        "Condition numbers (SGM: max/min of the standardised spectrum; WSGM: the largest over "
        "its conditional covariances and its coarsest 8 x 8 low-pass).",
        "",
        "| eta | " + " | ".join(f"L={s}" for s in sizes) + " |",
        "|---" * (len(sizes) + 1) + "|",
    ]
    for eta in sorted({c["eta"] for c in res["conditions"]}):
        cells = []
        for s in sizes:
            c = next((c for c in res["conditions"] if c["eta"] == eta and c["size"] == s), None)
            cells.append("" if c is None else f"{c['sgm']:.3g} / {c['wsgm']:.3g}")
        out.append(f"| {eta:g} (SGM / WSGM) | " + " | ".join(cells) + " |")
    sel = [
        c
        for c in res["kl_curves"]
        if "spectrum_error" in c and c["eta"] == 2.0 and c["grid"] == "quadratic"
    ]
    if sel:
        steps = sel[0]["steps"]
        out += [
            "",
            "Exact spectrum_error of SGM samples (eta = 2, quadratic grid): the metric of the "
            "sampled `wsgm_gaussian_oracle` study in its infinite-sample limit.",
            "",
            "| L | " + " | ".join(f"N={n}" for n in steps) + " |",
            "|---" * (len(steps) + 1) + "|",
        ]
        for c in sel:
            out.append(
                f"| {c['size']} | " + " | ".join(f"{v:.3f}" for v in c["spectrum_error"]) + " |"
            )
    return out


def fit_exponents(rows: list[dict]) -> list[dict]:
    """Least-squares alpha of N_needed ~ L^alpha per (model, eta, grid, eps) (reached only)."""
    fits = []
    for key in sorted({(r["model"], r["eta"], r["grid"], r["eps"]) for r in rows}):
        ok = [
            r
            for r in rows
            if (r["model"], r["eta"], r["grid"], r["eps"]) == key and r["steps"] is not None
        ]
        if len(ok) >= 2:
            x = np.log([r["size"] for r in ok])
            y = np.log([r["steps"] for r in ok])
            alpha = float(np.polyfit(x, y, 1)[0])
            fits.append(dict(zip(("model", "eta", "grid", "eps"), key, strict=True), alpha=alpha))
    return fits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path, nargs="+", help="one run, or steps runs to merge")
    ap.add_argument("--out", required=True, help="output stem, e.g. results/multiscale_steps")
    ap.add_argument("--hardware", default="AMD EPYC, 2 cores, CPU only")
    ap.add_argument("--command", default="")
    ap.add_argument("--title", default="")
    ap.add_argument("--note", default="")
    args = ap.parse_args()
    runs = []
    for d in args.run_dir:
        metrics = json.loads((d / "metrics.json").read_text())
        jsons = [p for p in d.glob("*.json") if p.name != "metrics.json"]
        runs.append((json.loads(jsons[0].read_text()), metrics))
    res, metrics = runs[0]
    if len(runs) > 1:  # steps runs over disjoint sizes (e.g. L = 512 on its own)
        for r, m in runs[1:]:
            for key in ("steps_needed", "kl_curves", "conditions"):
                res[key] = res[key] + r[key]
            for key in ("wall_time_s", "compute_time_s"):
                metrics[key] = metrics.get(key, 0.0) + m.get(key, 0.0)
            metrics.update({k: v for k, v in m.items() if k not in metrics})
        res["exponents"] = fit_exponents(res["steps_needed"])
        res["kl_curves"].sort(key=lambda c: (c["eta"], c["grid"], c["model"], c["size"]))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"**{args.title}**", ""] if args.title else []
    if args.command:
        lines += [f"`{args.command}`", ""]
    wall = metrics.get("wall_time_s", float("nan"))
    lines += [
        f"Hardware: {args.hardware}. Wall time {wall:.0f} s, of which the computation "
        f"{metrics.get('compute_time_s', float('nan')):.0f} s.",
        "",
    ]
    if args.note:
        lines += [args.note, ""]
    if "phi4" in res:
        lines += log_concavity_md(res, metrics)
    elif "scores" in res:
        lines += cslc_md(res, metrics)
    else:
        lines += steps_md(res, metrics)
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    res["metrics"] = metrics
    out.with_suffix(".json").write_text(json.dumps(res, indent=1))
    if "phi4" in res or "scores" in res:
        shutil.copy(next(args.run_dir[0].glob("*.png")), out.with_suffix(".png"))
    else:  # redrawn from the merged rows
        from scatterlab.multiscale.plots import steps_vs_size

        steps_vs_size(res["steps_needed"], out.with_suffix(".png"))


if __name__ == "__main__":
    main()
