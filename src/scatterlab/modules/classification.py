"""LightningModule for image classification: cross-entropy, accuracy, optimizer from config."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from scatterlab.models import count_parameters
from scatterlab.ranges import Range

STAGES = ("train", "val", "test")


class ClassificationModule(L.LightningModule):
    """Trains `net` (any classifier nn.Module) with cross-entropy.

    optimizer / scheduler: partials (Hydra `_partial_: true`) completed with the parameters
    and the optimizer; the scheduler steps once per epoch. Logs train/, val/ and test/ loss
    and top-1 accuracy (top-5 with `top5`), and val/acc_best.
    """

    CONFIG_CHECKS: tuple[tuple[str, str], ...] = (
        ("not top5 or num_classes >= 5", "top-5 accuracy needs 5 classes: set module.top5=false"),
    )

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        num_classes: Annotated[int, Range(ge=2)] = 10,
        top5: bool = False,
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False, ignore=["net", "optimizer", "scheduler"])
        self.net = net
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        # "train" is taken by nn.Module.train, so the ModuleDicts are keyed by stage + "_".
        self.acc = nn.ModuleDict(
            {f"{s}_": MulticlassAccuracy(num_classes, average="micro") for s in STAGES}
        )
        self.loss = nn.ModuleDict({f"{s}_": MeanMetric() for s in STAGES})
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)  # saved in checkpoints, so a resumed run keeps it
        if top5:
            self.test_acc_top5 = MulticlassAccuracy(num_classes, top_k=5, average="micro")

    @property
    def num_params(self) -> int:
        return count_parameters(self.net)

    def setup(self, stage: str) -> None:
        if self.hparams.compile and stage == "fit":
            self.net.compile()  # in place: checkpoints keep the eager net's state_dict keys

    def forward(self, x: Tensor) -> Tensor:
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def _step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits.float(), y)
        self.loss[stage + "_"](loss)
        self.acc[stage + "_"](logits, y)
        on_step = stage == "train"
        loss_metric, acc_metric = self.loss[stage + "_"], self.acc[stage + "_"]
        self.log(f"{stage}/loss", loss_metric, on_step=on_step, on_epoch=True, prog_bar=True)
        self.log(f"{stage}/acc", acc_metric, on_step=False, on_epoch=True, prog_bar=True)
        if stage == "test" and self.hparams.top5:
            self.test_acc_top5(logits, y)
            self.log("test/acc_top5", self.test_acc_top5, on_epoch=True)
        return loss

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self.val_acc_best(self.acc["val_"].compute())
        self.log("val/acc_best", self.val_acc_best.compute(), sync_dist=True)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def parameter_groups(self) -> list[dict]:
        """The optimizer's parameter groups: one, or two when the net names parameters that
        must not be weight-decayed (`net.no_weight_decay_parameters() -> list[str]`, names as in
        `net.named_parameters()`, e.g. tight frames kept tight by a Parseval step instead)."""
        names = getattr(self.net, "no_weight_decay_parameters", None)
        names = set(names()) if callable(names) else set()
        unknown = names - {n for n, _ in self.net.named_parameters()}
        if unknown:
            raise ValueError(f"no_weight_decay_parameters names unknown parameters {unknown}")
        no_decay = [p for n, p in self.net.named_parameters() if n in names]
        ids = {id(p) for p in no_decay}
        decay = [p for p in self.parameters() if id(p) not in ids]
        if not no_decay:
            return [{"params": decay}]
        return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]

    def optimizer_step(self, *args, **kwargs) -> None:
        """The optimizer's step, then `net.after_optimizer_step()` if the net defines it (a
        projection after every step: the Parseval step of tight frames, a clipped threshold)."""
        super().optimizer_step(*args, **kwargs)
        hook = getattr(self.net, "after_optimizer_step", None)
        if callable(hook):
            hook()

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.parameter_groups())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"},
        }
