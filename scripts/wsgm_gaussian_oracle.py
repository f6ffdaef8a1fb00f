"""WSGM vs SGM with EXACT scores on critical-like Gaussian fields: discretisation error only.

The field has spectrum P(k) = 1 / (beta * sum_d (2 - 2 cos k_d) + 2 m^2) with 2 m^2 =
beta (2 pi / L)^2 (correlation length proportional to L, as at criticality), so the condition
number of its covariance grows like L^2. Both models use the exact (conditional) scores of
``scatterlab.wsgm.oracle``; the error of ``spectrum_error`` (against the exact spectrum) then
measures how many sampling steps each needs. Writes results/wsgm_gaussian_oracle.{json,md,png}.

    python scripts/wsgm_gaussian_oracle.py        # ~5 min on 1 CPU thread
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "scripts"))

from wsgm_steps_vs_size import hardware  # noqa: E402

from scatterlab.wsgm.metrics import radial_average, radial_power_spectrum  # noqa: E402
from scatterlab.wsgm.oracle import oracle_sgm, oracle_wsgm  # noqa: E402
from scatterlab.wsgm.phi4 import gaussian_spectrum, sample_gaussian_field  # noqa: E402


def rel_err(x: torch.Tensor, theory: torch.Tensor) -> float:
    return float(((radial_power_spectrum(x) / theory - 1) ** 2).mean().sqrt())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64, 128])
    p.add_argument("--grids", nargs="+", default=["quadratic"])
    p.add_argument("--max-steps", type=int, default=512)
    p.add_argument("--pixels", type=int, default=2**17, help="pixels per evaluation")
    p.add_argument("--beta", type=float, default=0.68)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(ROOT / "results" / "wsgm_gaussian_oracle"))
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    t0 = time.time()
    steps = [2**k for k in range(1, int(math.log2(a.max_steps)) + 1)]
    res: dict = {"hardware": hardware("cpu"), "settings": vars(a), "runs": {}}
    for L in a.sizes:
        m2 = 0.5 * a.beta * (2 * math.pi / L) ** 2
        spec = gaussian_spectrum(L, a.beta, m2)
        theory = radial_average(spec)
        n = max(4, a.pixels // (L * L))
        J = int(math.log2(L // 8))
        exact = sample_gaussian_field(n, L, a.beta, m2, torch.Generator().manual_seed(0))
        floor = rel_err(exact, theory)
        kappa = float(spec.max() / spec.min())
        models = {"WSGM": oracle_wsgm(spec, J), "SGM": oracle_sgm(spec)}
        for grid in a.grids:
            for name, model in models.items():
                errs = {}
                for N in steps:
                    errs[str(N)] = rel_err(model.sample(n, N, grid=grid, seed=1), theory)
                key = f"{name}/{grid}"
                res["runs"].setdefault(key, {})[str(L)] = {
                    "errors": errs,
                    "floor": floor,
                    "kappa": kappa,
                    "n_samples": n,
                    "J": J,
                }
                print(
                    f"{key} L={L} J={J} kappa={kappa:.0f} floor={floor:.4f} "
                    f"{errs} ({time.time() - t0:.0f}s)",
                    flush=True,
                )
        Path(a.out + ".json").parent.mkdir(parents=True, exist_ok=True)
        Path(a.out + ".json").write_text(json.dumps(res, indent=1))
    res["total_seconds"] = time.time() - t0
    Path(a.out + ".json").write_text(json.dumps(res, indent=1))
    write_report(res, a.out)


def first_below(errs: dict[str, float], eps: float) -> str:
    ok = [int(n) for n, e in errs.items() if e <= eps]
    return str(min(ok)) if ok else f">{max(int(n) for n in errs)}"


def write_report(res: dict, out: str, thresholds=(0.05, 0.1, 0.2)) -> None:
    s = res["settings"]
    steps = sorted({int(n) for r in res["runs"].values() for v in r.values() for n in v["errors"]})
    lines = [
        f"Hardware: {res['hardware']}. Exact scores (no training), Gaussian field with "
        f"P(k) = 1/(beta sum_d(2-2cos k_d) + 2m^2), beta={s['beta']}, 2m^2 = beta (2pi/L)^2; "
        f"T=5, DDPM ancestral sampler (large variance); {s['pixels']} pixels per evaluation; "
        "WSGM Haar, coarsest scale 8x8. Error: spectrum_error against the exact spectrum "
        "(`floor`: the same for exact samples of the same size).",
        "",
        "| model/grid | L | kappa | floor | "
        + " | ".join(f"N={n}" for n in steps)
        + " | "
        + " | ".join(f"N(err<={t})" for t in thresholds)
        + " |",
        "|---|---|---|---|" + "---|" * (len(steps) + len(thresholds)),
    ]
    for key, runs in res["runs"].items():
        for L, r in runs.items():
            e = r["errors"]
            lines.append(
                f"| {key} | {L} | {r['kappa']:.0f} | {r['floor']:.3f} | "
                + " | ".join(f"{e[str(n)]:.3f}" if str(n) in e else "-" for n in steps)
                + " | "
                + " | ".join(first_below(e, t) for t in thresholds)
                + " |"
            )
    Path(out + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        grids = sorted({k.split("/")[1] for k in res["runs"]})
        fig, axes = plt.subplots(len(grids), 2, figsize=(10, 4 * len(grids)), squeeze=False)
        for gi, grid in enumerate(grids):
            for mi, name in enumerate(["WSGM", "SGM"]):
                ax = axes[gi][mi]
                for L, r in res["runs"].get(f"{name}/{grid}", {}).items():
                    xs = sorted(int(n) for n in r["errors"])
                    ax.loglog(xs, [r["errors"][str(n)] for n in xs], "o-", ms=3, label=f"L={L}")
                ax.set_title(f"{name}, exact scores, {grid} grid")
                ax.set_xlabel("sampling steps N (per scale for WSGM)")
                ax.set_ylabel("spectrum_error")
                ax.grid(True, which="both", alpha=0.3)
                ax.legend()
        fig.suptitle(res["hardware"], fontsize=8)
        fig.tight_layout()
        fig.savefig(out + ".png", dpi=110)
    except Exception as exc:
        print(f"plot skipped: {exc}")


if __name__ == "__main__":
    main()
