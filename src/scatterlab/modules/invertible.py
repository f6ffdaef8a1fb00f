"""Classification of an invertible net (i-RevNet), with its reconstruction error measured.

The training is ClassificationModule's. On top: || inverse(features(x)) - x || / || x || on
`recon_images` validation images in float32 and float64, before training (`recon/init_*`) and
after it (`recon/final_*`), into metrics.json.
"""

from __future__ import annotations

from typing import Any

from scatterlab.errors import ConfigError
from scatterlab.invertible.reconstruction import reconstruction_errors
from scatterlab.modules.classification import ClassificationModule
from scatterlab.ranges import PositiveInt


class InvertibleClassificationModule(ClassificationModule):
    """ClassificationModule + reconstruction errors; `net` must have features() and inverse()."""

    def __init__(self, *args: Any, recon_images: PositiveInt = 64, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not (hasattr(self.net, "inverse") and hasattr(self.net, "features")):
            raise ConfigError(
                f"module=invertible needs an invertible net (features + inverse), got "
                f"{type(self.net).__name__}: use model=irevnet or module=classification"
            )
        self.recon_images = recon_images
        self.recon: dict[str, float] = {}

    def _measure(self, prefix: str) -> None:
        from scatterlab.data.base import device_batches

        dm = getattr(self.trainer, "datamodule", None)
        splits = getattr(dm, "splits", None)
        if not isinstance(splits, dict):
            return  # not an in-memory data set: nothing cheap to measure on
        split = "val" if "val" in splits else next(iter(splits))
        x = device_batches(dm, split, self.recon_images, 0, self.device)[0][0]
        for dtype, err in reconstruction_errors(self.net, x).items():
            self.recon[f"recon/{prefix}_{dtype}"] = err

    def on_fit_start(self) -> None:
        if not self.recon:
            self._measure("init")

    def on_fit_end(self) -> None:
        self._measure("final")

    def final_metrics(self) -> dict[str, float]:
        return dict(self.recon)
