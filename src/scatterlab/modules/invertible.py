"""Thin LightningModules of the invertible line: classification of an invertible net (i-RevNet)
with its reconstruction error measured, and the scattering generator (Angles & Mallat).

The training is ClassificationModule's. On top: || inverse(features(x)) - x || / || x || on
`recon_images` validation images in float32 and float64, before training (`recon/init_*`) and
after it (`recon/final_*`), into metrics.json.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import lightning as L
import torch
from torch import Tensor, nn

from scatterlab.errors import ConfigError
from scatterlab.invertible.reconstruction import reconstruction_errors
from scatterlab.modules.classification import ClassificationModule
from scatterlab.ranges import PositiveInt, Range


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


class ScatteringGeneratorModule(L.LightningModule):
    """Angles & Mallat's generator: G trained to invert a fixed whitened scattering embedding.

    J, L: scattering scales and angles; dim: embedding dimension (principal components kept,
    at most the number of scattering coefficients and of `fit_images`); width: generator width;
    fit_images: training images used for the mean and PCA of the scattering (before training).
    Logs {train,val,test}/loss (L1 on normalized images) and /psnr (dB, images mapped back to
    [0, 1] with the data's mean and std); writes <name>_{reconstructions,interpolations,
    samples}.png into output_dir at the end of the test, samples from z ~ N(0, I_dim).
    """

    CONFIG_CHECKS: tuple[tuple[str, str], ...] = (
        ("size % 2 ** J == 0", "module.J is too large: the image size must be divisible by 2^J"),
        ("size & (size - 1) == 0", "the generator needs a power-of-2 image size"),
        (
            "dim <= channels * (1 + J * L + L * L * J * (J - 1) // 2) * (size // 2 ** J) ** 2",
            "module.dim exceeds the number of scattering coefficients: lower module.dim",
        ),
    )

    def __init__(
        self,
        optimizer: Callable[..., torch.optim.Optimizer],
        channels: Annotated[int, Range(ge=1, le=64)] = 1,
        size: Annotated[int, Range(ge=2, le=1024)] = 8,
        J: Annotated[int, Range(ge=1, le=8)] = 2,
        L: Annotated[int, Range(ge=1, le=16)] = 8,
        dim: Annotated[int, Range(ge=1, le=65_536)] = 64,
        width: Annotated[int, Range(ge=16, le=2048)] = 128,
        fit_images: PositiveInt = 4096,
        name: str = "scattering_generator",
        output_dir: str | None = None,
    ) -> None:
        super().__init__()
        if size % 2**J or size // 2**J < 1:
            raise ConfigError(
                f"module.J={J}: the image size {size} must be divisible by 2^J = {2**J}; use a "
                f"smaller module.J"
            )
        if size & (size - 1):
            raise ConfigError(f"data image size {size} must be a power of 2 for the generator")
        n_scat = channels * (1 + J * L + L * L * J * (J - 1) // 2) * (size // 2**J) ** 2
        if dim > n_scat:
            raise ConfigError(
                f"module.dim={dim} exceeds the {n_scat} scattering coefficients "
                f"(J={J}, L={L}): use module.dim <= {n_scat}"
            )
        from scatterlab.invertible.generator import Generator, ScatteringEmbedding

        self.embedding = ScatteringEmbedding(J, size, channels, dim, L)
        self.generator = Generator(dim, channels, size, width)
        self.optimizer_factory, self.fit_images = optimizer, fit_images
        self.name, self.output_dir = name, output_dir
        self.metrics: dict[str, float] = {}

    @property
    def net(self) -> nn.Module:  # what train.py counts: the trained generator
        return self.generator

    def _to_unit(self, x: Tensor) -> Tensor:
        dm = self.trainer.datamodule
        mean = torch.tensor(getattr(dm, "mean", (0.0,)), device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(getattr(dm, "std", (1.0,)), device=x.device).view(1, -1, 1, 1)
        return x * std + mean

    def on_fit_start(self) -> None:
        from scatterlab.data.base import device_batches

        dm = self.trainer.datamodule
        batches = device_batches(dm, "train", self.fit_images, 0, self.device)
        x = torch.cat([b[0] for b in batches])
        if len(x) < self.embedding.dim:
            raise ConfigError(
                f"module.dim={self.embedding.dim} needs at least as many fit images; got "
                f"{len(x)}: lower module.dim or raise module.fit_images"
            )
        self.embedding.fit(x)

    def _step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        x = batch[0]
        with torch.no_grad():
            z = self.embedding(x)
        rec = self.generator(z)
        loss = (rec - x).abs().mean()
        from scatterlab.invertible.generator import psnr

        value = psnr(self._to_unit(rec).clamp(0, 1), self._to_unit(x))
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log(f"{stage}/psnr", value, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "test")
        if batch_idx == 0:
            self._first_test = batch[0][:16].detach()

    def on_test_epoch_end(self) -> None:
        """Train-set PSNR in eval mode (metrics.json) and the three figures."""
        from scatterlab.data.base import device_batches
        from scatterlab.invertible.generator import psnr

        self.generator.eval()
        with torch.no_grad():
            x = torch.cat(
                [
                    b[0]
                    for b in device_batches(self.trainer.datamodule, "train", 512, 0, self.device)
                ]
            )
            rec = self.generator(self.embedding(x))
            self.metrics["train_psnr_eval"] = psnr(self._to_unit(rec).clamp(0, 1), self._to_unit(x))
            if self.output_dir and getattr(self, "_first_test", None) is not None:
                self._figures(self._first_test)

    @torch.no_grad()
    def _figures(self, x: Tensor) -> None:
        from pathlib import Path

        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        out = Path(self.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        g = torch.Generator().manual_seed(0)
        z = self.embedding(x)
        rec = self.generator(z)
        steps = torch.linspace(0, 1, 8, device=x.device)[:, None]
        interp = torch.cat(
            [self.generator((1 - steps) * z[i] + steps * z[i + 1]) for i in (0, 2, 4)]
        )
        noise = torch.randn(16, self.embedding.dim, generator=g).to(x.device)
        samples = self.generator(noise)
        for tag, rows in (
            ("reconstructions", [x, rec]),
            ("interpolations", [interp[k * 8 : (k + 1) * 8] for k in range(3)]),
            ("samples", [samples[:8], samples[8:]]),
        ):
            images = [self._to_unit(r).clamp(0, 1).cpu() for r in rows]
            n = max(len(r) for r in images)
            fig, axes = plt.subplots(len(images), n, figsize=(n * 0.9, len(images) * 0.9))
            for i, row in enumerate(images):
                for j in range(n):
                    ax = axes[i][j]
                    ax.axis("off")
                    if j < len(row):
                        img = row[j].permute(1, 2, 0).squeeze(-1).numpy()
                        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
            fig.savefig(out / f"{self.name}_{tag}.png", dpi=100, bbox_inches="tight")
            plt.close(fig)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(params=self.generator.parameters())

    def final_metrics(self) -> dict[str, float]:
        return dict(self.metrics)
