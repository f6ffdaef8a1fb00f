"""Training throughput of the CIFAR scattering networks and ResNet-18 (benchmark, not a test).

For each model: images/s of a training step (forward + backward + SGD step) at batch 128,
achieved FLOP/s (FLOPs counted by torch's FlopCounterMode on the convolutions and matrix
products, forward + backward, times images/s), and peak memory. The FLOPs are nominal: the
wavelet filtering is counted as the 7x7 depthwise convolution it is, although small maps run
it as a denser (faster) matrix product whose extra multiply-adds by zero are not useful work.
Each configuration runs in its own process so that peak memory (RSS on the CPU, allocator
peak on a GPU) is its own; FLOPs are counted after the timed steps, on a small batch, so that
the count's (reference-path) pass does not set the peak. On the CPU, children run with glibc
malloc tunables that keep freed memory (see MALLOC_TUNABLES; --system-malloc to compare), and
the scattering networks' complex skip blocks run their GEMMs in the dtype of
`--cpu-matmul` (model.cpu_matmul; "auto": bf16 where the CPU multiplies bf16 natively). The
hardware is named with its instruction set (scatterlab.env.describe) and the 1-minute load
average is recorded before and after: on a shared machine the throughputs depend on it.

    python scripts/benchmark_scattering.py  # CPU, writes results/
    python scripts/benchmark_scattering.py --device cuda --precision bf16-mixed \
        --channels-last --compile

Results: results/benchmark_scattering.json (all runs, keyed by device) and the table
results/benchmark_scattering.md (rendered from the JSON, hardware named).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results" / "benchmark_scattering.json"
TABLE = ROOT / "results" / "benchmark_scattering.md"
WIDTHS = (0.125, 0.25, 0.5, 1.0)
MALLOC_TUNABLES = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736"


def build(name: str, width: float, cpu_matmul: str = "auto"):
    from scatterlab.models import LearnedScattering, ResNet18

    if name == "resnet18":
        return ResNet18()
    return LearnedScattering(width=width, skip=name == "lscat_skip", cpu_matmul=cpu_matmul)


def measure(args: argparse.Namespace) -> dict:
    """One configuration, in this process: returns its row."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from scatterlab.models import count_parameters
    from scatterlab.models.scattering import Wavelet

    torch.manual_seed(0)
    torch.set_float32_matmul_precision("high")  # as train.py: TF32 matrix products on GPUs
    device = torch.device(args.device)
    net = build(args.model, args.width, args.cpu_matmul).to(device)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    net = net.to(memory_format=fmt)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(args.batch, 3, 32, 32, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (args.batch,), device=device)
    dtype = torch.bfloat16 if args.precision == "bf16-mixed" else None
    step_net = torch.compile(net) if args.compile else net

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = torch.nn.functional.cross_entropy(step_net(x).float(), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(args.warmup):
        step()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start, steps = time.perf_counter(), 0
    while steps < args.min_steps or time.perf_counter() - start < args.min_seconds:
        step()
        sync()
        steps += 1
    elapsed = time.perf_counter() - start
    images_per_s = steps * args.batch / elapsed
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    # FLOPs per image (linear in the batch): counted on 8 images through the depthwise
    # convolutions (the reference path), i.e. the convolution's multiply-adds, not the GEMM's
    wavelets = [m for m in net.modules() if isinstance(m, Wavelet)]
    for w in wavelets:
        w.matmul_max_pixels = 0
    small = x[:8]
    with FlopCounterMode(display=False) as counter:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = torch.nn.functional.cross_entropy(net(small).float(), y[:8])
        loss.backward()
    flops_per_image = counter.get_total_flops() / small.shape[0]
    return {
        "model": args.model,
        "width": args.width if args.model != "resnet18" else 1.0,
        "params": count_parameters(net),
        "batch": args.batch,
        "images_per_s": images_per_s,
        "train_gflop_per_image": flops_per_image / 1e9,
        "achieved_gflop_per_s": flops_per_image * images_per_s / 1e9,
        "peak_memory_mb": peak_mb,
        "steps": steps,
    }


def matmul_note(device: str, cpu_matmul: str, precision: str) -> str:
    """What the scattering blocks' GEMMs ran in, for the options line (CPU only)."""
    import torch

    from scatterlab.models.scattering import matmul_dtype

    if device != "cpu" or precision == "bf16-mixed":
        return ""
    dt = str(matmul_dtype(cpu_matmul, torch.float32)).removeprefix("torch.")
    return f", scattering GEMMs {dt} (cpu_matmul={cpu_matmul})"


def render(results: dict) -> str:
    lines = []
    for key, run in results.items():
        load = run.get("load_average")
        cores = run.get("env", {}).get("cpu_cores")
        note = (
            f"; load average {load[0]:.1f} before, {load[1]:.1f} after, on {cores} cores"
            if load and cores
            else ""
        )
        lines += [
            f"**{key}** — {run['hardware']}; torch {run['torch']}; batch {run['batch']}; "
            f"{run['options']}{note}",
            "",
            "| model | width | params | train images/s | train GFLOP/image | achieved GFLOP/s "
            "| peak memory (MB) |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in run["rows"]:
            lines.append(
                f"| {r['model']} | {r['width']:g} | {r['params']:,} | {r['images_per_s']:.1f} "
                f"| {r['train_gflop_per_image']:.3f} | {r['achieved_gflop_per_s']:.1f} "
                f"| {r['peak_memory_mb']:.0f} |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed"])
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true")
    p.add_argument(
        "--cpu-matmul",
        default="auto",
        choices=["auto", "float32", "bfloat16"],
        help="dtype of the scattering blocks' GEMMs on the CPU (model.cpu_matmul)",
    )
    p.add_argument("--widths", type=float, nargs="+", default=list(WIDTHS))
    p.add_argument("--models", nargs="+", default=["lscat_skip", "lscat", "resnet18"])
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--min-steps", type=int, default=2)
    p.add_argument("--min-seconds", type=float, default=5.0)
    p.add_argument(
        "--system-malloc", action="store_true", help="CPU: keep glibc's default malloc settings"
    )
    p.add_argument("--single", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--width", type=float, default=1.0, help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.single:  # child process: one configuration
        print(json.dumps(measure(args)))
        return

    import torch
    from tqdm import tqdm

    from scatterlab.env import describe, environment

    env = dict(os.environ)
    if args.device == "cpu" and not args.system_malloc:
        # glibc returns every large freed tensor to the OS (munmap) and page-faults it back on
        # the next step: half the time went to the kernel at batch 128. Serving all
        # allocations from the heap and never trimming it removes that (same for all models).
        env.setdefault("GLIBC_TUNABLES", MALLOC_TUNABLES)
    configs = [(m, w) for m in args.models for w in (args.widths if m != "resnet18" else [1.0])]
    rows = []
    load_before = os.getloadavg()[0]
    for model, width in tqdm(configs, desc="benchmark"):
        cmd = [sys.executable, __file__, "--single", "--model", model, "--width", str(width)]
        flags = ("device", "batch", "precision", "warmup", "min_steps", "min_seconds", "cpu_matmul")
        for flag in flags:
            cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
        cmd += ["--channels-last"] * args.channels_last + ["--compile"] * args.compile
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:  # report and go on: one failing configuration keeps the rest
            tqdm.write(f"{model} width {width} failed:\n{proc.stderr[-3000:]}")
            continue
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        tqdm.write(json.dumps(rows[-1]))
    if not rows:
        raise SystemExit("every configuration failed: nothing to record")
    options = f"precision {args.precision}" + ", channels_last" * args.channels_last
    if env.get("GLIBC_TUNABLES"):
        options += ", malloc without mmap/trim (GLIBC_TUNABLES)"
    options += ", torch.compile" * args.compile
    options += matmul_note(args.device, args.cpu_matmul, args.precision)
    key = f"{args.device} ({options})"
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if args.device == "cpu":
        # CPU runs recorded without "env" predate the batch-last path and name no instruction
        # set: a new CPU run replaces them (GPU sections are kept)
        results = {k: v for k, v in results.items() if not k.startswith("cpu") or "env" in v}
    env = environment(precision=args.precision, device=args.device)
    results[key] = {
        "hardware": describe(env),
        "torch": torch.__version__,
        "batch": args.batch,
        "options": options,
        "env": env,
        "load_average": [load_before, os.getloadavg()[0]],
        "rows": rows,
    }
    results = dict(sorted(results.items(), key=lambda kv: not kv[0].startswith("cpu")))  # CPU first
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    TABLE.write_text(render(results))
    print(TABLE.read_text())


if __name__ == "__main__":
    main()
