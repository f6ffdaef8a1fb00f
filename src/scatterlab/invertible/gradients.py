"""Per-layer gradient statistics of SGD: the drift and diffusion phases (Shwartz-Ziv & Tishby
2017, their Figure 4).

Over the mini-batches b = 1..n of an epoch, for each layer's parameters (one vector per layer):

    mean  = || (1/n) sum_b g_b ||                                 (the drift)
    std   = sqrt( (1/n) sum_b || g_b - gbar ||^2 ) = sqrt(tr Cov)  (the fluctuations)

both also divided by the layer's weight norm || w || (IDNNs' plot_gradients.py normalises
the same way), and their ratio snr = mean / std. Early on the mean dominates (snr > 1, drift:
fast fitting); later the fluctuations dominate (snr < 1, diffusion), which Shwartz-Ziv &
Tishby tie to the compression phase. The crossing epoch is the first epoch after which snr
stays below 1 (after a geometric mean over the epochs e/1.2..1.2e). Accumulated in float64
from the gradients the training step computes (no extra passes); a full-batch run has one
batch per epoch, so std = 0 there: use mini-batches.
"""

from __future__ import annotations

import bisect
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn

from scatterlab.ranges import PositiveInt


def layer_groups(net: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Parameters grouped by the module that owns them (`layers.0.linear.weight` and `.bias`
    -> `layers.0.linear`), in order; BatchNorm parameters are left out (they are not weights)."""
    groups: dict[str, list[nn.Parameter]] = defaultdict(list)
    for name, mod in net.named_modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            continue
        for p in mod.parameters(recurse=False):
            if p.requires_grad:
                groups[name].append(p)
    return dict(groups)


class GradientMoments:
    """Running sum of g and of ||g||^2 over mini-batches, one flat float64 vector per layer."""

    def __init__(self) -> None:
        self.n = 0
        self.sum: dict[str, Tensor] = {}
        self.sq: dict[str, float] = {}

    def update(self, groups: dict[str, list[nn.Parameter]]) -> None:
        """Add the current .grad of every group (one mini-batch)."""
        self.n += 1
        for name, params in groups.items():
            g = torch.cat(
                [
                    (p.grad if p.grad is not None else torch.zeros_like(p)).detach().flatten()
                    for p in params
                ]
            ).double()
            self.sum[name] = self.sum[name] + g if name in self.sum else g.clone()
            self.sq[name] = self.sq.get(name, 0.0) + float(g.square().sum())

    def stats(self, groups: dict[str, list[nn.Parameter]]) -> dict[str, dict[str, float]]:
        """Per layer: mean, std (module docstring), their ratio snr, and both over ||w||."""
        out = {}
        for name, params in groups.items():
            if name not in self.sum:
                continue
            mean_vec = self.sum[name] / self.n
            mean = float(mean_vec.norm())
            var = max(self.sq[name] / self.n - mean**2, 0.0)
            std = math.sqrt(var)
            w = float(torch.cat([p.detach().flatten() for p in params]).double().norm())
            out[name] = {
                "mean": mean,
                "std": std,
                "snr": mean / std if std > 0 else math.inf,
                "mean_w": mean / w if w > 0 else math.inf,
                "std_w": std / w if w > 0 else math.inf,
                "weight_norm": w,
                "batches": self.n,
            }
        return out


def geometric_running_mean(
    values: list[float], epochs: list[int], factor: float = 1.2
) -> list[float]:
    """Geometric mean of the values whose epochs lie within [e / factor, e * factor] of each
    epoch e (a window of constant width on a log axis): single epochs are noisy."""
    logs = torch.tensor(values, dtype=torch.float64).clamp(1e-300, 1e300).log()
    csum = torch.cat([torch.zeros(1, dtype=torch.float64), logs.cumsum(0)])
    out = []
    for e in epochs:
        lo, hi = bisect.bisect_left(epochs, e / factor), bisect.bisect_right(epochs, e * factor)
        out.append(math.exp(float(csum[hi] - csum[lo]) / (hi - lo)))
    return out


def crossing_epoch(epochs: list[int], snr: list[float]) -> int | None:
    """First epoch after which snr stays < 1 (to the end); None if it never does."""
    cross = None
    for e, s in zip(epochs, snr, strict=True):
        cross = (e if cross is None else cross) if s < 1 else None
    return cross


class GradientPhasesCallback(Callback):
    """Gradient mean / std per layer and epoch (module docstring), on any training run.

    layers: module names to follow (null: every module that owns weights, BN excluded).
    every_n_epochs: record every k-th epoch (the statistics of that whole epoch).
    Writes gradients.json and gradients.png into output_dir; the crossing epoch per layer
    (`grad/<layer>/crossing_epoch`) and, when callbacks=analysis measured the information
    plane in the same run, the epoch where each analysed layer's I(X;T) (binning) peaks
    (`grad/compression_start/<layer>`) go into metrics.json.
    """

    def __init__(
        self,
        output_dir: str | None = None,
        layers: list[str] | None = None,
        every_n_epochs: PositiveInt = 1,
        plots: bool = True,
    ) -> None:
        super().__init__()
        self.output_dir = Path(output_dir) if output_dir else None
        self.layers, self.every, self.plots = layers, every_n_epochs, plots
        self.history: list[dict[str, Any]] = []
        self.moments = GradientMoments()

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from scatterlab.errors import ConfigError

        if self.output_dir is None:
            self.output_dir = Path(trainer.default_root_dir)
        net = getattr(pl_module, "net", pl_module)
        groups = layer_groups(net)
        if self.layers:
            unknown = [n for n in self.layers if n not in groups]
            if unknown:
                raise ConfigError(
                    f"callbacks.gradients.layers: {unknown} own no weights; choose from "
                    f"{', '.join(groups)}"
                )
            groups = {n: groups[n] for n in self.layers}
        self.groups = groups

    def _due(self, trainer: L.Trainer) -> bool:
        epoch = trainer.current_epoch + 1
        return epoch % self.every == 0 or epoch == trainer.max_epochs

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._due(trainer):
            self.moments.update(self.groups)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.moments.n:
            stats = self.moments.stats(self.groups)
            self.history.append({"epoch": trainer.current_epoch + 1, "layers": stats})
        self.moments = GradientMoments()

    def summary(self, analysis: list[dict[str, Any]] | None = None) -> dict[str, float]:
        """Crossing epoch per layer, and the I(X;T) peak epoch per analysed layer."""
        out: dict[str, float] = {}
        epochs = [h["epoch"] for h in self.history]
        for name in self.groups:
            snr = [h["layers"][name]["snr"] for h in self.history if name in h["layers"]]
            if len(snr) == len(epochs) and epochs:
                # on the running geometric mean (as the plot)
                cross = crossing_epoch(epochs, geometric_running_mean(snr, epochs))
                if cross is not None:  # absent: snr never stayed below 1
                    out[f"grad/{name}/crossing_epoch"] = cross
        for layer, peak in compression_start(analysis or []).items():
            out[f"grad/compression_start/{layer}"] = peak
        return out

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or not self.history:
            return
        analysis = next(
            (cb.history for cb in trainer.callbacks if type(cb).__name__ == "AnalysisCallback"),
            None,
        )
        summary = self.summary(analysis)
        trainer.callback_metrics.update({k: torch.tensor(v) for k, v in summary.items()})
        self.output_dir.mkdir(parents=True, exist_ok=True)
        doc = {"history": self.history, "summary": summary}
        (self.output_dir / "gradients.json").write_text(json.dumps(doc, indent=1, default=str))
        if self.plots:
            plot_gradients(self.history, self.output_dir / "gradients.png", summary)

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))


def compression_start(analysis: list[dict[str, Any]], key: str = "ixt_bin") -> dict[str, int]:
    """Epoch of the maximum of I(X;T) per layer of an analysis history (compression starts
    after it)."""
    if not analysis:
        return {}
    out = {}
    for layer in analysis[-1].get("layers", {}):
        pts = [
            (h["layers"][layer][key], h["epoch"])
            for h in analysis
            if key in h["layers"].get(layer, {})
        ]
        if pts:
            out[layer] = max(pts)[1]
    return out


def plot_gradients(history: list[dict[str, Any]], path: Path, summary: dict | None = None) -> Path:
    """Mean and std of the gradients over ||w|| against the epoch, log-log, one colour per
    layer (solid: mean, dashed: std), as Shwartz-Ziv & Tishby's Figure 4."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(history[-1]["layers"])
    epochs = [h["epoch"] for h in history]
    smooth = lambda v: geometric_running_mean(v, epochs)  # noqa: E731
    fig, ax = plt.subplots(figsize=(6, 4.2))
    cmap = plt.get_cmap("viridis")
    for i, n in enumerate(names):
        c = cmap(i / max(len(names) - 1, 1))
        mean = smooth([h["layers"][n]["mean_w"] for h in history])
        std = smooth([h["layers"][n]["std_w"] for h in history])
        ax.plot(epochs, mean, "-", color=c, lw=1, label=n)
        ax.plot(epochs, std, "--", color=c, lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("gradient / ||w||  (solid: mean, dashed: std)")
    ax.legend(fontsize=6, loc="lower left")
    ax.set_title("drift and diffusion of SGD (geometric mean over epochs e/1.2..1.2e)", fontsize=9)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    """Results files of a run: python -m scatterlab.invertible.gradients RUN --out OUT."""
    import argparse

    from scatterlab.invertible.reconstruction import hardware

    ap = argparse.ArgumentParser(description="gradient phases of a run: table and plot")
    ap.add_argument("run", type=Path)
    ap.add_argument("--out", type=Path, default=Path("results/invertible_gradients"))
    args = ap.parse_args(argv)
    doc = json.loads((args.run / "gradients.json").read_text())
    hist = doc["history"]
    cb = GradientPhasesCallback()
    cb.history, cb.groups = hist, dict.fromkeys(hist[-1]["layers"])
    analysis = args.run / "analysis.json"
    summary = cb.summary(json.loads(analysis.read_text())["history"] if analysis.exists() else None)
    plot_gradients(hist, args.out.with_suffix(".png"), summary)
    lines = [
        "| layer | snr at epoch 1 | 10 | 100 | last | snr < 1 for good from epoch |",
        "|---|---|---|---|---|---|",
    ]
    at = {h["epoch"]: h for h in hist}
    last = hist[-1]["epoch"]
    for name in hist[-1]["layers"]:
        snr = [
            at[e]["layers"][name]["snr"] if e in at else float("nan") for e in (1, 10, 100, last)
        ]
        cross = summary.get(f"grad/{name}/crossing_epoch", "never")
        lines.append(f"| `{name}` | " + " | ".join(f"{v:.2f}" for v in snr) + f" | {cross} |")
    peaks = {k.split("/")[-1]: v for k, v in summary.items() if "compression_start" in k}
    if peaks:
        lines += ["", "| analysed layer | I(X;T) (binning) peaks at epoch |", "|---|---|"]
        lines += [f"| `{k}` | {v} |" for k, v in peaks.items()]
    args.out.with_suffix(".md").write_text(hardware() + "\n\n" + "\n".join(lines) + "\n")
    compact = {
        "summary": summary,
        "epochs": [h["epoch"] for h in hist],
        "layers": {
            n: {
                k: [float(f"{h['layers'][n][k]:.4g}") for h in hist]
                for k in ("mean_w", "std_w", "snr")
            }
            for n in hist[-1]["layers"]
        },
    }
    args.out.with_suffix(".json").write_text(json.dumps(compact))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
