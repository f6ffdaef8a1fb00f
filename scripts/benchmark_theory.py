"""Benchmark of the random-network theory: a 100 x 100 phase diagram (target < 1 s) and a
width-1000, depth-100 Jacobian spectrum (target < 30 s on 2 CPU cores).

    python scripts/benchmark_theory.py [--out results/benchmark_theory] [--threads 1 2]

Writes OUT.md and OUT.json with wall and CPU (process) times, the hardware
(scatterlab.env) and the 1-minute load average (a loaded shared machine inflates wall times).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from scatterlab.env import describe, environment
from scatterlab.theory import MeanField, jacobian, spectrum_theory


def timed(fn):
    torch.cuda.synchronize() if torch.cuda.is_available() else None
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    torch.cuda.synchronize() if torch.cuda.is_available() else None
    return out, time.perf_counter() - w0, time.process_time() - c0


def bench_phase_diagram(n: int = 100) -> dict:
    mf = MeanField("tanh")
    sw2 = torch.linspace(0.5, 4.0, n, dtype=torch.float64)[:, None]
    sb2 = torch.linspace(0.0, 0.25, n, dtype=torch.float64)[None, :]
    mf.phase_diagram(sw2[:4], sb2[:, :4])  # warm-up: node tables, Hermite tables
    pd, wall, cpu = timed(lambda: mf.phase_diagram(sw2, sb2))
    return {
        "grid": f"{n} x {n}",
        "wall_s": wall,
        "cpu_s": cpu,
        "chaotic_fraction": float((pd["chi1"] > 1).double().mean()),
    }


def bench_jacobian(width: int = 1000, depth: int = 100, weights: str = "gaussian") -> dict:
    mf = MeanField("tanh")
    sw2, sb2 = (float(t) for t in mf.critical_line(torch.tensor(1 / 64, dtype=torch.float64)))

    def run():
        jac = jacobian("tanh", sw2, sb2, width, depth, weights, seed=0)
        return torch.linalg.svdvals(jac)

    sv, wall, cpu = timed(run)
    lam = sv**2
    th = spectrum_theory("tanh", sw2, sb2, depth, weights)
    return {
        "width": width,
        "depth": depth,
        "weights": weights,
        "wall_s": wall,
        "cpu_s": cpu,
        "var_measured": float(lam.var(unbiased=False)),
        "var_theory": th["var"],
        "m1_measured": float(lam.mean()),
        "m1_theory": th["m1"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("results/benchmark_theory"))
    ap.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()])
    ap.add_argument("--width", type=int, default=1000)
    ap.add_argument("--depth", type=int, default=100)
    args = ap.parse_args()
    env = environment()
    rows = []
    for t in args.threads:
        torch.set_num_threads(t)
        load = os.getloadavg()[0]
        rows.append({"threads": t, "load_1min": load, "phase_diagram": bench_phase_diagram()})
        for weights in ("gaussian", "orthogonal"):
            rows[-1][f"jacobian_{weights}"] = bench_jacobian(args.width, args.depth, weights)
        print(json.dumps(rows[-1], indent=1))
    hw = describe(env)
    lines = [
        "# Random-network theory benchmark",
        "",
        f"Hardware: {hw}; torch {env['torch']}. float64 throughout. Wall and CPU (process) time;",
        "the 1-minute load average is given because the machine was shared (other jobs running):",
        "wall times on a loaded machine overstate the cost.",
        "",
        "| torch threads | load avg | 100 x 100 tanh phase diagram: wall / CPU s (target < 1 s) "
        f"| J, N={args.width}, L={args.depth}, Gaussian: wall / CPU s | orthogonal: wall / CPU s "
        "(target < 30 s) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        pd, jg, jo = r["phase_diagram"], r["jacobian_gaussian"], r["jacobian_orthogonal"]
        lines.append(
            f"| {r['threads']} | {r['load_1min']:.1f} | {pd['wall_s']:.2f} / {pd['cpu_s']:.2f} "
            f"| {jg['wall_s']:.1f} / {jg['cpu_s']:.1f} | {jo['wall_s']:.1f} / {jo['cpu_s']:.1f} |"
        )
    jo, jg = rows[-1]["jacobian_orthogonal"], rows[-1]["jacobian_gaussian"]
    lines += [
        "",
        f"Spectrum check (tanh on the critical line at q* = 1/64, one network): JJ^T variance "
        f"{jo['var_measured']:.3g} measured vs {jo['var_theory']:.3g} theory (orthogonal), "
        f"{jg['var_measured']:.3g} vs {jg['var_theory']:.3g} (Gaussian).",
        "The phase diagram computes q* (Newton), chi_1, c* (Newton on the Mehler series), chi_c,",
        "xi_q and xi_c at every grid point; the Jacobian is formed once as L products of N x N",
        "matrices (plus one QR per layer for orthogonal weights) and one SVD.",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps({"env": env, "rows": rows}, indent=1))
    print(f"wrote {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
