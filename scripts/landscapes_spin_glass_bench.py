"""Cost of the spherical p-spin descent at one N: building the couplings and one batched
projected-gradient step for all restarts (the whole run costs steps x that).

    OMP_NUM_THREADS=1 python scripts/landscapes_spin_glass_bench.py --n 400 --restarts 1000
"""

from __future__ import annotations

import argparse
import time

import torch

from scatterlab.landscapes.spinglass import SphericalPSpin


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--p", type=int, default=3)
    ap.add_argument("--restarts", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--low-precision", action="store_true", help="bfloat16 contractions")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    sg = SphericalPSpin(a.n, a.p, 0, torch.float32)
    build = time.perf_counter() - t0
    s = sg.random_points(a.restarts, 1)
    t0 = time.perf_counter()
    low = a.steps if a.low_precision else 0
    sg.descend(s, 0.1, a.steps, tol=0.0, momentum=0.8, low_precision_steps=low)
    step = (time.perf_counter() - t0) / a.steps
    flops = 2 * a.n**a.p * a.restarts  # the contraction J . sigma^(p-1) per step
    print(
        f"N = {a.n}, p = {a.p}, {a.restarts} restarts: couplings built in {build:.1f} s; one "
        f"descent step {step:.2f} s ({flops / step / 1e9:.1f} GFLOP/s); 400 steps ~ "
        f"{400 * step / 60:.0f} min"
    )


if __name__ == "__main__":
    main()
