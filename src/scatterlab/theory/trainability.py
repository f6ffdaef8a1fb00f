"""Heat map of the trainability study: training accuracy over (sigma_w^2, depth) with the
theory's L = 6 xi_c overlaid (the report's plot spec draws lines and bars, not heat maps).

    python -m scatterlab.theory.trainability MULTIRUN_DIR [MORE_DIRS] [--out results/NAME]

Reads every job's metrics.json (`sigma_w2`, `depth`, `train_acc_final`, written by
`scatterlab.modules.theory.TrainabilityModule`) and .hydra/config.yaml (model.sigma_b,
model.activation); writes NAME.png, NAME.md and NAME.json (default: into the first DIR).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

from scatterlab.errors import ConfigError
from scatterlab.theory import plots
from scatterlab.theory.meanfield import MeanField


def collect(dirs: list[Path]) -> list[dict]:
    """One dict per finished job: sigma_w2, depth, train_acc_final, sigma_b2, activation."""
    jobs = []
    for d in dirs:
        for m in sorted(d.glob("**/metrics.json")):
            met = json.loads(m.read_text())
            if "train_acc_final" not in met or met.get("status", "ok") != "ok":
                continue
            cfg_path = m.parent / ".hydra" / "config.yaml"
            model = (
                yaml.safe_load(cfg_path.read_text()).get("model", {}) if cfg_path.exists() else {}
            )
            jobs.append(
                {
                    "sigma_w2": float(met["sigma_w2"]),
                    "depth": int(met["depth"]),
                    "train_acc_final": float(met["train_acc_final"]),
                    "sigma_b2": float(model.get("sigma_b", 0.0)) ** 2,
                    "activation": model.get("activation", "tanh"),
                    "env": met.get("env"),
                }
            )
    if not jobs:
        raise ConfigError(
            f"no finished trainability jobs (metrics.json with train_acc_final) "
            f"under {', '.join(map(str, dirs))}"
        )
    return jobs


def heatmap(dirs: list[Path], out: Path) -> dict:
    jobs = collect(dirs)
    sw2s = sorted({round(j["sigma_w2"], 6) for j in jobs})
    depths = sorted({j["depth"] for j in jobs})
    acc = np.full((len(sw2s), len(depths)), np.nan)
    for j in jobs:
        acc[sw2s.index(round(j["sigma_w2"], 6)), depths.index(j["depth"])] = j["train_acc_final"]
    sb2 = jobs[0]["sigma_b2"]
    mf = MeanField(jobs[0]["activation"])
    grid = torch.linspace(min(sw2s), max(sw2s), 200, dtype=torch.float64)
    six_xi = (6 * mf.xi_c(grid, torch.full_like(grid, sb2))).numpy()
    six_xi = np.where(six_xi > 10 * max(depths), 10 * max(depths), six_xi)  # the divergence
    out.parent.mkdir(parents=True, exist_ok=True)
    from scatterlab.env import describe

    hw = describe(jobs[0]["env"]) if jobs[0].get("env") else "unknown hardware"
    title = f"{jobs[0]['activation']}, sigma_b^2 = {sb2:.3g}; {len(jobs)} jobs on {hw}"
    plots.trainability(sw2s, depths, acc, grid.numpy(), six_xi, out.with_suffix(".png"), title)
    lines = [
        "# Trainability vs depth: training accuracy (%) of the final weights",
        "",
        f"{title}. Theory: trainable below L = 6 xi_c (white line in the PNG).",
        "",
        "| depth | " + " | ".join(f"sigma_w^2 = {w:.3g}" for w in sw2s) + " |",
        "|---" * (len(sw2s) + 1) + "|",
    ]
    for k, dep in enumerate(depths):
        cells = [
            "n/a" if np.isnan(acc[i, k]) else f"{100 * acc[i, k]:.1f}" for i in range(len(sw2s))
        ]
        lines.append(f"| {dep} | " + " | ".join(cells) + " |")
    xi_at = (6 * mf.xi_c(torch.tensor(sw2s, dtype=torch.float64), sb2)).tolist()
    lines.append("| 6 xi_c | " + " | ".join(f"{x:.3g}" for x in xi_at) + " |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    res = {
        "sigma_w2": sw2s,
        "depth": depths,
        "train_acc_final": acc.tolist(),
        "six_xi_c": xi_at,
        "sigma_b2": sb2,
        "hardware": hw,
    }
    out.with_suffix(".json").write_text(json.dumps(res, indent=1))
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dirs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=None, help="results/NAME (no suffix)")
    args = ap.parse_args(argv)
    out = args.out or args.dirs[0] / "trainability_heatmap"
    try:
        heatmap(args.dirs, out)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out.with_suffix('.png')}, .md, .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
