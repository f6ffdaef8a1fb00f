"""Where is the critical point of the project's phi^4 convention? Binder cumulants by HMC.

U_L(beta) = 1 - <m^4> / (3 <m^2>^2), m the spatial mean of a field: the curves of different L
cross at beta_c (finite-size scaling). ``python -m scatterlab.multiscale.criticality`` prints
the table for L = 8, 16 (256 HMC fields each, cached in data/phi4).
"""

from __future__ import annotations

import argparse

import torch
from torch import Tensor
from tqdm.auto import tqdm

from scatterlab.wsgm.phi4 import Phi4Config, generate_phi4


def binder_cumulant(x: Tensor) -> float:
    """1 - <m^4> / (3 <m^2>^2) over fields x (N, [1,] L, L)."""
    m = x.double().mean(dim=(-2, -1)).reshape(-1)
    return float(1 - m.pow(4).mean() / (3 * m.pow(2).mean().pow(2)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[8, 16])
    ap.add_argument("--betas", type=float, nargs="+", default=[0.6, 0.68, 0.76, 0.84, 0.92, 1.0])
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--therm", type=int, default=300)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print("| beta | " + " | ".join(f"U_{s}" for s in args.sizes) + " |")
    print("|---" * (len(args.sizes) + 1) + "|")
    for beta in tqdm(args.betas, leave=False):
        cells = []
        for s in args.sizes:
            cfg = Phi4Config(size=s, beta=beta, n_samples=args.n, n_chains=64, n_therm=args.therm)
            cells.append(f"{binder_cumulant(generate_phi4(cfg, progress=False)):.3f}")
        print(f"| {beta:g} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
