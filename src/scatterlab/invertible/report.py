"""Parameter counts of the official i-RevNet configurations and reconstruction errors.

    python -m scatterlab.invertible.report --quickstart-run RUN_DIR \
        --out results/invertible_reconstruction
    python -m scatterlab.invertible.report --params --out results/invertible_params
    python -m scatterlab.invertible.report --cifar-run RUN_DIR --command "..." \
        --out results/invertible_cifar_reduced
    python -m scatterlab.invertible.report --generator-run RUN_DIR --command "..." \
        --out results/invertible_generator_cifar_reduced

For the CIFAR, ImageNet and quickstart configurations: the parameter count (beside the paper's
where there is one) and || inverse(features(x)) - x || / || x || in float32 and float64, at
initialisation (PyTorch's init; BN in eval mode with its initial statistics) and with BN
scales, shifts and running statistics randomised (a stand-in for trained statistics), on
random Gaussian inputs; for the quickstart also after training (its checkpoint) on digits.
The ImageNet net is evaluated at 64 x 64 (same weights; 224 x 224 costs minutes in float64 on
2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from scatterlab.invertible import IRevNet
from scatterlab.invertible.reconstruction import hardware, reconstruction_errors
from scatterlab.models import count_parameters


def experiment_model(name: str, *overrides: str) -> dict:
    """The IRevNet arguments of experiment `name` as its config composes them (no copy of the
    architectures here, so the counts are those of the runnable experiments)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from scatterlab.cli import CONFIG_DIR

    with initialize_config_dir(CONFIG_DIR, version_base=None):
        cfg = compose("train", overrides=[f"experiment={name}", *overrides])
    kw = OmegaConf.to_container(cfg.model, resolve=True)
    kw.pop("_target_")
    return kw


# the parameter-count table: (name, (experiment, overrides...), published count, its source)
PARAM_ROWS = [
    ("cifar_irevnet", ("cifar_irevnet",), None, "none published (README: ~94.5% accuracy)"),
    (
        "imagenet_irevnet",
        ("imagenet_irevnet",),
        None,
        "none for the released 3x3 code (the paper's 29M is for 1x1-3x3-1x1 kernels: next row)",
    ),
    (
        "imagenet_irevnet model.kernels=[1,3,1]",
        ("imagenet_irevnet", "model.kernels=[1,3,1]"),
        29_000_000,
        "i-RevNet (b), paper's Table 1: 29M (quoted in jhjacobsen/pytorch-i-revnet issue #19; "
        "the author: the paper's models were TensorFlow ones)",
    ),
    (
        "imagenet_irevnet_injective",
        ("imagenet_irevnet_injective",),
        181_000_000,
        "i-RevNet (a), paper's Table 1: 181M (unverified; its layout is not published)",
    ),
]
# (published count, where it comes from), for the reconstruction table
PUBLISHED = {
    "cifar_irevnet": (None, "not published (README: ~94.5% accuracy)"),
    "imagenet_irevnet": (None, "29M in the paper for 1x1-3x3-1x1 kernels (invertible_params)"),
}


def param_counts() -> list[dict]:
    """Parameter counts of the configurations (built on the meta device: no memory)."""
    rows = []
    for name, experiment, published, source in PARAM_ROWS:
        with torch.device("meta"):
            net = IRevNet(**experiment_model(*experiment))
        n = count_parameters(net)
        rows.append(
            {
                "config": name,
                "params": n,
                "blocks": len(net.stack),
                "depth": 3 * len(net.stack) + 1,
                "injective": net.injective_only,
                "top": [net.out_channels, net.out_size, net.out_size],
                "published": published,
                "ratio": n / published if published else None,
                "source": source,
            }
        )
    return rows


def params_markdown(rows: list[dict]) -> str:
    lines = [
        "| config | blocks (depth) | injective | top (C x h x w) | parameters (ours) | "
        "published | ours / published |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = f"{r['ratio']:.3f}" if r["ratio"] else "-"
        lines.append(
            f"| `{r['config']}` | {r['blocks']} ({r['depth']}) | "
            f"{'yes' if r['injective'] else 'no (bijective)'} | {'x'.join(map(str, r['top']))} | "
            f"{r['params']:,} | {r['source']} | {ratio} |"
        )
    return "\n".join(lines) + "\n"


def randomize_bn(net: torch.nn.Module, seed: int = 0) -> None:
    """BN scales, shifts and running statistics away from their init (as after training)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))


def measure(name: str, batch: int = 4, size: int | None = None) -> dict:
    kw = experiment_model(name)
    torch.manual_seed(0)
    net = IRevNet(**kw)
    size = size or kw["input_size"]
    x = torch.randn(batch, kw["in_channels"], size, size)
    row = {
        "config": name,
        "params": count_parameters(net),
        "blocks": len(net.stack),
        "depth": 3 * len(net.stack) + 1,
        "injective": net.injective_only,
        "input": list(x.shape),
        "init": reconstruction_errors(net, x),
    }
    randomize_bn(net)
    row["random_bn"] = reconstruction_errors(net, x)
    return row


def trained(run: Path, n: int = 64) -> dict:
    """The quickstart checkpoint's reconstruction on n digits validation images."""
    from scatterlab.data.datasets import DigitsDataModule

    ckpt = torch.load(next((run / "checkpoints").glob("last.ckpt")), weights_only=False)
    net = IRevNet(**experiment_model("quickstart_irevnet"))
    net.load_state_dict({k[4:]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")})
    dm = DigitsDataModule(seed=42)
    dm.setup("fit")
    from scatterlab.data.base import device_batches

    x = device_batches(dm, "val", n, 0, "cpu")[0][0]
    metrics = json.loads((run / "metrics.json").read_text())
    return {
        "checkpoint": "last.ckpt",
        "test_acc": metrics.get("test/acc"),
        "trained": reconstruction_errors(net, x),
        "init_from_run": {
            "float32": metrics.get("recon/init_float32"),
            "float64": metrics.get("recon/init_float64"),
        },
    }


def markdown(rows: list[dict], quick: dict | None) -> str:
    lines = [
        "| config | blocks (depth) | parameters | published | injective | input | "
        "init f32 / f64 | random BN f32 / f64 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        pub = PUBLISHED.get(r["config"], (None, "-"))[1]
        lines.append(
            f"| `{r['config']}` | {r['blocks']} ({r['depth']}) | {r['params']:,} | {pub} | "
            f"{'yes' if r['injective'] else 'no (bijective)'} | {'x'.join(map(str, r['input']))} | "
            f"{r['init']['float32']:.1e} / {r['init']['float64']:.1e} | "
            f"{r['random_bn']['float32']:.1e} / {r['random_bn']['float64']:.1e} |"
        )
    if quick:
        t, i = quick["trained"], quick["init_from_run"]
        lines += [
            "",
            f"Quickstart after training (test accuracy {quick['test_acc']:.4f}), 64 validation "
            f"digits: float32 {t['float32']:.1e}, float64 {t['float64']:.1e} (at its "
            f"initialisation, same run: {i['float32']:.1e} / {i['float64']:.1e}).",
        ]
    return "\n".join(lines) + "\n"


PUBLISHED_CIFAR = 0.945  # jhjacobsen/pytorch-i-revnet README, the full recipe (unverified)


def _run_files(run: Path) -> tuple[dict, dict, dict[str, int | None]]:
    """A run dir's metrics, its Hydra config and the image counts of its data folders."""
    import yaml

    m = json.loads((run / "metrics.json").read_text())
    cfg = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
    n = {}
    for split in ("train", "test"):
        folder = Path(cfg["data"].get("root", "")) / split
        n[split] = sum(1 for _ in folder.glob("*/*")) if folder.is_dir() else None
    return m, cfg, n


def cifar_run(run: Path, command: str) -> tuple[dict, str]:
    """The summary of a (reduced) `cifar_irevnet` run: accuracy beside the published ~94.5%,
    the reconstruction error before and after training, the sizes and the wall time."""

    m, cfg, n = _run_files(run)
    model, data = cfg["model"], cfg["data"]
    doc = {
        "command": command,
        "label": "REDUCED",
        "data": data.get("root"),
        "train_images": n["train"],
        "test_images": n["test"],
        "blocks": model["blocks"],
        "channels": model["channels"],
        "depth": 3 * sum(model["blocks"]) + 1,
        "epochs": cfg["trainer"]["max_epochs"],
        "params": m.get("num_params"),
        "test_acc": m.get("test/acc"),
        "best_val_acc": m.get("best/val/acc", m.get("val/acc")),
        "published_acc": PUBLISHED_CIFAR,
        "recon": {k.split("/", 1)[1]: v for k, v in m.items() if k.startswith("recon/")},
        "wall_time_s": m.get("wall_time_s"),
        "env": m.get("env"),
    }
    r = {k: doc["recon"].get(k, float("nan")) for k in ("init_float32", "final_float32")}
    r |= {k: doc["recon"].get(k, float("nan")) for k in ("init_float64", "final_float64")}
    text = "\n".join(
        [
            "**REDUCED** run (a CPU stand-in for the GPU recipe): "
            f"{doc['train_images']:,} training / {doc['test_images']:,} test images of "
            "CIFAR-10 (JPEG q75; the first 500 / 100 per class), "
            f"{len(model['blocks'])} stages of {model['blocks']} blocks (depth {doc['depth']}; "
            "the official net has 18 18 18, depth 163), channels "
            f"{' '.join(map(str, model['channels']))}, {doc['epochs']} epochs, "
            f"{doc['params']:,} parameters; wall time {doc['wall_time_s'] / 60:.1f} min.",
            "",
            "| | ours (REDUCED) | published (full recipe: 50,000 images, 200 epochs, depth 163) |",
            "|---|---|---|",
            f"| test accuracy | {doc['test_acc']:.1%} | ~{PUBLISHED_CIFAR:.1%} (README) |",
            "| reconstruction error, float32: at init / after training | "
            f"{r['init_float32']:.1e} / {r['final_float32']:.1e}"
            " | - (the paper shows reconstructions, no error) |",
            "| reconstruction error, float64: at init / after training | "
            f"{r['init_float64']:.1e} / {r['final_float64']:.1e}"
            " | - |",
            "",
            f"Command: `{command}`",
        ]
    )
    return doc, text + "\n"


def generator_run(run: Path, command: str, out: Path) -> tuple[dict, str]:
    """The summary of a (reduced) scattering-generator run: train / val / test PSNR, sizes, wall
    time; its three figures copied beside `out` as <out>_{reconstructions,...}.png."""
    import shutil

    m, cfg, n = _run_files(run)
    mod, data = cfg["module"], cfg["data"]
    figures = []
    for tag in ("reconstructions", "interpolations", "samples"):
        src = run / f"{mod.get('name', 'scattering_generator')}_{tag}.png"
        if src.exists():
            dst = out.parent / f"{out.name}_{tag}.png"
            shutil.copyfile(src, dst)
            figures.append(dst.name)
    doc = {
        "command": command,
        "label": "REDUCED",
        "data": data.get("root"),
        "train_images": n["train"],
        "test_images": n["test"],
        "J": mod["J"],
        "dim": mod["dim"],
        "width": mod["width"],
        "fit_images": mod["fit_images"],
        "epochs": cfg["trainer"]["max_epochs"],
        "params": m.get("num_params"),
        "psnr": {
            "train_eval": m.get("train_psnr_eval"),
            "val": m.get("val/psnr"),
            "test": m.get("test/psnr"),
        },
        "figures": figures,
        "wall_time_s": m.get("wall_time_s"),
        "env": m.get("env"),
    }
    p = doc["psnr"]
    text = "\n".join(
        [
            f"**REDUCED** run: {doc['train_images']:,} training / {doc['test_images']:,} test "
            "images of CIFAR-10 (JPEG q75; the first 200 / 50 per class), kymatio scattering "
            f"J={doc['J']}, L=8 (10,416 coefficients), whitened PCA to {doc['dim']} dimensions "
            f"fitted on {min(doc['fit_images'], doc['train_images'] or 0):,} training images, "
            f"generator width {doc['width']} ({doc['params']:,} parameters), L1 loss, Adam 1e-3, "
            f"{doc['epochs']} epochs; wall time {doc['wall_time_s'] / 60:.1f} min.",
            "",
            "| PSNR (dB), images in [0, 1] | train (eval mode, 512 images) | val (= test) | test |",
            "|---|---|---|---|",
            f"| scattering generator, CIFAR-10, REDUCED | {p['train_eval']:.1f} | {p['val']:.1f} | "
            f"{p['test']:.1f} |",
            "| published (Angles & Mallat 2018, Table 1; CelebA / LSUN 128 x 128, J = 4, 512 "
            "dimensions, 65,536 training images) | not retrieved | - | not retrieved |",
            "",
            "CelebA and LSUN, the paper's data, are not reachable from this machine; the paper's "
            "PSNR table could not be retrieved, so no published number is compared.",
            "",
            f"Figures: {', '.join(f'`{f}`' for f in figures)}.",
            "",
            f"Command: `{command}`",
        ]
    )
    return doc, text + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("results/invertible_reconstruction"))
    ap.add_argument("--quickstart-run", type=Path, default=None)
    ap.add_argument("--params", action="store_true", help="only the parameter-count table")
    ap.add_argument("--cifar-run", type=Path, default=None, help="a cifar_irevnet run dir")
    ap.add_argument("--generator-run", type=Path, default=None, help="a generator run dir")
    ap.add_argument("--command", default="", help="the command that made the run")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.generator_run:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        doc, text = generator_run(args.generator_run, args.command, args.out)
        args.out.with_suffix(".json").write_text(json.dumps(doc, indent=1))
        args.out.with_suffix(".md").write_text(hardware() + "\n\n" + text)
        print(text)
        return
    if args.cifar_run:
        doc, text = cifar_run(args.cifar_run, args.command)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(doc, indent=1))
        args.out.with_suffix(".md").write_text(hardware() + "\n\n" + text)
        print(text)
        return
    if args.params:
        counts = param_counts()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps({"rows": counts}, indent=1))
        text = params_markdown(counts)
        args.out.with_suffix(".md").write_text(hardware() + "\n\n" + text)
        print(text)
        return
    rows = [
        measure("quickstart_irevnet"),
        measure("cifar_irevnet"),
        measure("imagenet_irevnet", batch=2, size=64),
    ]
    quick = trained(args.quickstart_run) if args.quickstart_run else None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(
        json.dumps({"rows": rows, "quickstart": quick}, indent=1)
    )
    text = markdown(rows, quick)
    args.out.with_suffix(".md").write_text(hardware() + "\n\n" + text)
    print(text)


if __name__ == "__main__":
    main()
