"""N needed to reach a fixed spectrum error against the lattice size L, SGM vs WSGM (issue 25).

Reads two study reports (``scatterlab-report --out`` JSON): the exact-score study
``results/wsgm_gaussian_oracle.json`` (rows model.kind, module.grid, data.size) and the
trained-score study ``results/wsgm_steps_vs_size.json`` (rows model, data.size; REDUCED CPU
training). For every curve error(N) it takes the N at which the error first drops to a target
(0.05 and 2 x the floor, as issue 25 asks, and 0.1, above every sampled floor and plateau),
interpolated in (log N, log err) (``scatterlab.modules.wsgm.steps_to_reach``), fits N ~ L^alpha
and writes ``results/multiscale_steps_to_reach.{md,json,png}``.

    python scripts/steps_vs_size_curves.py
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from scatterlab.modules.wsgm import steps_to_reach  # noqa: E402
from scatterlab.report import power_law  # noqa: E402


def curves(path: Path, kind_key: str, grid_key: str | None) -> dict[tuple[str, str], dict]:
    """{(model, grid): {L: (ns, errs, floor)}} from a study report."""
    rep = json.loads(path.read_text())
    out: dict[tuple[str, str], dict] = {}
    for row in rep["rows"]:
        v, m = row["values"], row["metrics"]
        ns = sorted(
            int(k.split("/")[1][2:])
            for k in m
            if k.startswith("steps/N=") and k.endswith("/spectrum_error")
        )
        ns = [n for n in ns if (m[f"steps/N={n}/spectrum_error"] or {}).get("mean") is not None]
        errs = [m[f"steps/N={n}/spectrum_error"]["mean"] for n in ns]
        grid = str(v[grid_key]) if grid_key else "quadratic"
        floor = m.get("floor/spectrum_error", {}).get("mean")
        out.setdefault((str(v[kind_key]), grid), {})[int(v["data.size"])] = (ns, errs, floor)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--oracle", default="results/wsgm_gaussian_oracle.json")
    ap.add_argument("--trained", default="results/wsgm_steps_vs_size.json")
    ap.add_argument("--out", default="results/multiscale_steps_to_reach")
    args = ap.parse_args()
    sets = {
        "exact scores": (
            curves(Path(args.oracle), "model.kind", "module.grid"),
            ["0.05", "0.1", "2floor"],
        ),
        "trained scores, REDUCED": (
            curves(Path(args.trained), "model", None),
            ["0.05", "0.1", "2floor"],
        ),
    }
    rows, fits = [], []
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, (label, (cur, targets)) in zip(axes, sets.items(), strict=True):
        for (model, grid), by_l in sorted(cur.items()):
            for t in targets:
                pts = []
                for size in sorted(by_l):
                    ns, errs, floor = by_l[size]
                    target = (2 * floor if floor else None) if t == "2floor" else float(t)
                    n = steps_to_reach(ns, errs, target) if target else float("nan")
                    rows.append(
                        {"scores": label, "model": model, "grid": grid, "L": size,
                         "target": t, "target_value": target, "N": n}
                    )  # fmt: skip
                    if math.isfinite(n):
                        pts.append((size, n))
                fit = power_law(*zip(*pts, strict=True)) if len({p[0] for p in pts}) > 1 else None
                fits.append(
                    {"scores": label, "model": model, "grid": grid, "target": t,
                     "alpha": fit[0] if fit else None, "sizes": [p[0] for p in pts]}
                )  # fmt: skip
                if pts:
                    name = f"{model} {grid}, {t.replace('2floor', '2 x floor')}"
                    name += f": L^{fit[0]:.2f}" if fit else ""
                    ax.plot(*zip(*pts, strict=True), marker="o" if model == "wsgm" else "s",
                            ls="-" if model == "wsgm" else "--", label=name)  # fmt: skip
        ax.set(xscale="log", yscale="log", xlabel="L", ylabel="N to reach the target",
               title=label)  # fmt: skip
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(f"{args.out}.png", dpi=110)
    Path(f"{args.out}.json").write_text(json.dumps({"rows": rows, "fits": fits}, indent=1))
    md = [
        "**Sampling steps N to reach a fixed spectrum error against the lattice size L**",
        "",
        "`python scripts/steps_vs_size_curves.py` from `wsgm_gaussian_oracle.json` (exact scores,"
        " both time grids) and `wsgm_steps_vs_size.json` (trained scores, REDUCED CPU training,"
        " quadratic grid): the N at which the spectrum error first drops to the target "
        "(log-log interpolation between the N's of each sweep; n/a: not reached at the largest "
        "N), and the exponent alpha of N ~ L^alpha over the sizes where it is reached.",
        "",
    ]
    for label, (cur, targets) in sets.items():
        sizes = sorted({s for by_l in cur.values() for s in by_l})
        md += [f"{label}:", "", "| model | grid | target | " + " | ".join(f"L={s}" for s in sizes)
               + " | alpha |", "|---" * (len(sizes) + 4) + "|"]  # fmt: skip
        for model, grid in sorted(cur):
            for t in targets:
                cells = []
                for s in sizes:
                    r = [x for x in rows if x["scores"] == label and x["model"] == model
                         and x["grid"] == grid and x["L"] == s and x["target"] == t]  # fmt: skip
                    cells.append(f"{r[0]['N']:.0f}" if r and math.isfinite(r[0]["N"]) else "n/a")
                f = [x for x in fits if x["scores"] == label and x["model"] == model
                     and x["grid"] == grid and x["target"] == t][0]  # fmt: skip
                alpha = f"{f['alpha']:.2f}" if f["alpha"] is not None else "n/a"
                tname = t.replace("2floor", "2 x floor")
                md.append(f"| {model} | {grid} | {tname} | " + " | ".join(cells) + f" | {alpha} |")
        md.append("")
    md.append("![N to reach the target against L](multiscale_steps_to_reach.png)")
    Path(f"{args.out}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
