"""In-memory image classification data: uint8 tensors, batched augmentation on the device.

Decoding once and augmenting whole batches on the device (GPU or CPU) is much faster than
per-image PIL transforms in worker processes for small images. Shuffling and augmentation are
functions of (seed, epoch, step), so a run resumed from a checkpoint sees the same batches as
an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Annotated

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from scatterlab.ranges import NonNegativeInt, Positive, PositiveInt, Range, Real, Seed

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class TensorImages(Dataset):
    """Images (N, C, H, W) uint8 and labels (N,) int64 held in memory."""

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        assert images.dtype == torch.uint8 and images.ndim == 4 and len(images) == len(labels)
        self.images, self.labels = images, labels.long()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.images[i], self.labels[i]


class SeededSampler(Sampler[int]):
    """Random permutation that depends only on (seed, epoch); Lightning calls set_epoch."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


def step_generator(trainer: L.Trainer, seed: int) -> torch.Generator:
    """CPU generator for the random draws of one training step: a function of (seed, step,
    rank) only, so a resumed run augments exactly as an uninterrupted one."""
    return torch.Generator().manual_seed(
        (seed * 1_000_003 + trainer.global_step) * 64 + trainer.global_rank
    )


def crop_flip(x: Tensor, padding: int, flip: bool, generator: torch.Generator) -> Tensor:
    """Random crop after zero padding, and random horizontal flip, per image of a batch.

    x: (B, C, H, W) on any device; the random draws happen on the CPU generator.
    """
    B, _, H, W = x.shape
    if padding > 0:
        padded = torch.nn.functional.pad(x, (padding,) * 4)
        dy = torch.randint(0, 2 * padding + 1, (B,), generator=generator).to(x.device)
        dx = torch.randint(0, 2 * padding + 1, (B,), generator=generator).to(x.device)
        rows = (dy[:, None] + torch.arange(H, device=x.device))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(W, device=x.device))[:, None, None, :]
        batch = torch.arange(B, device=x.device)[:, None, None, None]
        chan = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
        x = padded[batch, chan, rows, cols]
    if flip:
        mask = (torch.rand(B, generator=generator) < 0.5).to(x.device)
        x = torch.where(mask[:, None, None, None], x.flip(-1), x)
    return x


class ImageDataModule(L.LightningDataModule):
    """Base of the in-memory classification data modules.

    Subclasses implement `load()` -> {"train": (images, labels), "val": ..., "test": ...}
    with uint8 images (N, C, H, W). num_classes, in_channels, image_size describe them (the
    model configs read them). Batches reach the model as float (x / 255 - mean) / std,
    augmented (crop with `crop_padding`, horizontal `flip`) in training only.
    """

    CONFIG_CHECKS: tuple[tuple[str, str], ...] = (
        (
            "len(mean) in (1, in_channels)",
            "give data.mean one value, or one per channel (data.in_channels)",
        ),
        ("len(std) in (1, in_channels)", "give data.std one value, or one per channel"),
    )

    def __init__(
        self,
        num_classes: PositiveInt = 10,
        in_channels: PositiveInt = 3,
        image_size: PositiveInt = 32,
        # >= 2: the classifiers' BatchNorm has no variance to normalise by in a batch of one
        batch_size: Annotated[int, Range(ge=2)] = 128,
        num_workers: NonNegativeInt = 0,
        crop_padding: NonNegativeInt = 0,
        flip: bool = False,
        mean: Annotated[Sequence[Real], Range(ge=1)] = IMAGENET_MEAN,
        std: Annotated[Sequence[Positive], Range(ge=1)] = IMAGENET_STD,
        seed: Seed = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        self.num_classes, self.in_channels, self.image_size = num_classes, in_channels, image_size
        self.batch_size, self.num_workers = batch_size, num_workers
        self.crop_padding, self.flip, self.seed = crop_padding, flip, seed
        self.mean, self.std, self.pin_memory = tuple(mean), tuple(std), pin_memory
        self.splits: dict[str, TensorImages] = {}

    def load(self) -> dict[str, tuple[Tensor, Tensor]]:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            self.splits = {k: TensorImages(*v) for k, v in self.load().items()}
            for name in ("val", "test"):
                # A fixed shuffle, so that any prefix (limit_val_batches) holds every class
                # even when the files were listed class by class.
                data = self.splits[name]
                order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
                self.splits[name] = TensorImages(data.images[order], data.labels[order])

    def _per_device_batch(self) -> int:
        world = self.trainer.world_size if self.trainer is not None else 1
        return max(1, self.batch_size // world)

    def _loader(self, split: str, train: bool) -> DataLoader:
        data = self.splits[split]
        return DataLoader(
            data,
            batch_size=self._per_device_batch(),
            sampler=SeededSampler(len(data), self.seed) if train else None,
            drop_last=train and len(data) > self._per_device_batch(),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)

    def on_after_batch_transfer(self, batch: tuple[Tensor, Tensor], dataloader_idx: int):
        x, y = batch
        if x.dtype == torch.uint8:
            training = self.trainer is not None and self.trainer.training
            if training and (self.crop_padding or self.flip):
                x = crop_flip(
                    x, self.crop_padding, self.flip, step_generator(self.trainer, self.seed)
                )
            x = normalize(x, self.mean, self.std)
        return x, y


def normalize(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """uint8 (B, C, H, W) -> float (x / 255 - mean) / std per channel."""
    mean_t = torch.tensor(mean, device=x.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=x.device).view(1, -1, 1, 1)
    return (x.float() / 255 - mean_t) / std_t


def stratified_split(labels: Tensor, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Indices (rest, held_out) with `fraction` of each class held out, reproducibly."""
    g = torch.Generator().manual_seed(seed)
    rest, held = [], []
    for c in labels.unique():
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        k = round(fraction * len(idx))
        held.append(idx[:k])
        rest.append(idx[k:])
    return torch.cat(rest).sort().values, torch.cat(held).sort().values


def device_batches(
    dm: L.LightningDataModule,
    split: str,
    limit: int | None,
    seed: int,
    device: torch.device | str,
) -> list[tuple[Tensor, Tensor]]:
    """A seeded random subset of `limit` items of dm.splits[split] (all when None) as
    normalized (x, y) batches on `device`. Random, not a prefix: test folders are often
    ordered by class."""
    data = dm.splits[split]
    idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    if limit is not None:
        idx = idx[:limit]
    out = []
    for i in range(0, len(idx), dm.batch_size):
        xb, yb = default_collate([data[int(k)] for k in idx[i : i + dm.batch_size]])
        x, y = dm.on_after_batch_transfer((xb.to(device), yb.to(device)), 0)
        out.append((x.float(), y))
    return out
