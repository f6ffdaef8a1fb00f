"""Cost of one analysis against one training epoch of the quickstart, in one process.

    python -m scatterlab.analysis.benchmark [--repeats 3] [--out results/benchmark_analysis]

The quickstart network and data (LearnedScattering widths [32, 64, 64], digits: 1257 training
images, batches of 64, SGD); one training epoch and analyses at several settings are timed in
alternation (median of `repeats`), so both see the same machine load. Writes NAME.md/.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

SETTINGS = [
    # (label, images per split, keep, max_dim, measures)
    ("all measures, 512 images, keep 256, max_dim 512", 512, 256, 512, None),
    ("all measures, 256 images, keep 128, max_dim 256", 256, 128, 256, None),
    ("all measures, 128 images, keep 128, max_dim 256", 128, 128, 256, None),
    ("separation+probe+collapse, 256 images, max_dim 256", 256, 0, 256,
     ["separation", "probe", "collapse"]),
    ("separation+collapse, 128 images, max_dim 128", 128, 0, 128, ["separation", "collapse"]),
]  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)

    from scatterlab.analysis import analyze
    from scatterlab.data import DigitsDataModule
    from scatterlab.data.base import device_batches
    from scatterlab.env import describe, environment
    from scatterlab.models import LearnedScattering

    torch.manual_seed(0)
    dm = DigitsDataModule(batch_size=64)
    dm.setup("fit")
    net = LearnedScattering(10, 1, 8, widths=[32, 64, 64])
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    train = device_batches(dm, "train", None, 0, "cpu")
    fit = {n: device_batches(dm, "train", n, 1, "cpu") for n in (128, 256, 512)}
    val = {n: device_batches(dm, "val", n, 2, "cpu") for n in (128, 256, 512)}

    def epoch() -> float:
        net.train()
        t = time.perf_counter()
        for x, y in train:
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return time.perf_counter() - t

    epoch()  # warm-up
    times: dict[str, list[float]] = {"epoch": []}
    for _ in range(args.repeats):
        times["epoch"].append(epoch())
        for label, n, keep, max_dim, measures in SETTINGS:
            t = time.perf_counter()
            kw = {"measures": measures} if measures else {}
            analyze(net, fit[n], val[n], 10, keep=keep, max_dim=max_dim, **kw)
            times.setdefault(label, []).append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    env = describe(environment())
    threads = torch.get_num_threads()
    lines = [
        "# Cost of callbacks=analysis on the quickstart",
        "",
        f"{env}, {threads} torch threads, shared with other jobs (timings under load); "
        f"median of {args.repeats} alternating repeats. One training epoch of the quickstart "
        f"(1257 images, 20 SGD steps) = {med['epoch']:.2f} s.",
        "",
        "| analysis setting (6 layers + classifier input) | one analysis (s) | fraction of an "
        "epoch | every 5 epochs |",
        "|---|---|---|---|",
    ]
    for label, *_ in SETTINGS:
        f = med[label] / med["epoch"]
        lines.append(f"| {label} | {med[label]:.2f} | {100 * f:.0f}% | {100 * f / 5:.0f}% |")
    lines.append("")
    doc = {"env": env, "threads": threads, "median_s": med, "times_s": times}
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".md").write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
