"""Peak training memory of i-RevNet against depth, with and without the memory-saving backward.

    python -m scatterlab.invertible.benchmark --out results/invertible_memory
    python -m scatterlab.invertible.benchmark --summary --out results/invertible_benchmark

Each (depth, mode) runs in a fresh subprocess (peak RSS is a per-process high-water mark):
the CIFAR-10 configuration (channels 16 64 256, strides 1 2 2, dropout 0.1) with n blocks per
stage (depth 9n + 1 layers as the paper counts), one training step (forward, cross-entropy,
backward) on a random batch of 32x32x3 images, after one warm-up step. Reported: the rise of
the peak resident memory during the step over the resident memory before it (VmHWM reset by
/proc/self/clear_refs, MiB: activations, gradients, workspace; Linux), the bytes
autograd saved for backward (a saved_tensors_hooks count over distinct storages: the stored
activations themselves) and the step's wall time. CPU only; torch intra-op threads = 1.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from scatterlab.invertible.reconstruction import hardware


def _status_mib(key: str) -> float:
    """VmRSS (resident now) or VmHWM (resident high-water mark) of this process, MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"no {key} in /proc/self/status (Linux only)")


def _reset_peak() -> None:
    """Reset VmHWM to the current resident size (Linux: write 5 to /proc/self/clear_refs)."""
    Path("/proc/self/clear_refs").write_text("5")


def measure(blocks: int, recompute: bool, batch: int, seed: int = 0) -> dict[str, float]:
    """One training step of the CIFAR i-RevNet with `blocks` blocks per stage (this process)."""
    from scatterlab.invertible import IRevNet

    torch.manual_seed(seed)
    net = IRevNet(10, 3, 32, [blocks] * 3, [1, 2, 2], [16, 64, 256], dropout=0.1)
    net.recompute = recompute
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))

    def step() -> float:
        start = time.perf_counter()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        net.zero_grad(set_to_none=False)
        return time.perf_counter() - start

    # one full step first: the one-time allocations (oneDNN's cached backward kernels and their
    # scratch memory, ~50 MiB here) happen in it, not in the measured step
    step()
    _reset_peak()
    before = _status_mib("VmRSS")
    first = step()
    peak = _status_mib("VmHWM") - before
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.device.type == "cpu" and t.untyped_storage().nbytes():
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = torch.nn.functional.cross_entropy(net(x), y)
    saved = sum(seen.values()) / 2**20
    loss.backward()
    net.zero_grad(set_to_none=False)
    times = [first, step(), step()]
    return {
        "blocks": blocks,
        "depth": 9 * blocks + 1,
        "recompute": recompute,
        "batch": batch,
        "peak_rss_rise_mib": peak,
        "saved_for_backward_mib": saved,
        "step_s": statistics.median(times),
        "params": sum(p.numel() for p in net.parameters()),
    }


def timing(blocks: int, batch: int, repeats: int, seed: int = 0) -> dict[str, float]:
    """Step time (forward + backward) of the same net without and with recompute, measured in
    alternation in one process (so both see the same machine load): medians over `repeats`."""
    from scatterlab.invertible import IRevNet

    torch.manual_seed(seed)
    net = IRevNet(10, 3, 32, [blocks] * 3, [1, 2, 2], [16, 64, 256], dropout=0.1)
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    times: dict[bool, list[float]] = {False: [], True: []}
    for i in range(repeats + 1):
        for rec in (False, True):
            net.recompute = rec
            start = time.perf_counter()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            net.zero_grad(set_to_none=False)
            if i:  # the first round warms up
                times[rec].append(time.perf_counter() - start)
    a, b = statistics.median(times[False]), statistics.median(times[True])
    return {
        "blocks": blocks,
        "depth": 9 * blocks + 1,
        "batch": batch,
        "repeats": repeats,
        "stored_s": a,
        "recompute_s": b,
        "overhead": b / a - 1,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("results/invertible_memory"))
    ap.add_argument("--blocks", type=int, nargs="+", default=[1, 3, 6, 12, 18])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--timing-blocks", type=int, nargs="*", default=[6, 18])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--one", nargs=2, metavar=("BLOCKS", "RECOMPUTE"), help=argparse.SUPPRESS)
    ap.add_argument(
        "--summary",
        action="store_true",
        help="time the IB curve of the 12-bit task (50 betas) and write the issue's two "
        "performance numbers beside the memory table already in --memory (no memory rerun)",
    )
    ap.add_argument("--memory", type=Path, default=Path("results/invertible_memory.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.summary:
        summary(args.memory, args.out, args.repeats)
        return
    if args.one:  # the child: one measurement, printed as JSON
        print(json.dumps(measure(int(args.one[0]), args.one[1] == "1", args.batch)))
        return
    rows = []
    for n in args.blocks:
        for rec in (False, True):
            cmd = [
                sys.executable,
                "-m",
                "scatterlab.invertible.benchmark",
                "--batch",
                str(args.batch),
                "--one",
                str(n),
                str(int(rec)),
            ]
            # large blocks mmap-ed and unmapped on free: the resident high-water mark then
            # follows the live tensors instead of the allocator's free lists
            env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    times = [timing(n, args.batch, args.repeats) for n in args.timing_blocks]
    for t in times:
        print(t, flush=True)
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    doc = {
        "rows": rows,
        "timing": times,
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "load_average": load,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(doc, indent=1))
    _plot(rows, args.out.with_suffix(".png"))
    args.out.with_suffix(".md").write_text(hardware() + "\n\n" + _table(doc))
    print(f"wrote {args.out}.{{json,md,png}}")


def summary(memory: Path, out: Path, repeats: int) -> None:
    """results/invertible_benchmark: the IB curve's time (fresh, `repeats` runs, 1 thread) and
    the recompute memory ratio and time overhead at depth >= 100 (from `memory`)."""
    from scatterlab.invertible.infoplane import ib_bounds

    runs = [ib_bounds(n_betas=50)["soft"] for _ in range(repeats)]
    seconds = sorted(r["seconds"] for r in runs)
    doc = json.loads(memory.read_text())
    by = {(r["blocks"], r["recompute"]): r for r in doc["rows"]}
    deep = [
        {
            "depth": by[(n, False)]["depth"],
            "ratio": by[(n, True)]["peak_rss_rise_mib"] / by[(n, False)]["peak_rss_rise_mib"],
        }
        for n in sorted({r["blocks"] for r in doc["rows"]})
        if by[(n, False)]["depth"] >= 100
    ]
    result = {
        "ib_seconds": seconds,
        "ib_betas": len(runs[0]["beta"]),
        "ib_inputs": 4096,
        "ib_clusters": runs[0]["n_clusters"],
        "memory_deep": deep,
        "timing": doc.get("timing", []),
        "memory_load_average": doc.get("load_average"),
    }
    lines = [
        "| item | target (issue 24) | measured |",
        "|---|---|---|",
        "| IB curve of the 12-bit task (4,096 inputs), 50 betas | seconds | "
        f"median {seconds[len(seconds) // 2]:.1f} s (min {seconds[0]:.1f} s, max "
        f"{seconds[-1]:.1f} s, {len(seconds)} runs; {result['ib_clusters']} clusters, "
        "tolerance 1e-6, at most 200 iterations per beta) |",
    ]
    for d in deep:
        lines.append(
            f"| peak training memory with recompute / stored, depth {d['depth']} | <= 1/3 | "
            f"{d['ratio']:.2f} (batch 16, CPU resident set; `invertible_memory`) |"
        )
    for t in result["timing"]:
        lines.append(
            f"| time overhead of recompute, depth {t['depth']} | stated | {t['overhead']:+.0%} "
            f"({t['stored_s']:.2f} -> {t['recompute_s']:.2f} s per step) |"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    out.with_suffix(".md").write_text(hardware() + "\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))


def _table(doc: dict) -> str:
    rows = doc["rows"]
    lines = [
        "| depth (blocks/stage) | peak RSS rise, stored (MiB) | with recompute (MiB) | ratio "
        "| saved for backward, stored / recompute (MiB) |",
        "|---|---|---|---|---|",
    ]
    by = {(r["blocks"], r["recompute"]): r for r in rows}
    for n in sorted({r["blocks"] for r in rows}):
        a, b = by[(n, False)], by[(n, True)]
        lines.append(
            f"| {a['depth']} ({n}) | {a['peak_rss_rise_mib']:.0f} | {b['peak_rss_rise_mib']:.0f} | "
            f"{b['peak_rss_rise_mib'] / a['peak_rss_rise_mib']:.2f} | "
            f"{a['saved_for_backward_mib']:.1f} / {b['saved_for_backward_mib']:.2f} |"
        )
    lines += [
        "",
        "| depth (blocks/stage) | step, stored (s) | step, recompute (s) | time overhead |",
        "|---|---|---|---|",
    ]
    for t in doc.get("timing", []):
        lines.append(
            f"| {t['depth']} ({t['blocks']}) | {t['stored_s']:.2f} | {t['recompute_s']:.2f} | "
            f"{t['overhead']:+.0%} |"
        )
    return "\n".join(lines) + "\n"


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for rec, label in ((False, "stored activations"), (True, "recomputed from outputs")):
        rs = sorted((r for r in rows if r["recompute"] == rec), key=lambda r: r["depth"])
        ax.plot([r["depth"] for r in rs], [r["peak_rss_rise_mib"] for r in rs], "o-", label=label)
    ax.set_xlabel("depth (layers, 9 x blocks per stage + 1)")
    ax.set_ylabel("peak memory rise of one training step (MiB)")
    ax.set_title(f"i-RevNet CIFAR config, batch {rows[0]['batch']}, CPU", fontsize=10)
    ax.legend()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    main()
