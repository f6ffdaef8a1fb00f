"""Results file of WSGM / SGM train.py runs: their metrics side by side and a sample grid.

    python scripts/wsgm_run_report.py outputs/cifar_wsgm_cpu_long --name cifar_wsgm_cpu

Reads each run directory's metrics.json and the overrides it was started with
(.hydra/overrides.yaml), writes results/NAME.md (hardware named) and copies the first run's
samples.png to results/NAME_samples.png.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from benchmark_scattering import hardware  # noqa: E402

ROWS = [  # (metrics.json key, label, format)
    (
        "spectrum_error",
        "spectrum_error (per-bin relative error of the radial power spectrum)",
        ".3f",
    ),
    ("spectrum_error_l2", "spectrum_error_l2 (relative L2 error of the whole spectrum)", ".3f"),
    ("hist_distance", "hist_distance (marginal histograms)", ".3f"),
    ("sample_std", "sample std (data units)", ".3f"),
    ("data_std", "data std", ".3f"),
    ("energy_per_site", "energy per site, samples (phi^4)", ".3f"),
    ("energy_per_site_data", "energy per site, data (phi^4)", ".3f"),
    ("fid", "FID", ".1f"),
    ("sample_steps", "sampling steps N (per scale for WSGM)", ".0f"),
    ("samples_per_s", "sampling throughput (samples/s)", ".1f"),
    ("val/loss", "validation loss", ".4f"),
    ("num_params", "parameters", ",.0f"),
    ("train_epoch_time_s", "training epoch (s)", ".0f"),
    ("wall_time_s", "wall time (min)", None),
]


def cell(m: dict, key: str, fmt: str | None) -> str:
    if key not in m:
        return "n/a"
    if fmt is None:  # wall time in minutes
        return f"{m[key] / 60:.1f}"
    return format(m[key], fmt)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("run_dirs", nargs="+", type=Path)
    p.add_argument("--name", required=True, help="results/NAME.md")
    p.add_argument("--device", default="cpu", help="where the runs ran (names the hardware)")
    p.add_argument("--note", default="", help="a sentence after the header")
    args = p.parse_args()

    runs = {}
    for d in args.run_dirs:
        if not (d / "metrics.json").exists():
            raise SystemExit(f"{d} has no metrics.json: is it a finished train.py run?")
        overrides = (d / ".hydra" / "overrides.yaml").read_text().splitlines()
        runs[d.name] = (json.loads((d / "metrics.json").read_text()), overrides)
    lines = [f"Hardware: {hardware(args.device)}. {args.note}".strip(), ""]
    for name, (_, overrides) in runs.items():
        args_line = " ".join(o.removeprefix("- ") for o in overrides)
        lines.append(f"`{name}`: `python train.py {args_line}`")
        lines.append("")
    lines += ["| metric | " + " | ".join(runs) + " |", "|---|" + "---|" * len(runs)]
    for key, label, fmt in ROWS:
        if any(key in m for m, _ in runs.values()):
            lines.append(f"| {label} | " + " | ".join(cell(m, key, fmt) for m, _ in runs.values()))
            lines[-1] += " |"
    out = ROOT / "results" / f"{args.name}.md"
    out.write_text("\n".join(lines) + "\n")
    first = args.run_dirs[0] / "samples.png"
    if first.exists():
        shutil.copy(first, ROOT / "results" / f"{args.name}_samples.png")
    print(out.read_text())


if __name__ == "__main__":
    main()
