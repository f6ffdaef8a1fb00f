"""Cost of one analysis against one training epoch of the quickstart, in one process.

    python -m scatterlab.analysis.benchmark [--repeats 3] [--out results/benchmark_analysis]
        [--cifar-run RUN_DIR]

The quickstart network and data (LearnedScattering widths [32, 64, 64], digits: 1257 training
images, batches of 64, SGD); one training epoch and analyses at several settings are timed in
alternation (median of `repeats`), so both see the same machine load; plus the forward passes
of the analysed images alone (no hooks), the floor of any analysis of that many images.
`--cifar-run` adds a real CIFAR run (train.py experiment=cifar_scattering ... callbacks=analysis
+trainer.limit_train_batches=N trainer.max_epochs=1): its analyses' cost (analysis.json) against
its training epoch (metrics.json train_epoch_time_s, N batches), extrapolated to the full epoch
(the training images // batch size, drop_last). Writes NAME.md/.json.
"""

from __future__ import annotations

import argparse
import json
import os
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


FORWARD = "(floor) the forward passes alone: 256 + 256 images, no hooks"


def cifar_cost(run: Path) -> dict:
    """A limited CIFAR run's analysis cost against its training epoch, extrapolated."""
    import yaml

    metrics = json.loads((run / "metrics.json").read_text())
    analysis = json.loads((run / "analysis.json").read_text())
    cfg = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
    limit = cfg["trainer"].get("limit_train_batches")
    batch = int(cfg["data"]["batch_size"])
    root = Path(cfg["data"]["root"])
    if not root.is_absolute():
        from scatterlab import ROOT

        root = ROOT / root
    n_train = sum(len(files) for _, _, files in os.walk(root / "train"))
    full = n_train // batch  # drop_last
    batches = full if limit is None else min(int(limit), full)
    epoch_part = float(metrics["train_epoch_time_s"])
    costs = [float(h["cost_s"]) for h in analysis["history"]]
    overrides = yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())
    return {
        "run": str(run),
        "overrides": overrides,
        "env": describe_env(metrics.get("env", {})),
        "options": {"images": analysis["images"], **analysis["options"]},
        "layers": len(analysis["layers"]),
        "train_images": n_train,
        "batch_size": batch,
        "timed_batches": batches,
        "epoch_batches": full,
        "timed_epoch_s": epoch_part,
        "epoch_s": epoch_part * full / batches,
        "analysis_s": costs,
    }


def describe_env(env: dict) -> str:
    from scatterlab.env import describe

    return describe(env) if env else "unknown hardware"


def cifar_lines(c: dict) -> list[str]:
    o = c["options"]
    med = statistics.median(c["analysis_s"])
    f = med / c["epoch_s"]
    return [
        "",
        "# CIFAR-10 width 1/8 (`experiment=cifar_scattering model.width=0.125 trainer=cpu`)",
        "",
        f"A real run, {c['env']}: `train.py {' '.join(c['overrides'])}`. The training epoch "
        f"was timed on its first {c['timed_batches']} batches of {c['batch_size']} "
        f"({c['timed_epoch_s']:.1f} s, validation excluded) and extrapolated to the full "
        f"epoch of {c['epoch_batches']} batches ({c['train_images']} images, drop_last): "
        f"{c['epoch_s']:.0f} s. The analyses (defaults: {o['images']} + {o['images']} images, "
        f"keep {o['keep']}, max_dim {o['max_dim']}, all measures; {c['layers']} layers + the "
        f"classifier input) ran in the same process, before training and after the "
        f"{c['timed_batches']} batches.",
        "",
        "| analysis setting | one analysis (s) | fraction of an epoch | every 5 epochs |",
        "|---|---|---|---|",
        f"| defaults ({', '.join(f'{t:.2f}' for t in c['analysis_s'])} s) | {med:.2f} | "
        f"{100 * f:.1f}% | {100 * f / 5:.2f}% |",
        "",
        *([c["note"], ""] if c.get("note") else []),
    ]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--cifar-run", type=Path, default=None, help="a limited CIFAR run dir")
    p.add_argument("--cifar-note", default="", help="a line under the CIFAR table (load)")
    args = p.parse_args(argv)
    load_start = os.getloadavg()[0]

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

    def forwards(n: int) -> float:
        net.eval()
        t = time.perf_counter()
        with torch.no_grad():
            for x, _ in fit[n] + val[n]:
                net(x)
        return time.perf_counter() - t

    epoch()  # warm-up
    times: dict[str, list[float]] = {"epoch": [], FORWARD: []}
    for _ in range(args.repeats):
        times["epoch"].append(epoch())
        times[FORWARD].append(forwards(256))
        for label, n, keep, max_dim, measures in SETTINGS:
            t = time.perf_counter()
            kw = {"measures": measures} if measures else {}
            analyze(net, fit[n], val[n], 10, keep=keep, max_dim=max_dim, **kw)
            times.setdefault(label, []).append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    env = describe(environment())
    threads = torch.get_num_threads()
    load = (load_start, os.getloadavg()[0])
    lines = [
        "# Cost of callbacks=analysis on the quickstart",
        "",
        f"{env}, {threads} torch threads, shared with other jobs (load average "
        f"{load[0]:.1f} at the start, {load[1]:.1f} at the end); median of {args.repeats} "
        f"alternating repeats. One training epoch of the quickstart (1257 images, 20 SGD "
        f"steps) = {med['epoch']:.2f} s.",
        "",
        "| analysis setting (6 layers + classifier input) | one analysis (s) | fraction of an "
        "epoch | every 5 epochs |",
        "|---|---|---|---|",
    ]
    for label in [*(s[0] for s in SETTINGS), FORWARD]:
        f = med[label] / med["epoch"]
        lines.append(f"| {label} | {med[label]:.2f} | {100 * f:.0f}% | {100 * f / 5:.0f}% |")
    lines.append("")
    doc = {"env": env, "threads": threads, "load": load, "median_s": med, "times_s": times}
    if args.cifar_run:
        cifar = cifar_cost(args.cifar_run)
        cifar["note"] = args.cifar_note
        doc["cifar"] = cifar
        lines += cifar_lines(cifar)
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".md").write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
