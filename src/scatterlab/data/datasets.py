"""Concrete classification data modules: digits (embedded), CIFAR-10, ImageFolder, ImageNet."""

from __future__ import annotations

import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from scatterlab.data.base import ImageDataModule, stratified_split
from scatterlab.errors import ConfigError, DataError
from scatterlab.ranges import NonNegativeInt, Range

Splits = dict[str, tuple[Tensor, Tensor]]

log = logging.getLogger("scatterlab")


class DigitsDataModule(ImageDataModule):
    """scikit-learn's handwritten digits: 1,797 images 8x8 (1 channel), 10 classes.

    Shipped inside scikit-learn, so it needs no download. Split per class, reproducibly,
    into train / val / test with `val_fraction` and `test_fraction` of the images.
    """

    CONFIG_CHECKS: tuple[tuple[str, str], ...] = (
        *ImageDataModule.CONFIG_CHECKS,
        (
            "image_size == 8 and in_channels == 1 and num_classes == 10",
            "the digits are 8x8 images of 1 channel in 10 classes: set data.image_size=8, "
            "data.in_channels=1, data.num_classes=10",
        ),
        (
            "val_fraction + test_fraction < 1",
            "lower data.val_fraction or data.test_fraction: their sum leaves no training images",
        ),
    )

    def __init__(
        self,
        val_fraction: Annotated[float, Range(ge=0, lt=1)] = 0.15,
        test_fraction: Annotated[float, Range(ge=0, lt=1)] = 0.15,
        **kwargs,
    ) -> None:
        kwargs.setdefault("mean", (0.3,))
        kwargs.setdefault("std", (0.4,))
        kwargs.setdefault("in_channels", 1)
        kwargs.setdefault("image_size", 8)
        super().__init__(**kwargs)
        if val_fraction + test_fraction >= 1:
            raise ConfigError(
                f"data.val_fraction + data.test_fraction = {val_fraction + test_fraction:g} leaves "
                "no training images: their sum must be < 1"
            )
        self.val_fraction, self.test_fraction = val_fraction, test_fraction

    def load(self) -> Splits:
        from sklearn.datasets import load_digits

        digits = load_digits()
        # Pixel values are 0..16: rescale to the uint8 range of every other data set.
        images = torch.from_numpy(digits.images * (255 / 16)).round().to(torch.uint8)[:, None]
        labels = torch.from_numpy(digits.target).long()
        rest, test = stratified_split(labels, self.test_fraction, seed=0)
        frac = self.val_fraction / (1 - self.test_fraction)
        train, val = stratified_split(labels[rest], frac, seed=1)
        train, val = rest[train], rest[val]
        return {
            k: (images[i], labels[i]) for k, i in (("train", train), ("val", val), ("test", test))
        }


class CIFAR10DataModule(ImageDataModule):
    """CIFAR-10 through torchvision (50,000 train / 10,000 test images, 32x32 RGB).

    Validation uses the test set, as in the reference protocol (best test accuracy over
    epochs); set `val_size` > 0 to hold out that many training images instead.
    """

    CONFIG_CHECKS: tuple[tuple[str, str], ...] = (
        *ImageDataModule.CONFIG_CHECKS,
        (
            "image_size == 32 and in_channels == 3 and num_classes == 10",
            "CIFAR-10 has 32x32 RGB images in 10 classes: set data.image_size=32, "
            "data.in_channels=3, data.num_classes=10",
        ),
        ("val_size < 50000", "hold out fewer of the 50,000 training images: lower data.val_size"),
    )

    def __init__(
        self, root: str, download: bool = True, val_size: NonNegativeInt = 0, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.root, self.download, self.val_size = root, download, val_size

    def _dataset(self, train: bool):
        from torchvision.datasets import CIFAR10

        try:
            return CIFAR10(self.root, train=train, download=False)
        except RuntimeError:
            pass
        if self.download:
            try:
                return CIFAR10(self.root, train=train, download=True)
            except Exception as e:  # URLError, timeouts, SSL: all mean "no internet"
                reason = f"the download failed ({type(e).__name__}: {e})"
        else:
            reason = "data.download=false"
        raise DataError(
            f"CIFAR-10 is not in data.root={self.root} and {reason}. Put the python version "
            f"(the folder cifar-10-batches-py/) in {self.root}, or set data.root to where it "
            "is, or use an ImageFolder copy: data=imagefolder data.root=DIR (DIR/train/<class>/, "
            "DIR/test/<class>/)."
        )

    def load(self) -> Splits:
        splits = {}
        for name, train in (("train", True), ("test", False)):
            ds = self._dataset(train)
            images = torch.from_numpy(np.asarray(ds.data)).permute(0, 3, 1, 2).contiguous()
            splits[name] = (images, torch.tensor(ds.targets))
        return _with_val(splits, self.val_size)


def _with_val(splits: Splits, val_size: int) -> Splits:
    if val_size <= 0:
        splits["val"] = splits["test"]
        return splits
    images, labels = splits["train"]
    rest, val = stratified_split(labels, val_size / len(labels), seed=0)
    splits["train"], splits["val"] = (images[rest], labels[rest]), (images[val], labels[val])
    return splits


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp")


class ImageFolderDataModule(ImageDataModule):
    """Any image folder in the ImageFolder layout, decoded once and kept in memory.

    root/train/<class>/*.jpg and root/test/<class>/*.jpg (root/val/ too, if present; else
    the test set validates, as for CIFAR-10). Images are resized to `image_size` if they
    differ. The decoded tensors are cached in `cache_dir`, keyed by the folder's path, file
    list and modification times, so later runs skip decoding. A corrupt or truncated image is
    an error naming the file; `skip_corrupt=true` skips such files with a counted warning.
    """

    CONFIG_CHECKS: tuple[tuple[str, str], ...] = (
        *ImageDataModule.CONFIG_CHECKS,
        ("in_channels == 3", "the images are decoded as RGB: set data.in_channels=3"),
    )

    def __init__(
        self,
        root: str,
        cache_dir: str | None = None,
        val_size: NonNegativeInt = 0,
        skip_corrupt: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.root, self.cache_dir, self.val_size = Path(root), cache_dir, val_size
        self.skip_corrupt = skip_corrupt

    def load(self) -> Splits:
        if not (self.root / "train").is_dir() or not (self.root / "test").is_dir():
            raise DataError(
                f"data.root={self.root} is not an image folder: it needs train/<class>/ and "
                "test/<class>/ sub-folders of images (e.g. mkdir DIR && tar xJf "
                "cifar10-jpeg.tar.xz -C DIR, then data.root=DIR)"
            )
        splits, classes = {}, None
        for split in ("train", "val", "test"):
            if (self.root / split).is_dir():
                files, labels, names = _list_images(self.root / split)
                if classes is not None and names != classes:
                    raise DataError(f"{self.root / split} has other class folders than train/")
                classes = names
                images, keep = self._decode(files)
                splits[split] = (images, torch.tensor(labels)[keep])
        self.classes = classes
        if len(classes) != self.num_classes:
            raise DataError(
                f"{self.root}/train has {len(classes)} class folders but data.num_classes="
                f"{self.num_classes}: set data.num_classes={len(classes)}"
            )
        if "val" in splits:
            return splits
        return _with_val(splits, self.val_size)

    def _decode(self, files: list[Path]) -> tuple[Tensor, Tensor]:
        """(decoded images (N', 3, S, S) uint8, which of the N files they are (N,) bool)."""
        key = hashlib.sha256()
        for f in files:
            key.update(f"{f}:{f.stat().st_mtime_ns}:{self.image_size}".encode())
        cache = (
            Path(self.cache_dir) / f"imagefolder-{key.hexdigest()[:16]}.pt"
            if self.cache_dir
            else None
        )
        if cache is not None and cache.exists():
            saved = torch.load(cache, weights_only=True)  # tensors only: no code runs
            return saved["images"], saved["keep"]
        with ThreadPoolExecutor(max(1, min(8, os.cpu_count() or 1))) as pool:
            decoded = list(pool.map(self._read, files))
        keep = torch.tensor([im is not None for im in decoded], dtype=torch.bool)
        if not keep.all():
            bad = [str(f) for f, im in zip(files, decoded, strict=True) if im is None]
            log.warning(f"skipped {len(bad)} corrupt image(s) (data.skip_corrupt=true): {bad[:5]}")
        if not keep.any():
            raise DataError(f"every image under {files[0].parent.parent} is unreadable")
        images = torch.stack([im for im in decoded if im is not None])
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(f".tmp{os.getpid()}")  # one per process: runs side by side
            torch.save({"images": images, "keep": keep}, tmp)
            tmp.replace(cache)  # atomic: a killed run never leaves a half-written cache
        return images, keep

    def _read(self, path: Path) -> Tensor | None:
        """One image as a (3, S, S) uint8 tensor; None if unreadable and skip_corrupt."""
        from PIL import Image

        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                if im.size != (self.image_size, self.image_size):
                    im = im.resize((self.image_size, self.image_size), Image.BILINEAR)
                return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)
        except (OSError, ValueError, SyntaxError) as e:  # PIL's errors for a bad file
            if self.skip_corrupt:
                return None
            raise DataError(
                f"image {path} is corrupt or truncated ({type(e).__name__}: {e}): replace or "
                "delete it, or add data.skip_corrupt=true to skip unreadable images"
            ) from None


def _list_images(folder: Path) -> tuple[list[Path], list[int], list[str]]:
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir())
    if not classes:
        raise DataError(f"{folder} has no class sub-folders (expected {folder}/<class>/*.jpg)")
    files, labels = [], []
    for i, c in enumerate(classes):
        for f in sorted((folder / c).iterdir()):
            if f.suffix.lower() in IMAGE_EXTENSIONS:
                files.append(f)
                labels.append(i)
    if not files:
        raise DataError(f"{folder} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return files, labels, classes


def read_image_subset(
    folder: Path, n: int, generator: torch.Generator, mode: str = "RGB"
) -> tuple[Tensor, Tensor]:
    """n random images of an ImageFolder split (folder/<class>/*.jpg), decoded alone (not the
    whole split) in PIL ``mode`` ("RGB" or "L"): (uint8 (n, C, H, W), labels (n,)). For the
    small subsets of theory modules; DataError (one line) when the folder is not there."""
    from PIL import Image

    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder of <class>/ image folders")
    files, labels, _ = _list_images(folder)
    if n > len(files):
        raise DataError(f"{folder} has {len(files)} images, {n} asked for: ask for fewer")
    idx = torch.randperm(len(files), generator=generator)[:n].tolist()
    imgs = []
    for i in idx:
        with Image.open(files[i]) as im:
            a = np.asarray(im.convert(mode)).copy()
        imgs.append(torch.from_numpy(a if a.ndim == 3 else a[..., None]))
    return torch.stack(imgs).permute(0, 3, 1, 2), torch.tensor([labels[i] for i in idx])


def check_folder_splits(root: str, splits: list[str], hint: str = "") -> None:
    """DataError (one line naming module.data_root) unless root/<split>/ exists for every
    split: theory modules call it when they are built, before Lightning starts."""
    for split in splits:
        if not (Path(root) / split).is_dir():
            raise DataError(
                f"module.data_root={root} has no {split}/<class>/ image folders: unpack "
                f"cifar10-jpeg.tar.xz there (tar xJf cifar10-jpeg.tar.xz -C DIR){hint}"
            )


def read_folder_splits(
    root: str, counts: dict[str, int], seed: int = 0, mode: str = "RGB", hint: str = ""
) -> list[tuple[Tensor, Tensor]]:
    """``read_image_subset`` of each split under root ({"train": n, "test": m}), one generator
    (seeded) for all, for the theory modules' ``module.data_root``: a missing split or too few
    images is one DataError line naming the option (hint: what else to do)."""
    check_folder_splits(root, list(counts), hint)
    g = torch.Generator().manual_seed(seed)
    out = []
    for split, n in counts.items():
        try:
            out.append(read_image_subset(Path(root) / split, n, g, mode))
        except DataError as exc:
            raise DataError(f"{exc} (module.n_{split})") from None
    return out


class ImageNetDataModule(ImageDataModule):
    """ImageNet in ImageFolder layout (root/train/<wnid>/, root/val/<wnid>/), streamed.

    Too large to hold in memory: decoded by DataLoader workers with the usual transforms
    (RandomResizedCrop(224) + flip for training; Resize(256) + CenterCrop(224) to evaluate).
    The validation set is also the test set.
    """

    CONFIG_CHECKS: tuple[tuple[str, str], ...] = (
        *ImageDataModule.CONFIG_CHECKS,
        ("in_channels == 3", "ImageNet images are RGB: set data.in_channels=3"),
    )

    def __init__(self, root: str, **kwargs) -> None:
        kwargs.setdefault("num_classes", 1000)
        kwargs.setdefault("image_size", 224)
        super().__init__(**kwargs)
        self.root = Path(root)

    def setup(self, stage: str | None = None) -> None:
        from torchvision import datasets, transforms

        for split in ("train", "val"):
            if not (self.root / split).is_dir():
                raise DataError(
                    f"ImageNet not found: data.root={self.root} needs train/<wnid>/ and "
                    "val/<wnid>/ folders of JPEG images (ImageFolder layout)"
                )
        norm = transforms.Normalize(self.mean, self.std)
        train_tf = transforms.Compose(
            [
                transforms.RandomResizedCrop(self.image_size),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                norm,
            ]
        )
        eval_tf = transforms.Compose(
            [
                transforms.Resize(round(self.image_size * 256 / 224)),
                transforms.CenterCrop(self.image_size),
                transforms.ToTensor(),
                norm,
            ]
        )
        self.train_set = datasets.ImageFolder(self.root / "train", train_tf)
        self.val_set = datasets.ImageFolder(self.root / "val", eval_tf)

    def _stream(self, data, train: bool) -> DataLoader:
        return DataLoader(
            data,
            batch_size=self._per_device_batch(),
            shuffle=train,
            drop_last=train,
            num_workers=self.num_workers,
            pin_memory=True,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._stream(self.train_set, True)

    def val_dataloader(self) -> DataLoader:
        return self._stream(self.val_set, False)

    def test_dataloader(self) -> DataLoader:
        return self._stream(self.val_set, False)
