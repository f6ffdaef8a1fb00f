"""Real grayscale textures shipped inside scikit-image (brick, grass, gravel): nothing downloaded.

The 512 x 512 uint8 image is block-averaged by ``downsample``, standardised (zero mean, unit
variance over the image), and cut into non-overlapping ``size`` x ``size`` tiles. Tiles on the
checkerboard's "white" squares are the training (target) fields, the others the held-out
test fields, so the metrics compare samples with texture the model never saw. Batches are
float tensors (B, 1, size, size). The tiles are not periodic: the WPH moments treat them as
periodic (as PyWPH's default ``pbc=True``), which adds a faint seam to the statistics.
"""

from __future__ import annotations

from typing import Literal

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from scatterlab.errors import ConfigError, DataError
from scatterlab.ranges import NonNegativeInt, PositiveInt

TEXTURES = ("brick", "grass", "gravel")


def load_texture(name: str, downsample: int = 1) -> torch.Tensor:
    """The scikit-image texture ``name`` as a standardised float32 (H, W) tensor."""
    if name not in TEXTURES:
        raise ConfigError(f"unknown data.name {name!r}: use one of {TEXTURES}")
    try:
        import skimage.data
    except ImportError as exc:
        raise DataError("the texture data need scikit-image: pip install scikit-image") from exc
    img = torch.as_tensor(getattr(skimage.data, name)(), dtype=torch.float64)
    if img.dim() == 3:  # RGB versions of some releases: to luminance
        img = img[..., :3] @ torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64)
    if downsample > 1:
        img = torch.nn.functional.avg_pool2d(img[None, None], downsample)[0, 0]
    return ((img - img.mean()) / img.std()).float()


class TextureDataModule(L.LightningDataModule):
    """Tiles of one scikit-image texture: train (checkerboard white) / test (black) splits."""

    CONFIG_CHECKS: tuple[tuple[str, str], ...] = (
        ("image_size is None or image_size == size", "set data.image_size equal to data.size"),
        ("in_channels == 1", "textures are grayscale: set data.in_channels=1"),
        (
            "512 // downsample // size >= 2",
            "the tiles need 2 x 2 of them in the 512 / data.downsample texture: lower data.size "
            "or data.downsample",
        ),
    )

    def __init__(
        self,
        name: Literal["brick", "grass", "gravel"] = "brick",
        size: PositiveInt = 128,
        downsample: PositiveInt = 2,
        batch_size: PositiveInt = 16,
        num_workers: NonNegativeInt = 0,
        image_size: PositiveInt | None = None,
        in_channels: PositiveInt = 1,
    ) -> None:
        super().__init__()
        if name not in TEXTURES:
            raise ConfigError(f"unknown data.name {name!r}: use one of {TEXTURES}")
        if image_size is not None and image_size != size:
            raise ConfigError(f"data.image_size={image_size} differs from data.size={size}")
        if in_channels != 1:
            raise ConfigError(f"textures are grayscale (1 channel), got {in_channels}")
        side = 512 // downsample
        if side // size < 2 or (side // size) ** 2 < 2:
            raise ConfigError(
                f"data.size={size} leaves fewer than 2 x 2 tiles of the {side}x{side} texture "
                f"(512 / downsample={downsample}): lower data.size or data.downsample"
            )
        self.name, self.size, self.downsample = name, size, downsample
        self.batch_size, self.num_workers = batch_size, num_workers
        self.channels, self.image_size = 1, size
        self.splits: dict[str, torch.Tensor] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        img = load_texture(self.name, self.downsample)
        n = img.shape[0] // self.size
        tiles = img[: n * self.size, : n * self.size].reshape(n, self.size, n, self.size)
        tiles = tiles.permute(0, 2, 1, 3)  # (row, col, size, size)
        white = (torch.arange(n)[:, None] + torch.arange(n)[None, :]) % 2 == 0
        self.splits = {"train": tiles[white][:, None], "test": tiles[~white][:, None]}
        self.splits["val"] = self.splits["test"]

    def _loader(self, split: str) -> DataLoader:
        return DataLoader(
            TensorDataset(self.splits[split]),
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.num_workers,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")
