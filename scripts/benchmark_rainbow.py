"""Time and peak memory of the streaming rainbow statistics at CIFAR width-1 scale.

Cases (synthetic activations, batches of 128 images, as a data loader would give them):
  complex: 512 complex channels x 2x2 = 4 positions x 50,000 images, cross moment
           E[phi psi^H] (512 x 512 complex) + Procrustes alignment;
  p8_input: the input of P_8 in the width-1 real-P skip network, D = 7168 real features
           (2 x 512 x 5 + 512 x 4) x 4 positions, cross moment 7168 x 7168 (float64).
Writes results/benchmark_rainbow.md (hardware named on the first line).

  .venv/bin/python scripts/benchmark_rainbow.py [--device cuda] [--max-batches N]
--max-batches times the first N batches and extrapolates to the 391 of the full data set.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "scripts"))

from scatterlab.env import describe, environment  # noqa: E402
from scatterlab.rainbow.stats import MomentAccumulator, align  # noqa: E402


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run_case(
    name: str,
    dim: int,
    complex: bool,
    images: int,
    batch: int,
    device: str,
    max_batches: int,
    svd_dim: int = 0,
) -> dict:
    g = torch.Generator(device=device).manual_seed(0)
    n_batches = -(-images // batch)
    todo = min(n_batches, max_batches) if max_batches else n_batches
    dtype = torch.complex64 if complex else torch.float32
    mix = torch.randn(dim, dim, device=device, generator=g, dtype=dtype) / dim**0.5
    acc = MomentAccumulator(dim, dim, complex=complex, device=device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
    rss0 = peak_rss_gb()
    t0 = time.perf_counter()
    for _ in range(todo):
        phi = torch.randn(batch, dim, 2, 2, device=device, generator=g, dtype=dtype)
        psi = torch.einsum("de,behw->bdhw", mix, phi)  # a correlated second network
        acc.update(phi, psi)
    if device == "cuda":
        torch.cuda.synchronize()
    t_stats = (time.perf_counter() - t0) * n_batches / todo
    t1 = time.perf_counter()
    # An SVD of D = 7168 in float64 is ~4 TFLOP: on a shared CPU, time a D/4 block and
    # extrapolate with the O(D^3) cost (svd_dim); a GPU does the full one.
    k = svd_dim if 0 < svd_dim < dim else dim
    al = align(acc.cross[:k, :k], float(acc.power_x.sum()), float(acc.power_y.sum()))
    if device == "cuda":
        torch.cuda.synchronize()
    t_align = (time.perf_counter() - t1) * (dim / k) ** 3
    acc_bytes = sum(
        t.numel() * t.element_size() for t in (acc.xy, acc.sum_x, acc.sum_y, acc.sq_x, acc.sq_y)
    )
    out = {
        "case": name,
        "dim": dim,
        "complex": complex,
        "samples": images * 4,
        "batches_timed": todo,
        "batches": n_batches,
        "stats_s": t_stats,
        "align_s": t_align,
        "accumulator_gb": acc_bytes / 2**30,
        "peak_rss_gb": peak_rss_gb(),
        "rss_growth_gb": peak_rss_gb() - rss0,
        "r2": al.r2,
        "svd_extrapolated": k < dim,
    }
    if device == "cuda":
        out["peak_gpu_gb"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cpu")
    p.add_argument("--images", type=int, default=50_000)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--max-batches", type=int, default=0, help="0: all (no extrapolation)")
    p.add_argument("--p8-max-batches", type=int, default=20)
    p.add_argument("--p8-svd-dim", type=int, default=1792, help="0: full SVD")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    p.add_argument("--out", default=str(ROOT / "results" / "benchmark_rainbow.md"))
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = [
        run_case("complex", 512, True, args.images, args.batch, args.device, args.max_batches),
        run_case(
            "p8_input",
            7168,
            False,
            args.images,
            args.batch,
            args.device,
            args.p8_max_batches,
            args.p8_svd_dim,
        ),
    ]
    head = (
        f"Hardware: {describe(environment(device=args.device))}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; machine shared with other jobs during the run. "
        f"{args.images} images x 4 positions, batches of {args.batch}."
    )
    lines = [
        head,
        "",
        "| case | D | dtype | batches timed / total | statistics (s, full data) | "
        "SVD alignment (s) | accumulator (GB) | peak RSS (GB) | RSS growth (GB) |"
        + (" peak GPU (GB) |" if args.device == "cuda" else ""),
        "|---|---|---|---|---|---|---|---|---|" + ("---|" if args.device == "cuda" else ""),
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['dim']} | {'complex' if r['complex'] else 'real'} | "
            f"{r['batches_timed']} / {r['batches']} | {r['stats_s']:.1f} | {r['align_s']:.2f}"
            f"{' (extrapolated)' if r['svd_extrapolated'] else ''} | "
            f"{r['accumulator_gb']:.3f} | {r['peak_rss_gb']:.2f} | {r['rss_growth_gb']:.2f} |"
            + (f" {r['peak_gpu_gb']:.2f} |" if "peak_gpu_gb" in r else "")
        )
    lines += [
        "",
        "Statistics time is extrapolated linearly from the timed batches when fewer than all "
        "were timed. Memory does not grow with the number of images: the accumulator holds "
        "only the float64 moments (D x D cross moment, first and second moments per feature).",
    ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
