"""Results pages of the landscapes experiments: tables of ours beside the closed forms and the
published values, from a run directory.

    python -m scatterlab.landscapes.report KIND RUN_DIR --out results/landscapes_KIND

KIND: rmt | jacobian | hessian | spin_glass | loss_surface | index. Writes OUT.md, OUT.json
(metrics, env, tables; not the raw arrays) and copies the run's PNG plots to OUT.png
(OUT_<suffix>.png if several).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

NAMES = {
    "rmt": "rmt_free_probability",
    "jacobian": "jacobian_density",
    "hessian": "hessian_spectrum",
    "spin_glass": "spin_glass",
    "loss_surface": "loss_surface_digits",
    "index": "hessian_index",
}


def _f(x: float, digits: int = 4) -> str:
    if isinstance(x, str):
        return x
    return f"{x:.{digits}g}"


def _hardware(env: dict) -> str:
    gpu = env.get("gpu_name") or "CPU only"
    return (
        f"{env.get('cpu', '?')} ({env.get('cpu_isa', '')}), {env.get('cpu_cores', '?')} cores, "
        f"{gpu}; torch {env.get('torch', '?')}. The machine was shared with other jobs: wall "
        "times overstate the cost."
    )


def _rmt(m: dict, res: dict) -> list[str]:
    lines = [
        "| case | KS distance (sampled vs theory) |",
        "|---|---|",
        *[f"| {r['case']} | {_f(r['ks'], 3)} |" for r in res["cases"]],
        "",
        "| moment | sampled | closed form |",
        "|---|---|---|",
    ]
    for key in sorted(k for k in m if k.endswith("/sampled")):
        base = key[: -len("/sampled")]
        lines.append(f"| {base} | {_f(m[key])} | {_f(m.get(base + '/closed_form', 'n/a'))} |")
    lines += [
        "",
        f"Free sum of semicircles (variances 1 and var_b) by subordination vs the closed-form "
        f"semicircle of the summed variance: max density error "
        f"{_f(m['free_sum_sc/max_density_error'], 2)}.",
    ]
    return lines


def _jacobian(m: dict, res: dict) -> list[str]:
    lines = [
        "| phi | weights | depth L | sigma_w^2 | KS distance of s^2 | var theory | var measured "
        "| atom at 0 | theory time (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        lines.append(
            f"| {r['phi']} | {r['weights']} | {r['depth']} | {_f(r['sw2'])} | {_f(r['ks'], 3)} "
            f"| {_f(r['var_theory'])} | {_f(r['var_measured'])} | {_f(r['atom0'], 3)} "
            f"| {_f(r['theory_time_s'], 2)} |"
        )
    return lines


def _hessian(m: dict, res: dict) -> list[str]:
    rows = [
        ("loss", "loss", None),
        ("parameters", "params", None),
        ("lambda_max exact / Lanczos", "lambda_max_exact", "lambda_max_lanczos"),
        ("top-k Lanczos max relative error", "top5_max_rel_err", None),
        ("trace exact / Hutchinson", "trace_exact", "trace_hutchinson"),
        ("Hutchinson standard error", "trace_hutchinson_se", None),
        ("trace SLQ", "trace_slq", None),
        ("index exact (eig < -1e-9 max|eig|)", "index_exact", None),
        ("index below -1 % max|eig|: exact / SLQ", "index_exact_below_res", "index_slq_below_res"),
        ("index below -1 %: free sum H0 + H1", "index_free_h0_plus_h1_below_res", None),
        ("W1(SLQ, exact) / max|eig|", "w1_slq_vs_exact_rel", None),
        ("W1(free sum H0 + H1, exact) / max|eig|", "w1_free_sum_vs_exact_rel", None),
        ("min eig of H0 (PSD)", "h0_min_eig", None),
        ("max|eig H1| / max|eig H|", "h1_norm_rel", None),
    ]
    lines = ["| quantity | init | trained |", "|---|---|---|"]
    for label, a, b in rows:
        cells = []
        for tag in ("init", "trained"):
            va = m.get(f"{tag}/{a}")
            cell = _f(va) if va is not None else "-"
            if b is not None:
                cell += f" / {_f(m.get(f'{tag}/{b}'))}"
            cells.append(cell)
        lines.append(f"| {label} | {cells[0]} | {cells[1]} |")
    if "large/params" in m:
        lines += [
            "",
            "| cost on the larger MLP | value |",
            "|---|---|",
            f"| parameters | {m['large/params']} |",
            f"| gradient time (s, median of 7) | {_f(m['large/grad_time_s'], 3)} |",
            f"| HVP time (s, median of 7) | {_f(m['large/hvp_time_s'], 3)} |",
            f"| HVP / gradient | {_f(m['large/hvp_over_grad'], 3)} (target <= 3) |",
            f"| SLQ: HVPs, seconds | {m['large/slq_hvps']}, {_f(m['large/slq_time_s'], 3)} |",
            f"| lambda_max (largest Ritz value) | {_f(m['large/lambda_max_slq'])} |",
        ]
    return lines


def _spin_glass(m: dict, res: dict) -> list[str]:
    lines = [
        f"p = {res['p']}. Closed forms: E_inf = 2 sqrt((p-1)/p) = {_f(res['E_inf'], 6)} "
        f"(seed: 1.63299 for p = 3); E_0 (root of Theta_p) = {_f(res['E_0'], 6)} (published "
        "about 1.657 for p = 3); E_k, the roots of Theta_{k,p} for index k: "
        + ", ".join(f"E_{k} = {_f(m[f'E_{k}_index'], 5)}" for k in range(10) if f"E_{k}_index" in m)
        + ".",
        "",
        "| N | restarts | mean H/N | sd | min | max | max RMS grad | steps | index (mean) "
        "| mean lambda_min | time (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["table"]:
        lines.append(
            f"| {r['N']} | {r['restarts']} | {_f(r['mean'])} | {_f(r['sd'], 3)} | {_f(r['min'])} "
            f"| {_f(r['max'])} | {_f(r['grad_rms_max'], 2)} | {r['steps']} "
            f"| {_f(r['index_mean'], 3)} | {_f(r['lambda_min_mean'], 3)} | {_f(r['time_s'], 3)} |"
        )
    ks = sorted({int(k.split("/")[1][2:]) for k in m if k.startswith("saddles/k=")})
    if ks:
        lines += [
            "",
            "Index-k critical points by eigenvector following at N = "
            f"{res['saddles'][str(ks[0])]['n'] if 'saddles' in res else '?'} "
            "(converged: RMS Riemannian gradient < 1e-3):",
            "",
            "| k | converged | index exactly k | mean H/N | -E_k (ABC, N -> inf) |",
            "|---|---|---|---|---|",
            *[
                f"| {k} | {_f(m[f'saddles/k={k}/converged'], 3)} "
                f"| {_f(m[f'saddles/k={k}/index_is_k'], 3)} "
                f"| {_f(m[f'saddles/k={k}/mean_energy'])} "
                f"| {_f(-m[f'E_{k}_index']) if f'E_{k}_index' in m else '-'} |"
                for k in ks
            ],
        ]
    if "mean_energy_fit_1_over_N/intercept" in m:
        lines += [
            "",
            f"Fit mean = a + b / N: a = {_f(m['mean_energy_fit_1_over_N/intercept'])}, b = "
            f"{_f(m['mean_energy_fit_1_over_N/slope'])} (against -E_inf = {_f(-res['E_inf'])}).",
        ]
    return lines


def _loss_surface(m: dict, res: dict) -> list[str]:
    lines = [
        f"{res['restarts']} SGD restarts per width; digits 8x8 (Choromanska et al.: MNIST 10x10).",
        "",
        "| hidden units n1 | train loss (mean) | test loss (mean) | test loss sd | sd / mean "
        "| Pearson train-test | published (Table 1) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        lines.append(
            f"| {r['width']} | {_f(r['train_loss_mean'])} | {_f(r['test_loss_mean'])} "
            f"| {_f(r['test_loss_sd'], 3)} | {_f(r['test_loss_cv'], 3)} "
            f"| {_f(r['pearson_train_test'], 3)} | {_f(r['published_pearson'])} |"
        )
    return lines


def _index(m: dict, res: dict) -> list[str]:
    md = res["model"]
    lines = [
        f"One hidden tanh layer, linear outputs: d = {md['d']}, n = {md['n']}, k = {md['k']}, "
        f"{m['params']} parameters, squared loss on m = {md['m']} random Gaussian inputs, "
        + (
            f"targets from a random teacher of the same shape + noise {md['noise']}"
            if md.get("teacher")
            else "random Gaussian targets"
        )
        + f", weight decay {md['decay']}. Newton / Levenberg-Marquardt on the gradient from "
        f"{m['starts']} starts (gradient-descent snapshots and random points): "
        f"{m['converged']} converged (|grad| < tol, {_f(100 * m['converged_fraction'], 3)} %; "
        f"median {_f(m['iters_median_converged'], 3)} iterations; the others stalled at a "
        f"median |grad| of {_f(m['grad_norm_median_unconverged'], 2)}), "
        f"{m['distinct']} distinct critical points; solver {_f(m['solve_time_s'], 3)} s. "
        "eps: the data loss at the critical point (the decay term left out).",
        "",
    ]
    if "fit/k" in m:
        lines += [
            "| fit alpha = a ((eps - eps_c) / eps_c)^k | a | eps_c | k | RMS residual |",
            "|---|---|---|---|---|",
            f"| k free | {_f(m['fit/a'], 3)} | {_f(m['fit/eps_c'])} | {_f(m['fit/k'], 3)} "
            f"| {_f(m['fit/rmse'], 2)} |",
            f"| k = 3/2 (Pennington & Bahri) | {_f(m['fit/a_32'], 3)} | {_f(m['fit/eps_c_32'])} "
            f"| 1.5 | {_f(m['fit/rmse_32'], 2)} |",
            f"| published prefactor | {_f(m['alpha0_published'], 3)} | | 1.5 | |",
            "",
        ]
    if res.get("spectra"):
        lines += [
            "| loss eps | index (exact) | index below -1 % max|eig| | free sum H0 + H1 below "
            "-1 % |",
            "|---|---|---|---|",
            *[
                f"| {_f(s['loss'])} | {_f(s['index'], 3)} | {_f(s['index_below_1pct'], 3)} "
                f"| {_f(s['index_free_sum'], 3)} |"
                for s in res["spectra"]
            ],
        ]
    return lines


TABLES = {
    "rmt": _rmt,
    "jacobian": _jacobian,
    "hessian": _hessian,
    "spin_glass": _spin_glass,
    "loss_surface": _loss_surface,
    "index": _index,
}
TITLES = {
    "rmt": "Random matrices and free probability: sampled vs closed forms and R/S-transforms",
    "jacobian": "Jacobian singular-value densities of deep random networks (S-transform theory)",
    "hessian": "Hessian spectra of a small MLP on the digits: exact vs Lanczos / SLQ / Hutchinson",
    "spin_glass": "Spherical 3-spin glass: descent energies, index, ABC complexity",
    "loss_surface": "Loss surfaces of one-hidden-layer ReLU nets on the digits (Choromanska "
    "Fig. 5)",
    "index": "Index of critical points against their loss (Pennington & Bahri 2017), CPU scale",
}


def _strip(x):
    """Drop the raw arrays (singular values, densities, eigenvalues) from the results."""
    if isinstance(x, dict):
        return {
            k: _strip(v)
            for k, v in x.items()
            if k
            not in (
                "singular_values",
                "lam",
                "rho",
                "eig",
                "eig_h0",
                "eig_h1",
                "grid",
                "rho_slq",
                "rho_free",
                "slq_nodes",
                "slq_weights",
                "energies",
                "index",
                "complexity",
                "points",
            )
        }
    if isinstance(x, list):
        return [_strip(v) for v in x]
    return x


def write(kind: str, run_dir: Path, out: Path, command: str = "") -> Path:
    name = NAMES[kind]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    res = json.loads((run_dir / f"{name}.json").read_text())
    env = metrics.get("env", {})
    lines = [
        f"**{TITLES[kind]}**",
        "",
        f"Command: `{command or 'python train.py experiment=...'}`; compute "
        f"{_f(metrics.get('compute_time_s', float('nan')), 3)} s.",
        "",
        f"Hardware: {_hardware(env)}",
        "",
        *TABLES[kind](metrics, res),
    ]
    pngs = sorted(run_dir.glob(f"{name}_*.png"))
    for i, png in enumerate(pngs):
        dest = out.with_suffix(".png") if len(pngs) == 1 else out.parent / f"{out.name}_{i}.png"
        shutil.copy(png, dest)
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    payload = {"metrics": metrics, "results": _strip(res), "command": command}
    out.with_suffix(".json").write_text(json.dumps(payload, indent=1))
    return out.with_suffix(".md")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("kind", choices=sorted(NAMES))
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--command", default="")
    a = ap.parse_args()
    print(write(a.kind, a.run_dir, a.out, a.command))


if __name__ == "__main__":
    main()
