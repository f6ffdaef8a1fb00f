"""`callbacks=analysis`: layer-by-layer measures of a classification run while it trains.

Thin on top of `scatterlab.analysis.analyze`: fixed seeded image subsets are moved to the
device once; at the scheduled epochs the net is analysed (eval mode, no grad), the scalars go to
every logger (`analysis/<layer>/<measure>`), and the whole history to `analysis.json` in the run
dir; the plots are written when the fit ends. Runs on global rank 0 only.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from scatterlab.analysis.hooks import default_layers, resolve
from scatterlab.analysis.plots import plot_all
from scatterlab.analysis.runner import MEASURES, analyze, check_labels, flat_scalars
from scatterlab.errors import ConfigError
from scatterlab.ranges import NonNegativeInt, Positive, PositiveInt, Range, Real, Seed


class AnalysisCallback(Callback):
    """Analyse `pl_module.net` (or the module) every `every_n_epochs` epochs.

    layers: module names (`blocks.2`, `blocks.2.proj:in`, `layers.0`); null: the net's
      defaults (scatterlab.analysis.hooks.default_layers).
    measures: subset of separation, probe, collapse, cka, information.
    every_n_epochs / log_points: analyse every k epochs, or instead at `log_points`
      log-spaced epochs up to trainer.max_epochs (information-plane runs of thousands of
      epochs); the last epoch is always analysed; `at_start`: also before training (epoch 0).
    images: how many images of `fit_split` (moments, means, probes) and of `eval_split`
      (accuracies, NC4) are used; `keep` of the eval images feed CKA and mutual information.
    max_dim: wider layers are count-sketched to this many dimensions (memory O(max_dim^2)).
    """

    CONFIG_CHECKS: tuple[tuple[str, str], ...] = (
        (
            "mi_bins is not None or mi_bin_size is not None",
            "the binning needs callbacks.analysis.mi_bins or callbacks.analysis.mi_bin_size",
        ),
        (
            "mi_range is None or mi_range[0] < mi_range[1]",
            "give callbacks.analysis.mi_range as [min, max] with min < max (null: each layer's "
            "own range)",
        ),
    )

    def __init__(
        self,
        output_dir: str | None = None,
        layers: list[str] | None = None,
        measures: list[Literal["separation", "probe", "collapse", "cka", "information"]]
        | None = None,
        every_n_epochs: PositiveInt = 5,
        log_points: NonNegativeInt | None = None,
        at_start: bool = True,
        images: PositiveInt = 256,
        fit_split: str = "train",
        eval_split: str = "val",
        keep: NonNegativeInt = 128,
        max_dim: PositiveInt = 256,
        ridge: Positive = 1e-3,
        mi_bins: PositiveInt | None = 30,
        mi_range: Annotated[list[Real], Range(ge=2, le=2)] | None = None,
        mi_bin_size: Positive | None = None,
        kde_noise_variance: Positive = 0.1,
        kde_images: PositiveInt | None = None,
        plots: bool = True,
        seed: Seed = 0,
    ) -> None:
        super().__init__()
        measures = list(MEASURES if measures is None else measures)
        unknown = set(measures) - set(MEASURES)
        if unknown:
            raise ConfigError(
                f"callbacks.analysis.measures: unknown {sorted(unknown)}; choose from "
                f"{', '.join(MEASURES)}"
            )
        # None: the trainer's default_root_dir, known at fit start
        self.output_dir = Path(output_dir) if output_dir else None
        self.layers = list(layers) if layers else None
        self.measures, self.every, self.log_points = measures, every_n_epochs, log_points
        self.at_start, self.images, self.keep = at_start, images, keep
        self.fit_split, self.eval_split = fit_split, eval_split
        self.options = {
            "max_dim": max_dim,
            "ridge": ridge,
            "keep": keep,
            "mi_bins": mi_bins,
            "mi_range": list(mi_range) if mi_range else None,
            "mi_bin_size": mi_bin_size,
            "kde_noise_variance": kde_noise_variance,
            "kde_images": kde_images,
            "seed": seed,
        }
        self.plots, self.seed = plots, seed
        self.history: list[dict[str, Any]] = []
        self._epochs: set[int] | None = None

    # ---- setup
    def _net(self, pl_module: L.LightningModule) -> torch.nn.Module:
        return getattr(pl_module, "net", pl_module)

    def _batches(self, trainer: L.Trainer, split: str, device) -> list:
        from scatterlab.data.base import device_batches

        dm = trainer.datamodule
        splits = getattr(dm, "splits", None)
        if not isinstance(splits, dict) or not splits:
            raise ConfigError(
                "callbacks=analysis needs a labelled in-memory classification data set "
                f"(data.splits); this run's data ({type(dm).__name__}) has none: remove "
                "callbacks=analysis"
            )
        if split not in splits:
            raise ConfigError(
                f"callbacks.analysis: split {split!r} is not in the data ({', '.join(splits)})"
            )
        batches = device_batches(dm, split, self.images, self.seed, device)
        check_labels(batches)
        return batches

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.output_dir is None:
            self.output_dir = Path(trainer.default_root_dir)
        net = self._net(pl_module)
        self.specs = self.layers or default_layers(net)
        resolve(net, self.specs)  # an unknown name fails now, before any training
        self.num_classes = int(
            getattr(pl_module.hparams, "num_classes", 0)
            or getattr(trainer.datamodule, "num_classes", 0)
        )
        if self.num_classes < 2:
            raise ConfigError("callbacks=analysis needs a classification run (num_classes >= 2)")
        self.fit_batches = self._batches(trainer, self.fit_split, pl_module.device)
        self.eval_batches = (
            self.fit_batches
            if self.eval_split == self.fit_split
            else self._batches(trainer, self.eval_split, pl_module.device)
        )
        if self.log_points:
            n = max(int(trainer.max_epochs or 1), 1)
            pts = torch.logspace(0, math.log10(n), self.log_points).round().long().tolist()
            self._epochs = set(pts) | {n}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.at_start and trainer.current_epoch == 0 and not self.history:
            self._run(trainer, pl_module, epoch=0)

    def _due(self, epoch: int, trainer: L.Trainer) -> bool:
        if self._epochs is not None:
            return epoch in self._epochs
        return epoch % self.every == 0 or epoch == trainer.max_epochs

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch + 1  # epochs completed
        if self._due(epoch, trainer):
            self._run(trainer, pl_module, epoch)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        done = trainer.current_epoch  # after fit, current_epoch counts completed epochs
        if trainer.is_global_zero and (not self.history or self.history[-1]["epoch"] < done):
            self._run(trainer, pl_module, done)
        if self.history:
            # the last analysis' scalars join trainer.callback_metrics, which train.py writes
            # into metrics.json (so study reports can read them)
            last = flat_scalars(self.history[-1])
            trainer.callback_metrics.update({k: torch.tensor(v) for k, v in last.items()})
        if trainer.is_global_zero and self.plots and self.history:
            plot_all(self.history, self.output_dir, title=f"{type(self._net(pl_module)).__name__}")

    # ---- one analysis
    def _run(self, trainer: L.Trainer, pl_module: L.LightningModule, epoch: int) -> None:
        if not trainer.is_global_zero:
            return
        start = time.perf_counter()
        result = analyze(
            self._net(pl_module),
            self.fit_batches,
            self.eval_batches,
            self.num_classes,
            layers=self.specs,
            measures=self.measures,
            **self.options,
        )
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        cost = time.perf_counter() - start
        record = {"epoch": epoch, "step": trainer.global_step, "cost_s": cost, **result}
        self.history.append(record)
        scalars = flat_scalars(result)
        scalars["analysis/cost_s"] = cost
        for lg in trainer.loggers:
            lg.log_metrics(scalars, step=trainer.global_step)
        self._write()

    def _write(self) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        path = self.output_dir / "analysis.json"
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        doc = {
            "layers": self.specs,
            "measures": self.measures,
            "images": self.images,
            "fit_split": self.fit_split,
            "eval_split": self.eval_split,
            "options": self.options,
            "history": self.history,
        }
        tmp.write_text(json.dumps(doc, indent=1, default=_json_default))
        tmp.replace(path)  # atomic: a killed run never leaves half a file

    # resumed runs keep their history
    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))


def _json_default(o: Any) -> Any:
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return str(o)
