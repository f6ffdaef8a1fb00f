"""Train the CIFAR-10 classifiers side by side and record their test accuracy.

Runs `train.py experiment=NAME` for each experiment on the same data, reads each run's
metrics.json, and writes results/cifar_accuracy.json and the table results/cifar_accuracy.md
next to the published errors (ICLR 2022 poster, original CIFAR-10).

    # GPU, the papers' recipes (300 epochs), on the JPEG copy of CIFAR-10:
    python scripts/cifar_accuracy.py --data-root data/cifar10-jpeg --trainer gpu
    # GPU, the same recipe compressed to 30 epochs (lr x0.1 every 7), runs side by side:
    python scripts/cifar_accuracy.py --data-root data/cifar10-jpeg --trainer gpu --epochs 30 \
        --parallel --tag compressed30
    # CPU, reduced (width 1/8, 3 epochs):
    python scripts/cifar_accuracy.py --data-root data/cifar10-jpeg --reduced --epochs 3
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_scattering import hardware  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results" / "cifar_accuracy.json"
TABLE = ROOT / "results" / "cifar_accuracy.md"
# Published test errors (%) on the original CIFAR-10 (scattering.md, ICLR 2022 poster).
PUBLISHED = {
    "cifar_scattering": 7.7,
    "cifar_scattering_noskip": 11.7,
    "cifar_scat_fixed": 27.7,
    "cifar_resnet18": None,
}


def command(experiment: str, args: argparse.Namespace, extra: list[str]) -> list[str]:
    return [
        sys.executable,
        str(ROOT / "train.py"),
        f"experiment={experiment}",
        "data=imagefolder",
        f"data.root={Path(args.data_root).resolve()}",
        f"trainer={args.trainer}",
        f"hydra.run.dir={run_dir(experiment, args)}",
        "ckpt_path=auto",  # a re-run continues where an interrupted one stopped
        *extra,
    ]


def run_dir(experiment: str, args: argparse.Namespace) -> Path:
    return ROOT / "outputs" / "cifar_accuracy" / args.tag / experiment


def run_all(experiments: dict[str, list[str]], args: argparse.Namespace) -> dict[str, dict]:
    """Runs train.py per experiment (all at once with --parallel); returns their metrics."""
    procs = {}
    for name, overrides in experiments.items():
        cmd = command(name, args, overrides)
        print(" ".join(cmd), flush=True)
        run_dir(name, args).mkdir(parents=True, exist_ok=True)
        log = open(run_dir(name, args) / "run.log", "w") if args.parallel else None  # noqa: SIM115
        procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT if log else None)
        if not args.parallel:
            procs[name].wait()
    failed = [name for name, proc in procs.items() if proc.wait() != 0]
    if failed:
        logs = ", ".join(str(run_dir(n, args) / "run.log") for n in failed)
        hint = f": see {logs}" if args.parallel else ""
        raise SystemExit(f"train.py failed for {failed}{hint}")
    return {n: json.loads((run_dir(n, args) / "metrics.json").read_text()) for n in procs}


def render(results: dict) -> str:
    lines = []
    for key, r in results.items():
        lines += [
            f"**{key}** — {r['hardware']}; data: CIFAR-10 (JPEG q75); {r['settings']}",
            "",
            "| experiment | params | test error (%) | best val error (%) | epochs "
            "| train epoch (s) | wall time (min) | published error (%) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, m in r["runs"].items():
            pub = PUBLISHED.get(name)
            epoch = m.get("train_epoch_time_s")
            lines.append(
                f"| {name} | {m['num_params']:,} | {100 * (1 - m['test/acc']):.1f} "
                f"| {100 * (1 - m['val/acc_best']):.1f} | {m['last_epoch'] + 1} "
                f"| {f'{epoch:.1f}' if epoch else 'n/a'} | {m['wall_time_s'] / 60:.1f} "
                f"| {pub if pub is not None else 'n/a'} |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data-root", required=True, help="ImageFolder copy of CIFAR-10")
    p.add_argument("--trainer", default="cpu")
    p.add_argument("--reduced", action="store_true", help="width 1/8, --epochs epochs (3)")
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="compress the recipe to this many epochs (without --reduced: full width, lr x0.1 "
        "every round(70 * epochs / 300) epochs)",
    )
    p.add_argument("--parallel", action="store_true", help="train the experiments at once")
    p.add_argument(
        "--train-fraction", type=float, default=1.0, help="reduced: fraction of batches/epoch"
    )
    p.add_argument(
        "--experiments",
        nargs="+",
        default=["cifar_scattering", "cifar_scattering_noskip", "cifar_resnet18"],
    )
    p.add_argument("--note", default="", help="appended to the settings line of the table")
    p.add_argument(
        "--tag", default=None, help="name of this run in the results (default: reduced/full)"
    )
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = p.parse_args()
    if bad := [e for e in args.experiments if "=" in e]:
        p.error(f"{bad} are Hydra overrides, not experiments: put them before --experiments")
    extra = list(args.overrides) + ["logger=csv"]
    if args.reduced:
        # same schedule shape, compressed: lr x0.1 at 2/3 of the epochs
        args.epochs = args.epochs or 3
        step = max(1, (2 * args.epochs) // 3)
        extra += [f"trainer.max_epochs={args.epochs}", f"module.scheduler.step_size={step}"]
        settings = f"reduced CPU run: {args.epochs} epochs, lr x0.1 after epoch {step}"
    elif args.epochs:
        # the recipe's shape (lr x0.1 every 70 of 300 epochs) compressed to args.epochs
        step = max(1, round(70 * args.epochs / 300))
        extra += [f"trainer.max_epochs={args.epochs}", f"module.scheduler.step_size={step}"]
        settings = f"compressed recipe: {args.epochs} epochs, lr x0.1 every {step}"
    else:
        settings = "full recipe (300 epochs, lr x0.1 every 70)"
    if args.parallel:
        settings += f"; the {len(args.experiments)} runs trained at the same time on one device"
    if args.overrides:
        settings += "; " + " ".join(args.overrides)
    args.tag = args.tag or ("reduced" if args.reduced else "full")
    experiments = {}
    for experiment in args.experiments:
        overrides = list(extra)
        if args.reduced and experiment != "cifar_resnet18":
            overrides.append("model.width=0.125")
        if args.reduced and args.train_fraction < 1:
            overrides.append(f"+trainer.limit_train_batches={args.train_fraction}")
        experiments[experiment] = overrides
    runs = run_all(experiments, args)
    if args.reduced:
        settings += "; scattering nets at width 1/8, ResNet-18 at full width"
        if args.train_fraction < 1:
            settings += f"; {args.train_fraction:g} of the training batches per epoch"
    if args.note:
        settings += f"; {args.note}"
    key = f"{args.trainer}, {args.tag}"
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[key] = {
        "hardware": hardware(args.trainer.replace("gpu", "cuda")),
        "settings": settings,
        "runs": runs,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    TABLE.write_text(render(results))
    print(TABLE.read_text())


if __name__ == "__main__":
    main()
