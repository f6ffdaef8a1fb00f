"""Per-layer measures of several runs side by side, from their analysis.json files.

    python -m scatterlab.analysis.compare DIR... --key model.nonlinearity --out results/NAME

DIR: a run dir (holding analysis.json) or a multirun dir (its numbered job dirs). Each run is
labelled by the value of `--key` in its .hydra/overrides.yaml. Writes NAME.png (one panel per
measure against the layer: the last analysis solid, the first, before training, dotted),
NAME.md (a table per measure) and NAME.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

MEASURES = (
    ("ratio", "tr Σ_W / tr Σ_B", True),
    ("within", "tr Σ_W", True),
    ("between", "tr Σ_B", True),
    ("probe_acc", "linear-probe accuracy", False),
    ("ncm_acc", "nearest-class-mean accuracy", False),
)


def find_runs(dirs: list[Path]) -> list[Path]:
    runs = []
    for d in dirs:
        if (d / "analysis.json").exists():
            runs.append(d)
        else:
            runs += sorted(
                (p.parent for p in d.glob("*/analysis.json")), key=lambda p: (len(p.name), p.name)
            )
    return runs


def label_of(run: Path, key: str | None) -> str:
    ov = run / ".hydra" / "overrides.yaml"
    if key and ov.exists():
        import yaml

        for item in yaml.safe_load(ov.read_text()) or []:
            k, _, v = str(item).partition("=")
            if k.lstrip("+~") == key:
                return v
    return run.name


def compare(dirs: list[Path], key: str | None, out: Path) -> dict[str, Any]:
    runs = find_runs(dirs)
    if not runs:
        from scatterlab.errors import DataError

        raise DataError(f"no analysis.json under {', '.join(map(str, dirs))}")
    data = {}
    for r in runs:
        hist = json.loads((r / "analysis.json").read_text())["history"]
        data[label_of(r, key)] = {"first": hist[0], "last": hist[-1], "run": str(r)}
    _plot(data, out.with_suffix(".png"))
    out.with_suffix(".json").write_text(json.dumps(data, indent=1))
    out.with_suffix(".md").write_text(_table(data, key))
    return data


def _plot(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [
        m
        for m in MEASURES
        if any(m[0] in v for d in data.values() for v in d["last"]["layers"].values())
    ]
    fig, axes = plt.subplots(1, len(shown), figsize=(4.2 * len(shown), 3.8), squeeze=False)
    for ax, (m, title, log) in zip(axes[0], shown, strict=True):
        for i, (label, d) in enumerate(data.items()):
            names = list(d["last"]["layers"])
            c = f"C{i}"
            for which, style in (("last", "o-"), ("first", "o:")):
                ys = [d[which]["layers"][n].get(m, float("nan")) for n in names]
                lab = f"{label} (epoch {d[which]['epoch']})"
                ax.plot(
                    range(len(names)),
                    ys,
                    style,
                    color=c,
                    ms=3,
                    label=lab,
                    alpha=1 if which == "last" else 0.5,
                )
            ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
        ax.set_title(title, fontsize=9)
        if log:
            ax.set_yscale("log")
    axes[0][0].legend(fontsize=6)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def _table(data: dict[str, Any], key: str | None) -> str:
    lines = []
    for m, title, _ in MEASURES:
        first = next(iter(data.values()))
        names = list(first["last"]["layers"])
        if not any(m in v for v in first["last"]["layers"].values()):
            continue
        lines += [f"**{title}** (after training; before training in brackets)", ""]
        lines.append(f"| {key or 'run'} | " + " | ".join(f"`{n}`" for n in names) + " |")
        lines.append("|---" * (len(names) + 1) + "|")
        for label, d in data.items():
            cells = []
            for n in names:
                a, b = d["last"]["layers"][n].get(m), d["first"]["layers"][n].get(m)
                cells.append(f"{a:.3g} ({b:.3g})" if a is not None and b is not None else "n/a")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dirs", nargs="+", type=Path)
    p.add_argument("--key", default=None, help="override key that labels each run")
    p.add_argument("--out", type=Path, required=True, help="output path without extension")
    args = p.parse_args(argv)
    from scatterlab.console import user_errors

    with user_errors():
        args.out.parent.mkdir(parents=True, exist_ok=True)
        compare(args.dirs, args.key, args.out)
        print(f"wrote {args.out}.{{png,md,json}}")


if __name__ == "__main__":
    main()
