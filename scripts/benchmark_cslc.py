"""Benchmark: MALA sampling of the CSLC cascade against WSGM's sampler, same L, one CPU thread.

For each L: the CSLC cascade (phi^4-family energy per scale, score matching on 128 HMC fields
at beta = 0.68, Haar, coarsest 8 x 8 as WSGM's) sampled coarse to fine by MALA with 400 steps
per scale (the phi4_cslc experiment's setting); WSGM (U-Net base 16, channel_mult [1, 2], Haar,
coarsest 8 x 8: the wsgm_steps_vs_size models) sampled with N steps per scale. The sampler's
cost does not depend on the weights, so WSGM is timed untrained; the quality columns are read
from the committed results (CSLC: the phi4_cslc runs; WSGM: wsgm_steps_vs_size, trained 800
Adam steps, at the same N).

    python scripts/benchmark_cslc.py --sizes 32 64 --out results/multiscale_cslc_benchmark
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

from scatterlab.env import describe, environment  # noqa: E402
from scatterlab.multiscale.cslc import fit_cascade, sample_cascade  # noqa: E402
from scatterlab.wsgm.diffusion import WSGM  # noqa: E402
from scatterlab.wsgm.phi4 import Phi4Config, generate_phi4  # noqa: E402


def wsgm_quality(size: int, n: int) -> dict[str, float | None]:
    path = ROOT / "results" / "wsgm_steps_vs_size.json"
    rows = json.loads(path.read_text())["rows"]
    for r in rows:
        if r["values"] == {"model": "wsgm", "data.size": size}:
            m = r["metrics"]
            get = lambda k, m=m: (m.get(k) or {}).get("mean")  # noqa: E731
            return {
                "spectrum_error": get(f"steps/N={n}/spectrum_error"),
                "hist_distance": get(f"steps/N={n}/hist_distance"),
            }
    return {"spectrum_error": None, "hist_distance": None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--mala-steps", type=int, default=400)
    ap.add_argument("--n-cslc", type=int, default=32)
    ap.add_argument("--n-wsgm", type=int, default=16)
    ap.add_argument("--wsgm-steps", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cslc-quality", default="", help="JSON {L: {spectrum_error, ...}}")
    ap.add_argument("--out", default=str(ROOT / "results" / "multiscale_cslc_benchmark"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    quality = json.loads(args.cslc_quality) if args.cslc_quality else {}
    rows = []
    for size in args.sizes:
        levels = int(math.log2(size // 8))
        cfg = Phi4Config(size=size, beta=0.68, n_samples=128, n_chains=64, n_therm=100, seed=1)
        x = generate_phi4(cfg, ROOT / ".cache" / "phi4", progress=False)[:, 0]
        t0 = time.perf_counter()
        fits = fit_cascade(x, levels)
        fit_s = time.perf_counter() - t0
        sample_cascade(fits, size, 2, 4)  # warm-up
        t0 = time.perf_counter()
        _, rates = sample_cascade(fits, size, args.n_cslc, args.mala_steps)
        dt = time.perf_counter() - t0
        q = quality.get(str(size), {})
        rows.append(
            {"L": size, "model": "CSLC cascade, MALA", "steps": f"{args.mala_steps} per scale",
             "samples_per_s": args.n_cslc / dt, "n_samples": args.n_cslc, "fit_s": fit_s,
             "acceptance": rates, "spectrum_error": q.get("spectrum_error"),
             "hist_distance": q.get("hist_distance")}
        )  # fmt: skip
        model = WSGM(
            size=size, levels=levels, wavelet="haar",
            net={"base_channels": 16, "channel_mult": [1, 2]},
        )  # fmt: skip
        model.fit_stats(x[:, None])
        model.eval()
        with torch.no_grad():
            model.sample(2, 2, seed=0)  # warm-up
            for n in args.wsgm_steps:
                t0 = time.perf_counter()
                model.sample(args.n_wsgm, n, seed=0)
                dt = time.perf_counter() - t0
                rows.append(
                    {"L": size, "model": "WSGM (U-Net base 16)", "steps": f"N = {n} per scale",
                     "samples_per_s": args.n_wsgm / dt, "n_samples": args.n_wsgm,
                     **wsgm_quality(size, n)}
                )  # fmt: skip
        print(rows[-3:], flush=True)
    env = environment(device="cpu")
    hw = f"{describe(env)}; {args.threads} torch thread(s); torch {torch.__version__}"
    Path(f"{args.out}.json").write_text(json.dumps({"hardware": hw, "rows": rows}, indent=1))
    fmt = lambda v, f: "n/a" if v is None else format(v, f)  # noqa: E731
    md = [
        "**MALA sampling of the CSLC cascade vs WSGM's sampler (phi^4, beta = 0.68, CPU)**",
        "",
        f"`python scripts/benchmark_cslc.py` (hardware: {hw}). CSLC: 400 MALA steps per "
        "scale (coarsest 8 x 8 and each conditional), fitted by score matching on 128 HMC "
        "fields; WSGM: U-Net base 16, Haar, coarsest 8 x 8, N ancestral steps per scale, timed "
        "untrained (the cost does not depend on the weights). Quality columns from the "
        "committed runs: CSLC from `phi4_cslc` (128 samples vs 128 or 256 held-out fields), "
        "WSGM from `wsgm_steps_vs_size` (REDUCED training, 800 Adam steps; 65,536 generated "
        "pixels vs 256 held-out fields).",
        "",
        "| L | model | steps | samples / s | spectrum error | hist distance |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        md.append(
            f"| {r['L']} | {r['model']} | {r['steps']} | {r['samples_per_s']:.3g} | "
            f"{fmt(r['spectrum_error'], '.3f')} | {fmt(r['hist_distance'], '.3f')} |"
        )
    Path(f"{args.out}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
