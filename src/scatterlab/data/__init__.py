"""LightningDataModules."""

from scatterlab.data.base import ImageDataModule, SeededSampler, TensorImages, crop_flip
from scatterlab.data.datasets import (
    CIFAR10DataModule,
    DigitsDataModule,
    ImageFolderDataModule,
    ImageNetDataModule,
)
from scatterlab.data.infoplane import InfoPlaneDataModule
from scatterlab.data.texture import TextureDataModule  # noqa: F401

__all__ = [
    "CIFAR10DataModule",
    "DigitsDataModule",
    "ImageDataModule",
    "ImageFolderDataModule",
    "ImageNetDataModule",
    "InfoPlaneDataModule",
    "SeededSampler",
    "TensorImages",
    "crop_flip",
]
