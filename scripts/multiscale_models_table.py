"""phi^4 models at L = 32 and 64 on the same fields: Gaussian model, WPH, the CSLC cascade and
the data floor (issue 25), from run directories with metrics.json.

    python scripts/multiscale_models_table.py LABEL=RUN_DIR ... --out results/NAME
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

COLS = [
    ("spectrum_error", "spectrum error", ".3f"),
    ("hist_distance", "hist distance", ".3f"),
    ("energy_per_site", "energy / site", ".3f"),
    ("energy_per_site_data", "energy / site (data)", ".3f"),
    ("abs_m_mean", "mean abs(m)", ".3f"),
    ("abs_m_mean_data", "mean abs(m) (data)", ".3f"),
    ("abs_m_w1", "W1 of abs(m)", ".3f"),
    ("seconds_per_sample", "s / sample", ".3g"),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="LABEL=RUN_DIR (LABEL: 'L | model | samples')")
    ap.add_argument("--out", required=True)
    ap.add_argument("--title", default="phi^4 (beta = 0.68) models at L = 32 and 64 (CPU)")
    ap.add_argument("--note", default="")
    args = ap.parse_args()
    rows = []
    for spec in args.runs:
        label, run = spec.rsplit("=", 1)
        m = json.loads((Path(run) / "metrics.json").read_text())
        rows.append({"label": label, "run": run, **{k: m.get(k) for k, _, _ in COLS}})
    head = "| L | model | samples | " + " | ".join(c[1] for c in COLS) + " |"
    md = [f"**{args.title}**", "", args.note, "", head, "|---" * (len(COLS) + 3) + "|"]
    for r in rows:
        cells = ["n/a" if r[k] is None else format(r[k], f) for k, _, f in COLS]
        md.append(f"| {r['label']} | " + " | ".join(cells) + " |")
    Path(f"{args.out}.md").write_text("\n".join(md) + "\n")
    Path(f"{args.out}.json").write_text(json.dumps({"rows": rows, "note": args.note}, indent=1))
    print("\n".join(md))


if __name__ == "__main__":
    main()
