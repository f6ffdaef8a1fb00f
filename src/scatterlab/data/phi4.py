"""LightningDataModule serving phi^4 and Gaussian lattice fields (cached on disk).

Batches are float tensors (B, 1, L, L) in physical units (no standardisation: the WSGM/SGM
models standardise internally and the phi^4 energy metric needs raw values). Training batches
get random periodic shifts and flips, exact symmetries of the lattice distribution.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from scatterlab.data.base import SeededSampler, step_generator
from scatterlab.errors import ConfigError
from scatterlab.ranges import NonNegativeInt, Positive, PositiveInt, Range, Seed
from scatterlab.wsgm.phi4 import Phi4Config, generate_phi4, sample_gaussian_field

FIELDS = ("phi4", "gaussian", "gaussian_hmc")


class Phi4DataModule(L.LightningDataModule):
    """phi^4 (``field="phi4"``, HMC), Gaussian mass-term field sampled exactly
    (``"gaussian"``, FFT) or by the same HMC (``"gaussian_hmc"``), split train/val/test.

    The simulation is cached in ``cache_dir`` under a hash of all its parameters.
    ``energy_params`` tells the WSGM module which energy to evaluate on samples.
    """

    CONFIG_CHECKS: tuple[tuple[str, str], ...] = (
        ("image_size is None or image_size == size", "set data.image_size equal to data.size"),
        ("in_channels == 1", "lattice fields have 1 channel: set data.in_channels=1"),
        ("mass2_L is None or field != 'phi4'", "data.mass2_L is for data.field=gaussian"),
        # batch_size <= n_train only matters when training (train_dataloader checks it): runs
        # with train=false may use a larger batch, and the checks here do not see `train`
    )

    def __init__(
        self,
        size: Annotated[int, Range(ge=2)] = 32,
        beta: Positive = 0.68,
        field: Literal["phi4", "gaussian", "gaussian_hmc"] = "phi4",
        mass2: Positive = 0.1,
        mass2_L: Positive | None = None,
        n_train: PositiveInt = 2048,
        n_val: PositiveInt = 256,
        n_test: PositiveInt = 512,
        n_chains: PositiveInt = 256,
        n_therm: NonNegativeInt = 200,
        thin: PositiveInt = 5,
        dt: Positive = 0.2,
        n_leapfrog: PositiveInt = 8,
        fourier_accel: bool = True,
        seed: Seed = 0,
        cache_dir: str | None = None,
        batch_size: PositiveInt = 64,
        num_workers: NonNegativeInt = 0,
        augment: bool = True,
        sim_device: str = "cpu",
        progress: bool = True,
        image_size: PositiveInt | None = None,
        in_channels: PositiveInt = 1,
    ) -> None:
        super().__init__()
        if image_size is not None and image_size != size:
            raise ConfigError(f"data.image_size={image_size} differs from data.size={size}")
        if in_channels != 1:
            raise ConfigError(f"lattice fields have 1 channel, got data.in_channels={in_channels}")
        if field not in FIELDS:
            raise ConfigError(f"unknown data.field {field!r}: use one of {FIELDS}")
        if mass2_L is not None:
            if field == "phi4":
                raise ConfigError("data.mass2_L is for Gaussian fields: set data.field=gaussian")
            # m^2 = mass2_L (2 pi / L)^2: a correlation length proportional to L (critical-like)
            mass2 = mass2_L * (2 * math.pi / size) ** 2
        self.size, self.beta, self.field, self.mass2 = size, beta, field, mass2
        self.n_train, self.n_val, self.n_test = n_train, n_val, n_test
        self.sim = Phi4Config(
            size=size,
            beta=beta,
            mass2=mass2 if field == "gaussian_hmc" else None,
            n_samples=n_train + n_val + n_test,
            n_chains=n_chains,
            n_therm=n_therm,
            thin=thin,
            dt=dt,
            n_leapfrog=n_leapfrog,
            fourier_accel=fourier_accel,
            seed=seed,
        )
        self.sim.validate()
        self.seed, self.cache_dir = seed, cache_dir
        self.batch_size, self.num_workers, self.augment = batch_size, num_workers, augment
        self.sim_device, self.progress = sim_device, progress
        self.channels, self.image_size = 1, size
        self.splits: dict[str, torch.Tensor] = {}

    @property
    def energy_params(self) -> dict[str, float | None]:
        return {"beta": self.beta, "mass2": None if self.field == "phi4" else self.mass2}

    def _generate(self) -> torch.Tensor:
        if self.field == "gaussian":
            g = torch.Generator().manual_seed(self.seed)
            return sample_gaussian_field(self.sim.n_samples, self.size, self.beta, self.mass2, g)
        return generate_phi4(
            self.sim, self.cache_dir, device=self.sim_device, progress=self.progress
        )

    def prepare_data(self) -> None:
        if self.field != "gaussian":
            self._generate()  # fills the cache once (rank 0)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        x = self._generate()
        a, b = self.n_train, self.n_train + self.n_val
        self.splits = {"train": x[:a], "val": x[a:b], "test": x[b:]}

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        ds = TensorDataset(self.splits[split])
        world = self.trainer.world_size if self.trainer is not None else 1
        return DataLoader(
            ds,
            batch_size=max(1, self.batch_size // world),
            # the same seeded, resume-safe order as the image data modules
            sampler=SeededSampler(len(ds), self.seed) if shuffle else None,
            num_workers=self.num_workers,
            drop_last=shuffle,
        )

    def train_dataloader(self) -> DataLoader:
        world = self.trainer.world_size if self.trainer is not None else 1
        if self.batch_size // world > self.n_train:  # drop_last: no batch at all
            raise ConfigError(
                f"data.batch_size ({self.batch_size}) > data.n_train ({self.n_train}) leaves no "
                "training batch: lower data.batch_size or raise data.n_train"
            )
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if self.augment and self.trainer is not None and self.trainer.training:
            (x,) = batch
            g = step_generator(self.trainer, self.seed)
            sh = torch.randint(0, self.size, (2,), generator=g).tolist()
            x = torch.roll(x, sh, (-2, -1))
            if torch.rand((), generator=g) < 0.5:
                x = x.flip(-1)
            if torch.rand((), generator=g) < 0.5:
                x = x.transpose(-2, -1)
            batch = [x]
        return batch
