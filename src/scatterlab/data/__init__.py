"""LightningDataModules."""

from scatterlab.data.base import ImageDataModule, SeededSampler, TensorImages, crop_flip
from scatterlab.data.datasets import (
    CIFAR10DataModule,
    DigitsDataModule,
    ImageFolderDataModule,
    ImageNetDataModule,
)

__all__ = [
    "CIFAR10DataModule",
    "DigitsDataModule",
    "ImageDataModule",
    "ImageFolderDataModule",
    "ImageNetDataModule",
    "SeededSampler",
    "TensorImages",
    "crop_flip",
]
