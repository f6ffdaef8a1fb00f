"""Trained networks' layers on the information plane, beside the optimal IB curve of the data.

    python -m scatterlab.invertible.infoplane --run tanh=RUN_DIR --run irevnet=RUN_DIR \\
        --out results/invertible_infoplane

Reads each run's analysis.json (callbacks=analysis with the information measure on the 12-bit
task), computes the IB curve of the generated task (`scatterlab.invertible.ib`: the exact
bound min(I(X;T), H(Y)) of its deterministic labels, and the iterative-IB curve of a noisy
version of the same rule, beta swept), and writes <out>.png (one panel per run: every layer's
trajectory, coloured by epoch, with the bounds), <out>.json and <out>.md (per layer: I(X;T)
at the start, its maximum and epoch, at the end; I(T;Y) at the end; tr S_W / tr S_B).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from scatterlab.invertible.ib import (
    deterministic_bound,
    ib_curve,
    infoplane_distribution,
    mutual_information,
)
from scatterlab.invertible.reconstruction import hardware


def ib_bounds(sharpness: float = 4.0, n_betas: int = 50, n_clusters: int = 16) -> dict[str, Any]:
    """The exact curve of the task's labels and the iterative-IB curve of the noisy rule."""
    p_x, p_y_x = infoplane_distribution()
    h_y = mutual_information(p_x, p_y_x)
    p_x, soft = infoplane_distribution(sharpness)
    start = time.perf_counter()
    # tol 1e-6 / 200 iterations: every point is an achievable encoder anyway, and the curve
    # matches tol 1e-9 / 500 iterations to 2e-4 bit at 1/4 of the cost
    betas = torch.logspace(-1, 3, n_betas)
    curve = ib_curve(p_x, soft, betas, n_clusters=n_clusters, max_iter=200, tol=1e-6)
    seconds = time.perf_counter() - start
    return {
        "h_y": h_y,
        "soft": {
            "sharpness": sharpness,
            "i_xy": mutual_information(p_x, soft),
            "n_clusters": n_clusters,
            "seconds": seconds,
            **curve,
        },
    }


def layer_table(history: list[dict[str, Any]], key: str = "bin") -> list[dict[str, Any]]:
    """Per layer: I(X;T) start / max (epoch) / end, I(T;Y) end, tr S_W / tr S_B start, end."""
    rows = []
    for layer in history[-1]["layers"]:
        pts = [h for h in history if f"ixt_{key}" in h["layers"].get(layer, {})]
        if not pts:
            continue
        ixt = [h["layers"][layer][f"ixt_{key}"] for h in pts]
        peak = max(range(len(ixt)), key=ixt.__getitem__)
        first, last = pts[0]["layers"][layer], pts[-1]["layers"][layer]
        rows.append(
            {
                "layer": layer,
                "ixt_start": ixt[0],
                "ixt_max": ixt[peak],
                "ixt_max_epoch": pts[peak]["epoch"],
                "ixt_end": ixt[-1],
                "ity_end": last[f"ity_{key}"],
                "ratio_start": first.get("ratio"),
                "ratio_end": last.get("ratio"),
                "ncm_start": first.get("ncm_acc"),
                "ncm_end": last.get("ncm_acc"),
                "probe_start": first.get("probe_acc"),
                "probe_end": last.get("probe_acc"),
            }
        )
    return rows


def plot(runs: dict[str, list[dict[str, Any]]], bounds: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(runs), figsize=(5.2 * len(runs), 4.2), squeeze=False)
    h_y, soft = bounds["h_y"], bounds["soft"]
    xs = torch.linspace(0, 12.5, 200)
    for ax, (name, history) in zip(axes[0], runs.items(), strict=True):
        epochs = [h["epoch"] for h in history]
        norm = matplotlib.colors.LogNorm(vmin=max(min(epochs), 1), vmax=max(epochs))
        for layer in history[-1]["layers"]:
            pts = [
                (h["layers"][layer]["ixt_bin"], h["layers"][layer]["ity_bin"], h["epoch"])
                for h in history
                if "ixt_bin" in h["layers"].get(layer, {})
            ]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "-", color="0.8", lw=0.6)
            ax.scatter(
                [p[0] for p in pts],
                [p[1] for p in pts],
                s=9,
                c=[max(p[2], 1) for p in pts],
                cmap="viridis",
                norm=norm,
                zorder=2,
            )
            ax.annotate(layer, pts[-1][:2], fontsize=6)
        ax.plot(
            xs,
            deterministic_bound(xs, h_y),
            "k-",
            lw=1.2,
            label="IB bound, the task's labels: min(I(X;T), H(Y))",
        )
        ax.plot(
            soft["ixt"],
            soft["ity"],
            "r--",
            lw=1,
            label=f"iterative IB, noisy rule (sharpness {soft['sharpness']:g})",
        )
        ax.set_xlabel("I(X;T) [bits] (binning)")
        ax.set_ylabel("I(T;Y) [bits]")
        ax.set_title(name, fontsize=10)
        ax.set_xlim(-0.2, 12.6)
        ax.set_ylim(-0.03, 1.05)
        fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap="viridis"), ax=ax, label="epoch")
    axes[0][0].legend(fontsize=6, loc="lower right")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def _pair(a: float | None, b: float | None, fmt: str = ".3g") -> str:
    return "" if a is None or b is None else f"{a:{fmt}} -> {b:{fmt}}"


def markdown(tables: dict[str, list[dict[str, Any]]], bounds: dict[str, Any] | None) -> str:
    lines = []
    if bounds:
        soft = bounds["soft"]
        lines += [
            f"IB curve of the generated 12-bit task: H(Y) = {bounds['h_y']:.5f} bit; labels are "
            "deterministic, so the optimal curve is min(I(X;T), H(Y)). Iterative IB on the noisy "
            f"rule p(y=1|x) = sigmoid({soft['sharpness']:g} (f(x) - theta) / std f): I(X;Y) = "
            f"{soft['i_xy']:.4f} bit, {len(soft['beta'])} betas in {soft['seconds']:.1f} s "
            f"({soft['n_clusters']} clusters, tolerance 1e-6, at most 200 iterations per beta).",
            "",
        ]
    lines += [
        "| run | layer | I(X;T) start | max (epoch) | end | I(T;Y) end | "
        "tr S_W / tr S_B | nearest-class-mean acc | linear-probe acc |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, rows in tables.items():
        for r in rows:
            lines.append(
                f"| {name} | `{r['layer']}` | {r['ixt_start']:.2f} | {r['ixt_max']:.2f} "
                f"({r['ixt_max_epoch']}) | {r['ixt_end']:.2f} | {r['ity_end']:.3f} | "
                f"{_pair(r['ratio_start'], r['ratio_end'])} | "
                f"{_pair(r['ncm_start'], r['ncm_end'], '.3f')} | "
                f"{_pair(r['probe_start'], r['probe_end'], '.3f')} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", action="append", default=[], help="NAME=RUN_DIR (repeatable)")
    ap.add_argument("--out", type=Path, default=Path("results/invertible_infoplane"))
    ap.add_argument("--sharpness", type=float, default=4.0)
    ap.add_argument("--no-bounds", action="store_true", help="runs not on the 12-bit task")
    ap.add_argument("--bounds-from", type=Path, default=None, help="reuse an <out>.json's bounds")
    args = ap.parse_args(argv)
    runs = {}
    for spec in args.run:
        name, _, run = spec.partition("=")
        runs[name] = json.loads((Path(run) / "analysis.json").read_text())["history"]
    if args.bounds_from:
        bounds = json.loads(args.bounds_from.read_text())["bounds"]
    else:
        bounds = None if args.no_bounds else ib_bounds(args.sharpness)
    tables = {name: layer_table(h) for name, h in runs.items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(
        json.dumps({"bounds": bounds, "layers": tables}, indent=1)
    )
    args.out.with_suffix(".md").write_text(hardware() + "\n\n" + markdown(tables, bounds))
    if runs and bounds:
        plot(runs, bounds, args.out.with_suffix(".png"))
    print(markdown(tables, bounds))


if __name__ == "__main__":
    main()
