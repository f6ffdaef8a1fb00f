"""Benchmarks of the shallow-network code: results/benchmark_shallow.{md,json}.

    python -m scatterlab.shallow.benchmark [--study DIR WALL_S ...] [--out PREFIX]

1. The random-feature kernel K_m = Phi Phi^T of n = 2000 inputs at m = 16384 (relu, d = 32),
   formed block by block (`features.empirical_kernel`, 2048 features at a time) against the
   same kernel from the whole feature matrix at once (n x m = 262 MB in float64): time and
   peak memory, each in a fresh process (peak resident memory above the process's baseline).
2. The wall and CPU time of study runs (`--study DIR WALL_S`: a multirun directory and the
   measured wall time of the whole `train.py -m` command): the sum of the jobs'
   `compute_time_s` and `wall_time_s` from their metrics.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

N, M, D = 2000, 16384, 32


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def kernel_case(mode: str) -> dict:
    """Run in a fresh process: one kernel of n = N inputs at width M, blockwise or one-shot."""
    from scatterlab.shallow import features as rf

    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    x = rf.sphere(N, D, gen)
    base = _rss_mb()  # before any n x n or n x m array
    t0 = time.perf_counter()
    if mode == "blockwise":
        out = rf.empirical_kernel(x, x, M, "relu", gen)
    else:  # the whole n x m feature matrix at once
        phi = rf.feature_map(x, rf.sample_weights(M, D, "relu", gen), "relu")
        out = phi @ phi.T
    wall = time.perf_counter() - t0
    peak = _rss_mb() - base
    exact = rf.limit_kernel(x, x, "relu")  # after the measurement: its temporaries are n x n
    return {
        "mode": mode,
        "n": N,
        "m": M,
        "d": D,
        "block": rf.BLOCK,
        "time_s": wall,
        "peak_above_baseline_mb": peak,
        "relative_error": rf.relative_error(out, exact),
        "feature_block_mb": N * (rf.BLOCK if mode == "blockwise" else M) * 8 / 2**20,
        "kernel_mb": N * N * 8 / 2**20,
    }


def _study(path: str, wall: float) -> dict:
    jobs = sorted(Path(path).glob("*/metrics.json")) or sorted(Path(path).glob("metrics.json"))
    ms = [json.loads(p.read_text()) for p in jobs]
    return {
        "dir": path,
        "jobs": len(ms),
        "wall_s": wall,
        "compute_s_sum": sum(m.get("compute_time_s", 0.0) for m in ms),
        "job_wall_s_sum": sum(m.get("wall_time_s", 0.0) for m in ms),
        "max_job_compute_s": max((m.get("compute_time_s", 0.0) for m in ms), default=0.0),
    }


def _hardware() -> str:
    from scatterlab.env import describe, environment  # the env block of metrics.json

    return f"{describe(environment())}, CPU only, torch {torch.__version__}"


def _markdown(out: dict) -> str:
    lines = [
        "# Shallow networks benchmark",
        "",
        f"Hardware: {out['hardware']}. 1-minute load average at the benchmark: "
        f"{out['load_avg_1min']:.1f} (the 2 cores were shared with other jobs: wall times "
        "overstate the cost; CPU times are the process's own).",
        "",
        f"## Random-feature kernel, n = {N} inputs, m = {M} (relu, d = {D}, float64, 1 thread)",
        "",
        "| construction | features in memory at once | time (s) | peak memory above "
        "baseline (MB) | relative error to the closed form |",
        "|---|---|---|---|---|",
    ]
    for c in out["kernel"]:
        what = f"{c['n']} x {c['block']} block" if c["mode"] == "blockwise" else "all n x m"
        lines.append(
            f"| {c['mode']} | {what} ({c['feature_block_mb']:.0f} MB) | {c['time_s']:.1f} | "
            f"{c['peak_above_baseline_mb']:.0f} | {c['relative_error']:.4f} |"
        )
    lines += [
        "",
        f"The n x n kernel is {out['kernel'][0]['kernel_mb']:.0f} MB; the blockwise peak is "
        "the accumulated kernel, its normalised copy (K / m) and one block of features "
        "(93 MB), plus the libraries' first-use buffers. "
        "`features.kernel_path` draws the weights of one block, forms its features (in "
        "place for relu, once when y is x), adds their product to the kernel (addmm_, no "
        "n x n temporary) and drops them: never more than one block of features exists "
        "(checked by a test that records every block drawn).",
    ]
    if out["studies"]:
        lines += [
            "",
            "## Study and experiment runs (train.py, float64 unless said)",
            "",
            "| run | jobs | wall, whole command (s) | sum of job compute (s) | "
            "largest job compute (s) |",
            "|---|---|---|---|---|",
        ]
        for st in out["studies"]:
            lines.append(
                f"| `{st['dir']}` | {st['jobs']} | {st['wall_s']:.0f} | "
                f"{st['compute_s_sum']:.0f} | {st['max_job_compute_s']:.0f} |"
            )
    if out.get("notes"):
        lines += ["", *[f"- {n}" for n in out["notes"]]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", choices=["blockwise", "oneshot"], help=argparse.SUPPRESS)
    ap.add_argument("--study", nargs=2, action="append", default=[], metavar=("DIR", "WALL_S"))
    ap.add_argument("--out", default="results/benchmark_shallow")
    ap.add_argument("--note", action="append", default=[], help="a line added under the runs")
    args = ap.parse_args(argv)
    if args.case:
        print(json.dumps(kernel_case(args.case)))
        return
    cases = []
    for mode in ("blockwise", "oneshot"):
        cmd = [sys.executable, "-m", "scatterlab.shallow.benchmark", "--case", mode]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        cases.append(json.loads(res.stdout.strip().splitlines()[-1]))
    studies = [_study(d, float(w)) for d, w in args.study]
    try:
        hardware = _hardware()
    except Exception:  # noqa: BLE001 - the hardware line is informative only
        hardware = f"{platform.processor() or 'CPU'}, {os.cpu_count()} cores, CPU only"
    load = os.getloadavg()[0]
    out = {"hardware": hardware, "load_avg_1min": load, "kernel": cases, "studies": studies}
    out["notes"] = list(args.note)
    Path(args.out + ".json").write_text(json.dumps(out, indent=2) + "\n")
    Path(args.out + ".md").write_text(_markdown(out))
    print(_markdown(out))


if __name__ == "__main__":
    main()
