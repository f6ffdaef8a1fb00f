"""Convergence with width: alignment error of width-s networks against a wide reference.

The rainbow paper's measure (Guth, Menard, Rochette & Mallat, "convergence with width"): train
networks of the same depth at width multipliers s and one reference at a larger width (the
paper: s = 8), align each network's representations (the input of every P_j, j >= 1, and of
the classifier) onto the reference's on test data, with activations divided by the square root
of their number of features, and fit error ~ s^alpha per layer (published on CIFAR: alpha about
-0.6 for the first layer, -0.3 deeper). Trains what is missing with train.py (test=false),
then writes OUT.md, OUT.json and OUT.png.

    # embedded digits, a few minutes on 2 CPU cores
    python scripts/rainbow_convergence.py
    # CIFAR-10 on a GPU, the paper's protocol
    python scripts/rainbow_convergence.py --experiment cifar_rainbow --widths 0.125 0.25 0.5 \\
        1 2 4 --reference-width 8 --out results/rainbow_convergence_cifar \\
        data=imagefolder data.root=data/cifar10-jpeg
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from hydra.utils import instantiate  # noqa: E402

from scatterlab.data.base import device_batches  # noqa: E402
from scatterlab.rainbow import power_law_fit, width_alignment  # noqa: E402

# Approximate readings of the paper's plots (docs: ../shared/reference/rainbow.md).
PUBLISHED_ALPHA = {"first layer": -0.6, "deeper layers": -0.3}


def train(width: float, args: argparse.Namespace) -> Path:
    """The last checkpoint of the run at this width, trained first when missing."""
    run_dir = Path(args.runs) / f"s{width:g}"
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    if ckpt.exists():
        return ckpt
    cmd = [
        sys.executable,
        str(ROOT / "train.py"),
        f"experiment={args.experiment}",
        f"model.width={width}",
        f"hydra.run.dir={run_dir}",
        f"seed={args.seed}",
        "test=false",
        "logger=csv",
        *args.overrides,
    ]
    print(" ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)
    return ckpt


def load(ckpt: Path, device: str):
    """(network, datamodule config) of a scatterlab checkpoint."""
    from omegaconf import OmegaConf

    from scatterlab.modules.rainbow import load_network_weights
    from scatterlab.utils import load_checkpoint

    saved = OmegaConf.create(load_checkpoint(ckpt)["scatterlab_config"])
    net = instantiate(saved.model)
    load_network_weights(net, str(ckpt))
    return net.to(device).eval(), saved.data


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--experiment", default="quickstart_rainbow")
    p.add_argument("--widths", type=float, nargs="+", default=[0.25, 0.5, 1, 2])
    p.add_argument("--reference-width", type=float, default=8.0)
    p.add_argument("--samples", type=int, default=2000, help="test images for the alignments")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--runs", default=str(ROOT / "outputs" / "rainbow_convergence"))
    p.add_argument("--out", default=str(ROOT / "results" / "rainbow_convergence"))
    p.add_argument("overrides", nargs="*", help="Hydra overrides for every training run")
    args = p.parse_args()
    if args.reference_width <= max(args.widths):
        p.error("--reference-width must exceed every width (the error is exact then)")

    ckpts = {s: train(s, args) for s in [*args.widths, args.reference_width]}
    ref, data_cfg = load(ckpts[args.reference_width], args.device)
    dm = instantiate(data_cfg)
    dm.setup("test")
    batches = device_batches(dm, "test", args.samples, args.seed, args.device)
    errors: dict[str, dict[float, float]] = {}
    with torch.no_grad():
        for s in args.widths:
            net, _ = load(ckpts[s], args.device)
            for name, al in width_alignment(ref, net, batches).items():
                errors.setdefault(name, {})[s] = al.error
            print(f"s={s:g}: " + ", ".join(f"{n} {e[s]:.3f}" for n, e in errors.items()))
    fits = {n: power_law_fit(list(e), list(e.values())) for n, e in errors.items()}
    report(args, errors, fits, len(ref.blocks), sum(len(y) for _, y in batches))


def report(args, errors: dict, fits: dict, depth: int, n_images: int) -> None:
    from benchmark_scattering import hardware

    ws = sorted(args.widths)
    head = (
        f"Hardware: {hardware(args.device)}. `{args.experiment}` ({depth} blocks) trained at "
        f"widths s = {', '.join(f'{s:g}' for s in ws)} and a reference at s = "
        f"{args.reference_width:g} (seed {args.seed}; "
        + (" ".join(args.overrides) or "defaults")
        + f"); alignments on {n_images} test images."
    )
    lines = [
        head,
        "",
        "Mean-square alignment error of each network's representation onto the reference's "
        "(activations divided by sqrt(number of features)), with the fitted exponent alpha of "
        "error ~ s^alpha:",
        "",
        "| representation | " + " | ".join(f"s={s:g}" for s in ws) + " | alpha |",
        "|---|" + "---|" * (len(ws) + 1),
    ]
    for name, e in errors.items():
        label = f"input of {name}" if name != "classifier" else "input of classifier"
        cells = " | ".join(f"{e[s]:.3f}" for s in ws)
        lines.append(f"| {label} | {cells} | {fits[name][0]:.2f} |")
    lines += [
        "",
        f"Published (CIFAR-10, 8 blocks, reference s = 8, read off the plots): alpha about "
        f"{PUBLISHED_ALPHA['first layer']} for the first layer, "
        f"{PUBLISHED_ALPHA['deeper layers']} for deeper ones.",
    ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{out}.md").write_text("\n".join(lines) + "\n")
    payload = {
        "settings": head,
        "errors": {n: {f"{s:g}": v for s, v in e.items()} for n, e in errors.items()},
        "alpha": {n: f[0] for n, f in fits.items()},
    }
    Path(f"{out}.json").write_text(json.dumps(payload, indent=2) + "\n")
    plot(errors, fits, Path(f"{out}.png"), head)
    print("\n".join(lines))


def plot(errors: dict, fits: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, e in errors.items():
        ws = sorted(e)
        (line,) = ax.loglog(ws, [e[s] for s in ws], "o-", label=f"{name} ({fits[name][0]:.2f})")
        alpha, c = fits[name]
        ax.loglog(ws, [c * s**alpha for s in ws], ":", color=line.get_color(), lw=0.8)
    ax.set(
        xlabel="width multiplier s",
        ylabel="alignment error vs the reference",
        title="convergence with width (fitted exponent)",
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.suptitle(title[:120], fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "scripts"))
    main()
