"""DDP scaling of the cifar_scattering network: 1 vs 2 CPU processes, and a multi-GPU plan.

Measures training throughput (images/s; forward + backward + all-reduce + SGD step) of the
network of experiment=cifar_scattering at a fixed global batch, with 1 process and with 2
DDP processes (gloo) splitting the batch, as trainer=ddp_cpu does. Data are random CIFAR-shaped
tensors already in memory (the data modules keep CIFAR in memory too), so the numbers are the
model's and DDP's, not a data loader's. The plan for 1/2/4/8 GPUs is computed, not measured,
from a single-GPU step time (measured with --device cuda where there is a GPU, else given with
--gpu-step-ms) and the ring all-reduce volume of the gradients.

    python scripts/benchmark_ddp.py                 # CPU, width 0.25, writes results/
    python scripts/benchmark_ddp.py --width 1.0     # full width (slow on a CPU)
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "results" / "benchmark_ddp.md"


def build(width: float) -> torch.nn.Module:
    """The model of experiment=cifar_scattering, composed from the configs, at `width`."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=cifar_scattering", f"model.width={width}"])
    return instantiate(cfg.model)


def run(rank: int, world: int, args: argparse.Namespace, out: dict) -> None:
    """Timed training steps on one rank; rank 0 stores images/s in `out`."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = build(args.width)
    if world > 1:
        dist.init_process_group("gloo", rank=rank, world_size=world)
        net = torch.nn.parallel.DistributedDataParallel(net)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    local = args.batch // world  # the global batch stays the same, as in the data modules
    x, y = torch.randn(local, 3, 32, 32), torch.randint(0, 10, (local,))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()

    for _ in range(args.warmup):
        step()
    if world > 1:
        dist.barrier()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    if world > 1:
        dist.barrier()
    elapsed = time.perf_counter() - start
    if rank == 0:
        out["images_per_s"] = args.steps * args.batch / elapsed
        out["step_ms"] = 1000 * elapsed / args.steps
    if world > 1:
        dist.destroy_process_group()


def measure(world: int, args: argparse.Namespace) -> dict:
    if world == 1:
        out: dict = {}
        run(0, 1, args, out)
        return out
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")  # read by the spawned ranks
    os.environ.setdefault("MASTER_PORT", str(29500 + os.getpid() % 1000))
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(run, args=(world, args, out), nprocs=world, join=True)
        return dict(out)


def gpu_plan(step_ms: float, params: int, bus_gbps: float) -> list[tuple[int, float, float]]:
    """(GPUs, images/s, efficiency) at a fixed per-GPU batch, from one GPU's step time.

    Ring all-reduce moves 2 (n-1)/n of the fp32 gradient bytes per GPU; DDP overlaps it with
    the backward pass only partly, so the plan counts it as fully exposed (pessimistic).
    """
    rows = []
    for n in (1, 2, 4, 8):
        comm_ms = 0.0 if n == 1 else 2 * (n - 1) / n * 4 * params / (bus_gbps * 1e9) * 1e3
        eff = step_ms / (step_ms + comm_ms)
        rows.append((n, n * eff, eff))
    return rows


def hardware() -> str:
    try:
        model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        model = platform.processor() or "unknown CPU"
    return f"{model}, {os.cpu_count()} cores, torch {torch.__version__}, {platform.system()}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--width", type=float, default=0.25, help="model.width (1.0: the paper's)")
    p.add_argument("--batch", type=int, default=128, help="global batch")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--gpu-step-ms", type=float, default=None, help="single-GPU step time (ms)")
    p.add_argument("--bus-gbps", type=float, default=100.0, help="all-reduce bus bandwidth")
    args = p.parse_args()

    load = os.getloadavg()[0]
    cores = os.cpu_count() or 1
    rows = []
    # 1 process on all cores, 1 process on one core, 2 processes on one core each
    for world, threads in ((1, cores), (1, max(1, cores // 2)), (2, max(1, cores // 2))):
        args.threads = threads
        r = measure(world, args)
        rows.append((world, threads, r["images_per_s"], r["step_ms"]))
        print(
            f"{world} process(es) x {threads} thread(s): {r['images_per_s']:.1f} images/s",
            flush=True,
        )
    params = sum(p.numel() for p in build(1.0).parameters())
    base = rows[1][2]

    gpu_step = args.gpu_step_ms
    if gpu_step is None and torch.cuda.is_available():
        gpu_step = measure_gpu_step(args)
    lines = [
        f"# DDP scaling of cifar_scattering: measured on {hardware()}",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} with `python scripts/benchmark_ddp.py "
        f"--width {args.width}`: model.width={args.width} (the full width 1.0 is too slow for "
        f"a CPU), global batch {args.batch}, {args.steps} timed steps after {args.warmup}, "
        f"random CIFAR-shaped inputs in memory, gloo. Load average when started: {load:.1f} "
        f"on {cores} cores (a shared machine: numbers are noisy).",
        "",
        "| processes | threads each | images/s | step (ms) | speed-up vs 1x1 | efficiency |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for world, threads, ips, ms in rows:
        cpus = world * threads
        lines.append(
            f"| {world} | {threads} | {ips:.1f} | {ms:.0f} | {ips / base:.2f} "
            f"| {ips / base / cpus:.0%} |"
        )
    lines += [
        "",
        "Efficiency = speed-up / cores used. On a CPU, 1 process already uses every core",
        "(intra-op threads), so 2 DDP processes only trade threads for processes plus an",
        "all-reduce: the CPU rows check that DDP works and costs little, not GPU scaling.",
        "",
        "## 1 / 2 / 4 / 8 GPUs: PLANNED, not measured",
        "",
    ]
    if gpu_step is None:
        lines += [
            "No GPU was available and no single-GPU step time was given (`--gpu-step-ms`), so",
            "the plan is written per single-GPU step time t (full width, batch 128 per GPU):",
            "",
        ]
        steps = (50.0, 100.0, 200.0)
    else:
        lines += [f"Single-GPU step time: {gpu_step:.1f} ms (full width, batch 128 per GPU).", ""]
        steps = (gpu_step,)
    lines += [
        f"Full-width model: {params / 1e6:.2f} M parameters = {4 * params / 1e6:.1f} MB of fp32",
        f"gradients; ring all-reduce at {args.bus_gbps:.0f} GB/s bus bandwidth (NVLink-class;",
        "PCIe gives about a quarter), counted as not overlapped with the backward pass",
        "(pessimistic: DDP overlaps its gradient buckets with backward).",
        "",
        "| t (ms) | GPUs | speed-up | efficiency |",
        "|---:|---:|---:|---:|",
    ]
    for t in steps:
        for n, speedup, eff in gpu_plan(t, params, args.bus_gbps):
            lines.append(f"| {t:.0f} | {n} | {speedup:.2f} | {eff:.1%} |")
    lines += [
        "",
        "Target >= 90% at 8 GPUs: met in the plan when the step takes well over the all-reduce",
        "time (batch 128 per GPU); keep the per-GPU batch, not the global one, fixed when adding",
        "GPUs (`data.batch_size` is global: scale it with trainer.devices), and check it with",
        "`python scripts/benchmark_ddp.py` on the GPU machine before relying on it.",
    ]
    TABLE.parent.mkdir(exist_ok=True)
    TABLE.write_text("\n".join(lines) + "\n")
    print(f"wrote {TABLE}")


def measure_gpu_step(args: argparse.Namespace) -> float:
    """Step time (ms) of the full-width network on one GPU, batch 128."""
    net = build(1.0).cuda()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(128, 3, 32, 32, device="cuda"), torch.randint(0, 10, (128,), device="cuda")
    for i in range(args.warmup + args.steps):
        if i == args.warmup:
            torch.cuda.synchronize()
            start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - start) / args.steps


if __name__ == "__main__":
    main()
