"""Thin LightningModule training a WSGM or SGM (``scatterlab.wsgm``) and evaluating samples.

Training: noise-prediction loss of every scale (summed), EMA of the weights. Validation: the
EMA model's loss (``val/loss``). Test: draws ``n_samples`` samples with the EMA model and logs
``test/spectrum_error``, ``test/spectrum_error_l2``, ``test/hist_distance`` (and, for
lattice fields, ``test/energy_per_site`` vs ``test/energy_per_site_data`` and the law of the
mean magnetisation (``test/abs_m_mean``, ``test/abs_m_w1``); for RGB images
``test/fid`` when Inception weights are available), writes ``samples.pt`` (N x C x H x W)
and ``samples.png`` (samples beside training data, marginal histograms and radial spectra
overlaid against the test data) into ``output_dir``, and sends a sample grid to wandb when
it is a logger. With ``eval_steps`` (a list of N), the test stage also samples
eval_pixels / L^2 fields at every N and logs ``steps/N=<N>/{spectrum_error, hist_distance,
energy_error, seconds}`` and the data's own ``floor/...`` (the steps-vs-size study).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import lightning as L
import torch
from torch import Tensor

from scatterlab.errors import ConfigError
from scatterlab.ranges import Fraction, NonNegativeInt, PositiveInt, Range, Seed
from scatterlab.wsgm.diffusion import GRIDS, ScoreModel, ema_decay_at, ema_update
from scatterlab.wsgm.metrics import (
    histogram_distance,
    lattice_metrics,
    spectrum_error,
    spectrum_error_l2,
)

log = logging.getLogger("scatterlab")


def _images(batch: Any) -> Tensor:
    """Batches are tensors, or (x, ...) tuples/lists (labels ignored)."""
    return batch[0] if isinstance(batch, list | tuple) else batch


def steps_to_reach(ns: list[int], errs: list[float], target: float) -> float:
    """The smallest N at which errs(N) first drops to ``target``, interpolated linearly in
    (log N, log err) between the last N above it and the first at or below it; N's first value
    if already below, NaN if never reached. ns increasing."""
    for i, (n, e) in enumerate(zip(ns, errs, strict=True)):
        if e <= target:
            if i == 0:
                return float(n)
            n0, e0 = ns[i - 1], errs[i - 1]
            f = math.log(e0 / target) / math.log(e0 / max(e, 1e-300))
            return float(math.exp(math.log(n0) + f * math.log(n / n0)))
    return float("nan")


class WSGMModule(L.LightningModule):
    """LightningModule around a ``ScoreModel`` (``net: ${model}``: WSGM or SGM)."""

    def __init__(
        self,
        net: ScoreModel,
        optimizer: Any,
        scheduler: Any = None,
        ema_decay: Fraction = 0.999,
        stats_samples: PositiveInt = 2048,
        n_samples: PositiveInt = 256,
        sample_steps: PositiveInt = 64,
        grid: Literal["uniform", "quadratic"] = "uniform",
        sample_batch: PositiveInt = 256,
        sample_seed: Seed = 0,
        n_reference: PositiveInt = 2048,
        fid: bool = True,
        output_dir: str | None = None,
        num_threads: NonNegativeInt | None = None,
        pixels_per_scale: PositiveInt | None = None,
        eval_steps: Annotated[list[PositiveInt], Range(ge=1)] | None = None,
        eval_pixels: PositiveInt | None = None,
    ) -> None:
        super().__init__()
        if grid not in GRIDS:
            raise ConfigError(f"unknown module.grid {grid!r}: use one of {GRIDS}")
        if eval_steps is not None and (
            not list(eval_steps) or any(int(k) != k or k < 1 for k in eval_steps)
        ):
            raise ConfigError(
                f"module.eval_steps must be a list of step counts >= 1 (e.g. [2,4,8]), got "
                f"{list(eval_steps)}"
            )
        if eval_steps is not None:  # a plain list: an OmegaConf ListConfig in the hparams
            eval_steps = [int(k) for k in eval_steps]  # fails torch.load(weights_only=True)
        # Partial optimizers are not checkpoint-safe (weights_only loading): keep them aside.
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"], logger=False)
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.net = net
        # The EMA copy is a registered submodule: checkpointed and moved with the module.
        self.ema_net = copy.deepcopy(net).requires_grad_(False)
        self.register_buffer("stats_fitted", torch.zeros((), dtype=torch.bool))
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))
        self._reference: list[Tensor] = []
        self._final: dict[str, float] = {}

    def setup(self, stage: str) -> None:
        # Small convolutions on a shared CPU: extra intra-op threads only contend (measured
        # 11 s vs 0.8 s per quickstart step at load ~10 on 2 cores). null keeps torch's default.
        if self.hparams.num_threads and self.device.type == "cpu":
            torch.set_num_threads(self.hparams.num_threads)

    # ---- training -----------------------------------------------------------------------
    def on_fit_start(self) -> None:
        if bool(self.stats_fitted):
            return
        # Per-channel (per-scale) standardisation statistics from the training data.
        xs, n = [], 0
        dm = self.trainer.datamodule
        for batch in dm.train_dataloader():
            # Same preprocessing as training batches get (e.g. uint8 -> normalised float).
            x = _images(dm.on_after_batch_transfer(batch, 0))
            xs.append(x.float())
            n += x.shape[0]
            if n >= self.hparams.stats_samples:
                break
        x = torch.cat(xs).to(self.device)
        self.net.fit_stats(x)
        self.ema_net.load_state_dict(self.net.state_dict())
        self.stats_fitted.fill_(True)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x = _images(batch).float()
        # pixels_per_scale: each scale trains on the same number of pixels (coarse ones on
        # more images; SGM's single scale on pixels_per_scale / L^2 images)
        loss, parts = self.net.loss(x, self.hparams.pixels_per_scale)
        self.log("train/loss", loss, prog_bar=True, batch_size=x.shape[0])
        self.log_dict({f"train/{k}": v for k, v in parts.items()}, batch_size=x.shape[0])
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.ema_updates += 1
        ema_update(
            self.ema_net, self.net, ema_decay_at(self.hparams.ema_decay, int(self.ema_updates))
        )

    def _fixed_draws(self, batch_idx: int) -> torch.Generator:
        """The same times and noises for batch ``batch_idx`` at every evaluation: the EMA
        model's val/loss (which picks the tested checkpoint) then compares epochs on common
        random numbers instead of on fresh noise (the quickstart's 'best' was epoch 5 of 25)."""
        return torch.Generator(device=self.device).manual_seed(10_007 + batch_idx)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x = _images(batch).float()
        loss, _ = self.ema_net.loss(x, generator=self._fixed_draws(batch_idx))
        self.log("val/loss", loss, prog_bar=True, batch_size=x.shape[0])

    def configure_optimizers(self):
        opt = self.optimizer_factory(params=self.net.parameters())
        if self.scheduler_factory is None:
            return opt
        return {"optimizer": opt, "lr_scheduler": self.scheduler_factory(optimizer=opt)}

    # ---- test: sample and evaluate ------------------------------------------------------
    def on_test_epoch_start(self) -> None:
        self._reference = []

    def test_step(self, batch: Any, batch_idx: int) -> None:
        x = _images(batch).float()
        loss, _ = self.ema_net.loss(x, generator=self._fixed_draws(batch_idx))
        self.log("test/loss", loss, batch_size=x.shape[0])
        if sum(r.shape[0] for r in self._reference) < self.hparams.n_reference:
            self._reference.append(x.detach().cpu())

    @torch.no_grad()
    def generate(
        self,
        n: int | None = None,
        steps: int | None = None,
        grid: str | None = None,
        seed: int | None = None,
    ) -> Tensor:
        """Samples from the EMA model, (n, C, H, W) on CPU, in data units."""
        hp = self.hparams
        n, steps = n or hp.n_samples, steps or hp.sample_steps
        grid, seed = grid or hp.grid, hp.sample_seed if seed is None else seed
        g = torch.Generator(device=self.device).manual_seed(seed)
        out, done = [], 0
        while done < n:
            b = min(hp.sample_batch, n - done)
            out.append(self.ema_net.sample(b, steps, grid=grid, generator=g).cpu())
            done += b
        return torch.cat(out)

    def _sample_metrics(self, samples: Tensor, ref: Tensor) -> dict[str, float]:
        """Spectrum, histogram and (lattice fields) energy metrics of samples vs ref."""
        m = {
            "spectrum_error": spectrum_error(samples, ref),
            "spectrum_error_l2": spectrum_error_l2(samples, ref),
            "hist_distance": histogram_distance(samples, ref),
            "sample_std": float(samples.std()),
        }
        dm = getattr(self.trainer, "datamodule", None)
        energy = getattr(dm, "energy_params", None)
        if energy is not None:  # lattice fields: phi^4 energy and magnetisation
            m.update(lattice_metrics(samples, ref, **energy))
        return m

    def on_test_epoch_end(self) -> None:
        hp = self.hparams
        ref = torch.cat(self._reference)[: hp.n_reference] if self._reference else None
        t0 = time.time()
        samples = self.generate()
        seconds = time.time() - t0
        m: dict[str, float] = {
            "sampling_seconds": seconds,
            "samples_per_s": samples.shape[0] / max(seconds, 1e-9),
            "seconds_per_sample": seconds / samples.shape[0],  # the WPH runs' measure
            "sample_steps": float(hp.sample_steps),
        }
        finite = bool(torch.isfinite(samples).all())
        m["samples_finite"] = float(finite)
        if ref is not None and finite:
            m.update(self._sample_metrics(samples, ref))
            m["data_std"] = float(ref.std())
            if hp.fid and samples.shape[1] == 3:
                fid = self._fid(samples, ref)
                if fid is not None:
                    m["fid"] = fid
        elif not finite:
            log.warning(
                "WSGM samples contain NaN/inf: metrics skipped (train longer, or use "
                "more sampling steps)"
            )
        if ref is not None and hp.eval_steps:
            m.update(self._steps_sweep(ref))
        self._final = m
        self.log_dict({f"test/{k}": v for k, v in m.items()}, sync_dist=False)
        self._write(samples, ref)

    def _steps_sweep(self, ref: Tensor) -> dict[str, float]:
        """Metrics per number of sampling steps N in ``eval_steps``: ``steps/N=<N>/<metric>``
        for eval_pixels / L^2 samples (same seed at every N, so every L sees as many pixels),
        and ``floor/<metric>``: the same metrics for as many real training fields (the error
        of the data itself at that sample size)."""
        hp = self.hparams
        pixels = ref.shape[-1] * ref.shape[-2]
        n = max(4, hp.eval_pixels // pixels) if hp.eval_pixels else hp.n_samples
        out: dict[str, float] = {"eval_samples": float(n)}
        train = self._training_fields(n)
        if train is not None:
            floor = self._sample_metrics(train, ref)
            out.update({f"floor/{k}": v for k, v in floor.items() if k != "sample_std"})
        for steps in hp.eval_steps:
            t0 = time.time()
            x = self.generate(n=n, steps=steps)
            key = f"steps/N={steps}"
            out[f"{key}/seconds"] = time.time() - t0
            if not torch.isfinite(x).all():
                out[f"{key}/samples_finite"] = 0.0
                continue
            metrics = self._sample_metrics(x, ref)
            for k in ("spectrum_error", "hist_distance", "energy_error", "abs_m_w1"):
                if k in metrics:
                    out[f"{key}/{k}"] = metrics[k]
            log.info(
                f"N={steps}: "
                + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k != "sample_std")
            )
        # N needed to reach a fixed spectrum error: 0.05, and 2 x the floor (the data's own
        # error at this sample size); the steps-vs-size curves of the study
        ns = [k for k in hp.eval_steps if f"steps/N={k}/spectrum_error" in out]
        errs = [out[f"steps/N={k}/spectrum_error"] for k in ns]
        targets = {"0.05": 0.05}
        if "floor/spectrum_error" in out:
            targets["2floor"] = 2 * out["floor/spectrum_error"]
        for name, target in targets.items():
            out[f"steps_to/spectrum_error/{name}"] = steps_to_reach(ns, errs, target)
        return out

    def _to_unit(self, x: Tensor) -> Tensor:
        """Map samples to [0, 1] for pictures: undo the image normalisation when known."""
        dm = getattr(self.trainer, "datamodule", None)
        mean, std = getattr(dm, "mean", None), getattr(dm, "std", None)
        if x.shape[1] == 3 and mean is not None and std is not None:
            mt = torch.tensor(mean).view(1, -1, 1, 1)
            st = torch.tensor(std).view(1, -1, 1, 1)
            return (x * st + mt).clamp(0, 1)
        lo, hi = x.quantile(0.005), x.quantile(0.995)  # one scale for all fields
        return ((x - lo) / (hi - lo).clamp(min=1e-8)).clamp(0, 1)

    def _fid(self, samples: Tensor, ref: Tensor) -> float | None:
        try:
            from torchmetrics.image.fid import FrechetInceptionDistance

            fid = FrechetInceptionDistance(feature=2048, normalize=True)
            fid.update(self._to_unit(ref), real=True)
            fid.update(self._to_unit(samples), real=False)
            return float(fid.compute())
        except Exception as exc:  # no torch-fidelity, or weights not downloadable offline
            log.warning(
                f"FID skipped: Inception weights/torch-fidelity unavailable "
                f"({type(exc).__name__}: {str(exc)[:120]}); spectrum and histogram "
                "metrics are still computed"
            )
            return None

    def _training_fields(self, n: int) -> Tensor | None:
        """Up to n training fields (N, C, H, W) as the model sees them, or None without data."""
        dm = getattr(self.trainer, "datamodule", None)
        if dm is None:
            return None
        splits = getattr(dm, "splits", None)
        train = splits.get("train") if isinstance(splits, dict) else None
        if isinstance(train, Tensor):  # lattice fields: no loader needed (images: (x, y) pairs)
            return train[:n].float().cpu()
        xs, got = [], 0
        try:
            for batch in dm.train_dataloader():
                xs.append(_images(dm.on_after_batch_transfer(batch, 0)).float().cpu())
                got += xs[-1].shape[0]
                if got >= n:
                    break
        except Exception:  # a module-supplied test loader only (train=false runs)
            return None
        return torch.cat(xs)[:n] if xs else None

    def _write(self, samples: Tensor, ref: Tensor | None = None) -> None:
        """samples.pt and samples.png: samples beside training data, histograms, spectra."""
        if not self.trainer.is_global_zero:
            return
        from scatterlab.wsgm.plots import comparison_figure

        out = self.hparams.output_dir
        train = self._training_fields(16)
        shown = train if train is not None else ref
        m = self._final
        parts = [type(self.ema_net).__name__, f"N = {self.hparams.sample_steps}"]
        for key, name in (
            ("spectrum_error", "spectrum err"),
            ("hist_distance", "hist dist"),
            ("energy_per_site", "E/site"),
        ):
            if key in m:
                parts.append(f"{name} {m[key]:.3f}")
        if "energy_per_site_data" in m:
            parts[-1] += f" (data {m['energy_per_site_data']:.3f})"
        to_unit = self._to_unit if samples.shape[1] == 3 else None
        if out:
            Path(out).mkdir(parents=True, exist_ok=True)
            torch.save(samples, Path(out) / "samples.pt")
            if shown is not None:
                comparison_figure(
                    samples,
                    shown,
                    Path(out) / "samples.png",
                    title=", ".join(parts),
                    reference=ref,
                    to_unit=to_unit,
                    labels=("samples", "training data" if train is not None else "test data"),
                )
        for lg in self.loggers:
            if type(lg).__name__ == "WandbLogger":
                from torchvision.utils import make_grid

                grid = make_grid(self._to_unit(samples[:64].nan_to_num()), nrow=8, padding=1)
                lg.log_image(key="test/samples", images=[grid])

    def final_metrics(self) -> dict[str, float]:
        """Unprefixed sample metrics of the last test run (for metrics.json)."""
        return dict(self._final)
