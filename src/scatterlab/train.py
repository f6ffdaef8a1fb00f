"""Training entry point: `python train.py experiment=NAME [overrides]` (Hydra).

Fits the module, tests the best checkpoint, and writes metrics.json into the run directory.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, LearningRateMonitor
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf

from scatterlab import ROOT
from scatterlab.cluster import PreemptionHandler, requested_ckpt_path, sweep_group
from scatterlab.config_check import validate_config
from scatterlab.console import _in_multirun, done, quiet_libraries, user_errors
from scatterlab.env import environment
from scatterlab.errors import DivergedError
from scatterlab.models import count_parameters
from scatterlab.runs import lock_run_dir
from scatterlab.utils import (
    AtomicCheckpointIO,
    instantiate_all,
    load_checkpoint,
    resolve_ckpt_path,
    to_float_dict,
    wandb_run_id,
    write_metrics,
)

log = logging.getLogger("scatterlab")
CONFIG_DIR = str(ROOT / "configs")


class SaveConfig(Callback):
    """Stores the resolved run config in every checkpoint, so eval.py can rebuild the run."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        checkpoint["scatterlab_config"] = self.config


class EpochTimer(Callback):
    """Wall time of each training epoch (the training loop only, validation excluded)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.times.append(time.perf_counter() - self._start)

    def metrics(self) -> dict[str, float]:
        """Median epoch time (robust to the first epoch's warm-up), without any epoch: {}."""
        if not self.times:
            return {}
        t = sorted(self.times)
        return {"train_epoch_time_s": t[len(t) // 2]}


class FiniteLossGuard(Callback):
    """Stops training at the first non-finite training loss (NaN or inf).

    A diverged run that trains on only writes NaN losses and a chance accuracy; stopping names
    the step and the last good checkpoint instead.
    """

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor) and not bool(torch.isfinite(loss).all()):
            ckpt = getattr(trainer.checkpoint_callback, "last_model_path", "") or None
            raise DivergedError(
                f"the training loss is {loss.item()} at step {trainer.global_step} (epoch "
                f"{trainer.current_epoch}, batch {batch_idx}): the run diverged; lower "
                "module.optimizer.lr, or resume from the last good checkpoint "
                f"{ckpt or '(none saved yet)'} with ckpt_path=PATH",
                step=trainer.global_step,
                checkpoint=ckpt,
            )


def build_loggers(cfg: DictConfig, output_dir: Path) -> list[Any]:
    loggers = []
    for lg_cfg in (cfg.get("logger") or {}).values():
        if not isinstance(lg_cfg, DictConfig) or "_target_" not in lg_cfg:
            continue
        kwargs = {}
        if lg_cfg._target_.endswith("WandbLogger") and lg_cfg.get("id") is None:
            kwargs["id"] = wandb_run_id(output_dir)  # same wandb run when the run dir resumes
            if lg_cfg.get("group") is None:
                kwargs["group"] = sweep_group()  # one wandb group per multirun sweep
        lg = instantiate(lg_cfg, **kwargs)
        if isinstance(lg, WandbLogger):  # Lightning always passes wandb a setting that wandb
            lg._wandb_init.pop("anonymous", None)  # no longer has, and wandb warns about it
        loggers.append(lg)
    return loggers


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit and test as the config says; returns the metrics written to metrics.json."""
    start = time.time()
    quiet_libraries()  # Lightning's banners and tips: train.log only
    validate_config(cfg)  # a wrong key, type or range fails here, naming it (checked before
    # Hydra started too; here again for a sweeper's values and for runs launched from code)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    run_lock = lock_run_dir(output_dir)  # noqa: F841 - held until the process ends
    ckpt_path = resolve_ckpt_path(requested_ckpt_path(cfg.get("ckpt_path")), output_dir)
    # the run's own settings, without the hydra node that tests compose in
    resolved = {
        k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
        for k, v in cfg.items()
        if k != "hydra"
    }

    # data: null for runs whose module brings its own data (theory, synthesis: train=false)
    datamodule = instantiate(cfg.data) if cfg.get("data") is not None else None
    if cfg.get("train", True) and datamodule is not None:
        datamodule.setup("fit")  # a missing data set fails here, before loggers start
    module = instantiate(cfg.module)
    loggers = build_loggers(cfg, output_dir)
    callbacks = instantiate_all(cfg.get("callbacks"))
    if not loggers:  # it refuses to run without a logger
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    epoch_timer = EpochTimer()
    trainer: L.Trainer = instantiate(
        cfg.trainer,
        # the timer first: its epoch end comes before other callbacks' (e.g. an analysis)
        callbacks=[
            epoch_timer,
            *callbacks,
            SaveConfig(resolved),
            PreemptionHandler(),
            FiniteLossGuard(),
        ],
        logger=loggers or False,
        plugins=[AtomicCheckpointIO()],
    )
    for lg in loggers:
        lg.log_hyperparams(resolved)
    log.info(f"Run directory: {output_dir}")

    metrics: dict[str, Any] = {}
    device = type(trainer.accelerator).__name__.removesuffix("Accelerator").lower()  # cpu, cuda
    env = environment(precision=cfg.trainer.get("precision"), device=device)
    if cfg.get("train", True):
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        except DivergedError as e:
            if trainer.is_global_zero:  # the study report lists the run as diverged
                metrics = {**trainer.callback_metrics, "wall_time_s": time.time() - start}
                write_metrics(
                    metrics,
                    output_dir,
                    env,
                    status="diverged",
                    diverged_step=e.step,
                    last_good_checkpoint=e.checkpoint,
                )
            raise
        metrics.update(trainer.callback_metrics)
        metrics["last_epoch"] = trainer.current_epoch - 1
        metrics.update(epoch_timer.metrics())
    best = getattr(trainer.checkpoint_callback, "best_model_path", "") or None
    if best:
        metrics["best_epoch"] = load_checkpoint(best)["epoch"]
    if not cfg.get("train", True):
        best = ckpt_path  # train=false ckpt_path=PATH tests that checkpoint's weights
    if cfg.get("test", True):
        trainer.test(module, datamodule=datamodule, ckpt_path=best)
        metrics.update(trainer.callback_metrics)
    if hasattr(module, "final_metrics"):
        metrics.update(module.final_metrics())
    net = getattr(module, "net", module)
    metrics["num_params"] = count_parameters(net)
    metrics["wall_time_s"] = time.time() - start
    metrics = to_float_dict(metrics)
    if trainer.is_global_zero:
        path = write_metrics(metrics, output_dir, env)
        log.info(f"Metrics written to {path}")
        for lg in loggers:
            if isinstance(lg, WandbLogger):
                lg.experiment.summary.update(metrics)
        if not _in_multirun():  # a sweep ends with its own summary (cluster.ReportFailedJobs)
            done(run_summary(output_dir, metrics, cfg.get("optimized_metric")))
    return metrics


def run_summary(output_dir: Path, metrics: dict[str, Any], key: str | None) -> list[str]:
    """The closing lines of a run: its headline numbers, where its files are, what next."""
    shown = [k for k in (key, "test/acc", "test/loss") if k and k in metrics][:2]
    numbers = ", ".join(f"{k} {metrics[k]:.4g}" for k in shown)
    lines = [f"Done{': ' + numbers if numbers else ''}. Results in {output_dir}/"]
    lines.append("  metrics.json, train.log, .hydra/ (the config)")
    ckpts = output_dir / "checkpoints"
    if (ckpts / "last.ckpt").exists():
        lines.append(
            f"  checkpoints/ (best and last.ckpt): python eval.py ckpt_path={ckpts}/last.ckpt"
        )
    offline = sorted((output_dir / "wandb").glob("offline-run-*"))
    if offline:
        lines.append(f"  wandb/ (offline run): wandb sync {offline[-1]}")
    return lines


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def _main(cfg: DictConfig) -> float | None:
    try:
        with user_errors():
            metrics = train(cfg)
    finally:
        _finish_wandb()
    return metrics.get(cfg.get("optimized_metric") or "", None)


def _finish_wandb() -> None:
    # Close the run, so the next job of a multirun starts its own (and offline files are flushed).
    import sys

    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            try:
                wandb.finish()
            except Exception as e:  # e.g. its service killed by SLURM: keep the job's own error
                log.warning(f"wandb.finish failed: {type(e).__name__}: {e}")


torch.set_float32_matmul_precision("high")
