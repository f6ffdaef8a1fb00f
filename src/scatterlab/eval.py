"""Evaluation entry point: `python eval.py ckpt_path=PATH [data=... data.root=...]`.

Rebuilds the module from the config stored in the checkpoint, tests it, and writes
metrics.json into the eval run directory.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from scatterlab import ROOT
from scatterlab.console import done, quiet_libraries, user_errors
from scatterlab.env import environment
from scatterlab.errors import CheckpointError
from scatterlab.models import count_parameters
from scatterlab.utils import (
    instantiate_all,
    load_checkpoint,
    stored_config,
    to_float_dict,
    write_metrics,
)

log = logging.getLogger("scatterlab")


def evaluate(cfg: DictConfig) -> dict[str, float]:
    start = time.time()
    quiet_libraries()
    ckpt = load_checkpoint(cfg.ckpt_path)
    saved = OmegaConf.create(stored_config(ckpt, cfg.ckpt_path))
    module = instantiate(saved.module)
    try:
        module.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
        raise CheckpointError(
            f"{cfg.ckpt_path} does not fit its own model config: {first}"
        ) from None
    datamodule = instantiate(cfg.data if cfg.get("data") else saved.data)
    trainer = instantiate(
        cfg.trainer, logger=False, callbacks=instantiate_all(cfg.get("callbacks"))
    )
    trainer.test(module, datamodule=datamodule)
    metrics = dict(trainer.callback_metrics)
    metrics["epoch"] = ckpt.get("epoch", -1)
    metrics["num_params"] = count_parameters(getattr(module, "net", module))
    metrics["wall_time_s"] = time.time() - start
    metrics = to_float_dict(metrics)
    device = type(trainer.accelerator).__name__.removesuffix("Accelerator").lower()
    path = write_metrics(
        metrics, Path(cfg.paths.output_dir), environment(cfg.trainer.get("precision"), device)
    )
    shown = ", ".join(f"{k} {metrics[k]:.4g}" for k in ("test/acc", "test/loss") if k in metrics)
    done([f"Done{': ' + shown if shown else ''}. Metrics in {path}"])
    return metrics


@hydra.main(version_base="1.3", config_path=str(ROOT / "configs"), config_name="eval")
def _main(cfg: DictConfig) -> None:
    with user_errors():
        evaluate(cfg)
