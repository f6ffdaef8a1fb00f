"""Table of one rainbow run (its metrics.json) -> results/rainbow_<name>.md.

  .venv/bin/python scripts/rainbow_report.py outputs/rainbow_quickstart --name quickstart \\
      --title "experiment=quickstart_rainbow (digits)"
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from scatterlab.env import describe, environment  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("run_dir")
    p.add_argument("--name", default="quickstart")
    p.add_argument("--title", default="")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--published-clip",
        nargs="*",
        default=[],
        metavar="K=ACC",
        help="published clipping accuracies (%%) for a comparison row, e.g. 1=18.82 5=45.37",
    )
    args = p.parse_args()
    published = {int(k): float(v) for k, v in (item.split("=") for item in args.published_clip)}
    m = json.loads((Path(args.run_dir) / "metrics.json").read_text())

    def pct(key: str) -> str:
        return f"{100 * m[key]:.1f}" if key in m else "n/a"

    lines = [
        f"Hardware: {describe(environment(device=args.device))}. {args.title} "
        f"(run time {m.get('wall_time_s', float('nan')):.0f} s"
        + (", training included)." if "best_epoch" in m else ")."),
        "",
        "| trained | trained, exact statistics | rainbow (mean of samples) | rainbow sample std | "
        "rainbow + trained classifier | random-rotation control |",
        "|---|---|---|---|---|---|",
        f"| {pct('trained_acc')} | {pct('trained_acc_exact_stats')} | {pct('rainbow_acc')} | "
        f"{pct('rainbow_acc_std')} | {pct('rainbow_trained_classifier_acc')} | "
        f"{pct('rotation_control_acc')} |",
        "",
        "| aligned representation | relative alignment error | explained variance r2 |",
        "|---|---|---|",
    ]
    for k in m:
        if k.startswith("alignment_error/"):
            name = k.split("/", 1)[1]
            lines.append(f"| input of {name} | {m[k]:.3f} | {m[f'alignment_r2/{name}']:.3f} |")
    clip = sorted((int(k.split("/k")[1]), v) for k, v in m.items() if k.startswith("clip_acc/"))
    if clip:
        lines += [
            "",
            "Clipping (accuracy % when the layer's weights keep their top-k eigen-components):",
            "",
            "| k | " + " | ".join(str(k) for k, _ in clip) + " |",
            "|---|" + "---|" * len(clip),
            "| acc | " + " | ".join(f"{100 * v:.1f}" for _, v in clip) + " |",
        ]
        if published:
            cells = [f"{published[k]:.1f}" if k in published else "-" for k, _ in clip]
            lines.append("| published | " + " | ".join(cells) + " |")
    gauss = sorted({k.split("/")[1] for k in m if k.startswith("gaussianity/")})
    if gauss:
        tests = sorted(
            {k.split("/", 2)[2] for k in m if k.startswith("gaussianity/")},
            key=lambda t: (not t.startswith("ks"), int(t[6:]) if t.startswith("ks") else 0, t),
        )
        lines += [
            "",
            "Gaussianity of the resampled layers (C_j from all source networks): KS p-values of "
            "whitened components r vs N(0, 1); fractions of eigenvalues outside the "
            "Marchenko-Pastur bulk, colored and whitened:",
            "",
            "| layer | " + " | ".join(tests) + " |",
            "|---|" + "---|" * len(tests),
        ]
        for layer in gauss:
            cells = [m.get(f"gaussianity/{layer}/{t}") for t in tests]
            lines.append(
                f"| {layer} | " + " | ".join("-" if c is None else f"{c:.3g}" for c in cells) + " |"
            )
    out = ROOT / "results" / f"rainbow_{args.name}.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
