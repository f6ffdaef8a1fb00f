"""Thin LightningModule: WPH (or Gaussian) synthesis of stationary fields at test time.

Nothing is trained (run with ``train=false``). The test stage collects up to ``n_reference``
held-out test fields, takes the first ``n_target`` training fields as the target, draws
``n_samples`` fields with ``method``:

- ``wph``: microcanonical WPH synthesis (``scatterlab.wph.synthesis.synthesize``) with the
  operator ``net`` (``model=wph``);
- ``gaussian``: the Gaussian model with the targets' power spectrum (random phases);
- ``data``: the target fields themselves (the floor every model is compared with);
- ``file``: the samples another run wrote (``samples_path``, e.g. a WSGM/SGM run's
  ``samples.pt``), so every model is scored by the same code; seconds per sample are then that
  run's sampling seconds (its ``metrics.json``) per sample, training not included;

and logs ``test/spectrum_error``, ``test/hist_distance``, ``test/seconds_per_sample`` (and, for
phi^4 data, ``test/energy_per_site`` vs ``test/energy_per_site_data``, ``test/abs_m_mean`` vs
``test/abs_m_mean_data`` and ``test/abs_m_w1``, the W1 distance between the laws of |m|). It
writes ``samples.pt`` (N x 1 x L x L) and ``samples.png`` (samples beside data, histograms,
radial spectra) into ``output_dir``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from torch import Tensor

from scatterlab.errors import ConfigError
from scatterlab.ranges import NonNegative, NonNegativeInt, PositiveInt, Seed
from scatterlab.wph.operator import WPHOp, require_square
from scatterlab.wph.synthesis import MATCH, gaussian_baseline, synthesize
from scatterlab.wsgm.metrics import (
    histogram_distance,
    lattice_metrics,
    spectrum_error,
    spectrum_error_l2,
)
from scatterlab.wsgm.plots import comparison_figure

log = logging.getLogger("scatterlab")
METHODS = ("wph", "gaussian", "data", "file")


def _images(batch: Any) -> Tensor:
    return batch[0] if isinstance(batch, list | tuple) else batch


class WPHModule(L.LightningModule):
    """Synthesises at test time with ``net`` (a ``WPHOp``, ``net: ${model}``); see module doc."""

    CONFIG_CHECKS: tuple[tuple[str, str], ...] = (
        (
            "method == 'file' or samples_path is None",
            "module.samples_path (a samples.pt) goes with module.method=file only: set "
            "module.samples_path=null",
        ),
    )

    def __init__(
        self,
        net: WPHOp,
        method: Literal["wph", "gaussian", "data", "file"] = "wph",
        n_samples: PositiveInt = 16,
        n_target: PositiveInt = 64,
        match: Literal["mean", "each"] = "each",
        steps: PositiveInt = 100,
        tol: NonNegative = 1e-6,
        history_size: PositiveInt = 20,
        synthesis_batch: PositiveInt = 16,
        sample_seed: Seed = 0,
        n_reference: PositiveInt = 1024,
        output_dir: str | None = None,
        num_threads: NonNegativeInt | None = None,
        progress: bool = True,
        samples_path: str | None = None,
    ) -> None:
        super().__init__()
        if method not in METHODS:
            raise ConfigError(f"unknown module.method {method!r}: use one of {METHODS}")
        if match not in MATCH:
            raise ConfigError(f"unknown module.match {match!r}: use one of {MATCH}")
        if (method == "file") != (samples_path is not None):
            raise ConfigError(
                "module.samples_path (a samples.pt) goes with module.method=file, and only with it"
            )
        self.save_hyperparameters(ignore=["net"], logger=False)
        self.net = net
        self._reference: list[Tensor] = []
        self._final: dict[str, float] = {}

    def setup(self, stage: str) -> None:
        # many small FFTs on a shared CPU: extra intra-op threads only contend
        if self.hparams.num_threads and self.device.type == "cpu":
            torch.set_num_threads(self.hparams.num_threads)

    def configure_optimizers(self):  # nothing to train: run with train=false
        raise ConfigError("the WPH module trains nothing: run it with train=false")

    def training_step(self, batch: Any, batch_idx: int) -> None:
        raise ConfigError("the WPH module trains nothing: run it with train=false")

    # ---- test: synthesise and evaluate ----------------------------------------------------
    def on_test_epoch_start(self) -> None:
        self._reference = []

    def test_step(self, batch: Any, batch_idx: int) -> None:
        if sum(r.shape[0] for r in self._reference) < self.hparams.n_reference:
            self._reference.append(_images(batch).float().cpu())

    def _targets(self) -> Tensor:
        dm = self.trainer.datamodule
        dm.setup("fit")
        xs, n = [], 0
        for batch in dm.train_dataloader():
            xs.append(_images(batch).float().cpu())
            n += xs[-1].shape[0]
            if n >= self.hparams.n_target:
                break
        return torch.cat(xs)[: self.hparams.n_target]

    def generate(self, target: Tensor) -> tuple[Tensor, dict[str, float]]:
        """Samples (n_samples, 1, L, L) on CPU and the synthesis' own numbers."""
        hp = self.hparams
        if hp.method == "file":
            return self._load_samples(target)
        if hp.method == "data":
            idx = torch.arange(hp.n_samples) % len(target)
            return target[idx].clone(), {}
        if hp.method == "gaussian":
            return gaussian_baseline(target, hp.n_samples, seed=hp.sample_seed)[:, None], {}
        y, info = synthesize(
            self.net,
            target.to(self.device),
            n=hp.n_samples,
            match=hp.match,
            steps=hp.steps,
            tol=hp.tol,
            history_size=hp.history_size,
            batch=hp.synthesis_batch,
            seed=hp.sample_seed,
            progress=hp.progress,
        )
        extra = {f"synthesis_{k}": v for k, v in info.as_dict().items()}
        extra["n_moments"] = float(self.net.n_moments)
        return y.float().cpu()[:, None], extra

    def _load_samples(self, target: Tensor) -> tuple[Tensor, dict[str, float]]:
        path = Path(self.hparams.samples_path)
        if not path.is_file():
            raise ConfigError(f"module.samples_path={path} does not exist: give a samples.pt")
        x = torch.load(path, map_location="cpu", weights_only=True).float()
        x = x[:, None] if x.dim() == 3 else x
        if x.dim() != 4 or x.shape[1:] != target.shape[1:]:
            raise ConfigError(
                f"{path} holds samples of shape {tuple(x.shape[1:])} but the data fields are "
                f"{tuple(target.shape[1:])}: use the same data.size as the run that wrote it"
            )
        extra: dict[str, float] = {}
        metrics = path.parent / "metrics.json"
        if metrics.is_file():
            import json

            src = json.loads(metrics.read_text())
            if "sampling_seconds" in src:
                extra["source_sampling_seconds"] = float(src["sampling_seconds"])
                extra["source_n_samples"] = float(len(x))
            if "wall_time_s" in src:
                extra["source_wall_time_s"] = float(src["wall_time_s"])
        return x[: self.hparams.n_samples], extra

    def on_test_epoch_end(self) -> None:
        hp = self.hparams
        if not self._reference:
            raise ConfigError("no test fields: the data module's test split is empty")
        ref = torch.cat(self._reference)[: hp.n_reference]
        require_square(ref, "the WPH experiment (radial spectra)")
        target = self._targets()
        t0 = time.time()
        samples, extra = self.generate(target)
        seconds = time.time() - t0
        m: dict[str, float] = {"seconds_per_sample": seconds / samples.shape[0], **extra}
        if "source_sampling_seconds" in extra:  # the other run's sampling time, not loading
            m["seconds_per_sample"] = extra["source_sampling_seconds"] / extra["source_n_samples"]
        m["spectrum_error"] = spectrum_error(samples, ref)
        m["spectrum_error_l2"] = spectrum_error_l2(samples, ref)
        m["hist_distance"] = histogram_distance(samples, ref)
        m["sample_std"], m["data_std"] = float(samples.std()), float(ref.std())
        energy = getattr(self.trainer.datamodule, "energy_params", None)
        if energy is not None:  # lattice fields: phi^4 energy and magnetisation
            m.update(lattice_metrics(samples, ref, **energy))
        self._final = m
        self.log_dict({f"test/{k}": v for k, v in m.items()}, sync_dist=False)
        self._write(samples, ref, m)

    def _write(self, samples: Tensor, ref: Tensor, m: dict[str, float]) -> None:
        out = self.hparams.output_dir
        if not out or not self.trainer.is_global_zero:
            return
        Path(out).mkdir(parents=True, exist_ok=True)
        torch.save(samples, Path(out) / "samples.pt")
        title = (
            f"{self.hparams.method}: spectrum_error {m['spectrum_error']:.3f}, "
            f"hist_distance {m['hist_distance']:.3f}"
        )
        if "energy_per_site" in m:
            e, ed = m["energy_per_site"], m["energy_per_site_data"]
            title += f", energy/site {e:.3f} (data {ed:.3f})"
        # the figure every generative model here writes: samples beside data, histograms, spectra
        fields = [t if t.dim() == 4 else t[:, None] for t in (samples, ref)]
        comparison_figure(*fields, Path(out) / "samples.png", title=title)

    def final_metrics(self) -> dict[str, float]:
        """Unprefixed sample metrics of the last test run (for metrics.json)."""
        return dict(self._final)
