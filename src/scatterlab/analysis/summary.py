"""Markdown summaries of one run's analysis.json (the results files of the experiments).

    python -m scatterlab.analysis.summary RUN_DIR --kind infoplane|collapse --out results/NAME

Writes NAME.md (+ copies the run's plots as NAME_<plot>.png). `infoplane`: I(X;T) and I(T;Y)
per layer at a few epochs for both estimators, and per layer the rise and fall of I(X;T)
(maximum, its epoch, final value: compression = maximum - final). `collapse`: NC1-NC4 of the
classifier input and the per-layer NC1 at a few epochs.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any


def _pick(history: list[dict[str, Any]], n: int = 7) -> list[dict[str, Any]]:
    if len(history) <= n:
        return history
    idx = sorted({round(i * (len(history) - 1) / (n - 1)) for i in range(n)})
    return [history[i] for i in idx]


def infoplane(history: list[dict[str, Any]]) -> str:
    names = list(history[-1]["layers"])
    out = []
    for est in ("bin", "kde"):
        out += [f"**{est}**: I(X;T) / I(T;Y) in bits per layer", ""]
        out.append("| epoch | " + " | ".join(f"`{n}`" for n in names) + " |")
        out.append("|---" * (len(names) + 1) + "|")
        for h in _pick(history):
            cells = [
                f"{h['layers'][n][f'ixt_{est}']:.2f} / {h['layers'][n][f'ity_{est}']:.3f}"
                for n in names
            ]
            out.append(f"| {h['epoch']} | " + " | ".join(cells) + " |")
        out += [
            "",
            f"I(X;T) by {est} over training: start, maximum (epoch), end; fall = max - end",
            "",
        ]
        out.append("| layer | start | max (epoch) | end | fall |")
        out.append("|---|---|---|---|---|")
        for n in names:
            xs = [(h["layers"][n][f"ixt_{est}"], h["epoch"]) for h in history]
            mx, ep = max(xs)
            start, end = xs[0][0], xs[-1][0]
            out.append(f"| `{n}` | {start:.2f} | {mx:.2f} ({ep}) | {end:.2f} | {mx - end:.2f} |")
        out.append("")
    return "\n".join(out)


def collapse(history: list[dict[str, Any]]) -> str:
    keys = [
        k
        for k in ("acc", "nc1", "nc2_equinorm_means", "nc2_equiangular_means",
                  "nc2_maxangle_means", "nc2_equinorm_weights", "nc3", "nc4")
        if k in history[-1]["classifier"]
    ]  # fmt: skip
    out = ["| epoch | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for h in _pick(history, 10):
        out.append(
            f"| {h['epoch']} | " + " | ".join(f"{h['classifier'][k]:.3g}" for k in keys) + " |"
        )
    names = list(history[-1]["layers"])
    out += ["", "NC1 = tr(Σ_W Σ_B⁺)/K per layer", ""]
    out.append("| epoch | " + " | ".join(f"`{n}`" for n in names) + " |")
    out.append("|---" * (len(names) + 1) + "|")
    for h in _pick(history, 6):
        out.append(
            f"| {h['epoch']} | " + " | ".join(f"{h['layers'][n]['nc1']:.3g}" for n in names) + " |"
        )
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path)
    p.add_argument("--kind", choices=("infoplane", "collapse"), required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--title", default=None)
    args = p.parse_args(argv)
    doc = json.loads((args.run / "analysis.json").read_text())
    hist = doc["history"]
    body = infoplane(hist) if args.kind == "infoplane" else collapse(hist)
    metrics = json.loads((args.run / "metrics.json").read_text())
    from scatterlab.env import describe

    env = describe(metrics["env"]) if "env" in metrics else "unknown hardware"
    head = [f"# {args.title or args.run.name}", ""]
    head += [
        f"Run: `{args.run}`; {len(hist)} analyses, epochs {hist[0]['epoch']}..{hist[-1]['epoch']}; "
        f"test acc {metrics.get('test/acc', float('nan')):.3f}; {env}; "
        f"wall time {metrics.get('wall_time_s', 0) / 60:.1f} min.",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text("\n".join(head) + "\n" + body)
    for png in args.run.glob("*.png"):
        shutil.copy(png, args.out.parent / f"{args.out.name}_{png.stem}.png")
    print(f"wrote {args.out}.md")


if __name__ == "__main__":
    main()
