"""Data modules: embedded digits, ImageFolder decoding and caching, seeded order, augmentation."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scatterlab.data import DigitsDataModule, ImageFolderDataModule, SeededSampler, crop_flip
from scatterlab.data.base import normalize
from scatterlab.errors import DataError


def test_digits_splits_are_disjoint_and_stratified() -> None:
    dm = DigitsDataModule()
    dm.setup()
    sizes = {k: len(v) for k, v in dm.splits.items()}
    assert sum(sizes.values()) == 1797
    assert sizes["test"] == pytest.approx(0.15 * 1797, abs=10)
    train = {tuple(x.flatten().tolist()) for x in dm.splits["train"].images}
    test_imgs = dm.splits["test"].images
    overlap = sum(tuple(x.flatten().tolist()) in train for x in test_imgs)
    assert overlap < 5  # a few digits are pixel-identical duplicates in the data set itself
    assert set(dm.splits["test"].labels.tolist()) == set(range(10))
    assert dm.splits["train"].images.dtype == torch.uint8
    assert dm.splits["train"].images.shape[1:] == (1, 8, 8)


def _make_folder(root: Path, n: int = 3, classes=("cat", "dog")) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(img).save(root / split / c / f"{i}.png")


def test_imagefolder_decodes_labels_and_caches(tmp_path: Path) -> None:
    _make_folder(tmp_path / "data")
    kw = dict(root=str(tmp_path / "data"), cache_dir=str(tmp_path / "cache"), num_classes=2)
    dm = ImageFolderDataModule(**kw)
    dm.setup()
    images, labels = dm.splits["train"].images, dm.splits["train"].labels
    assert images.shape == (6, 3, 32, 32) and labels.tolist() == [0, 0, 0, 1, 1, 1]
    first = np.asarray(Image.open(tmp_path / "data" / "train" / "cat" / "0.png"))
    assert torch.equal(images[0], torch.from_numpy(first).permute(2, 0, 1))
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 2
    again = ImageFolderDataModule(**kw)
    again.setup()
    assert torch.equal(again.splits["train"].images, images)
    assert torch.equal(dm.splits["val"].images, dm.splits["test"].images)  # test validates


def test_imagefolder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="train/<class>/"):
        ImageFolderDataModule(root=str(tmp_path)).setup()
    _make_folder(tmp_path / "d")
    with pytest.raises(DataError, match="data.num_classes=2"):
        ImageFolderDataModule(root=str(tmp_path / "d"), num_classes=10).setup()


def test_seeded_sampler_depends_on_seed_and_epoch_only() -> None:
    a, b = SeededSampler(100, seed=3), SeededSampler(100, seed=3)
    a.set_epoch(5)
    b.set_epoch(5)
    assert list(a) == list(b) and sorted(a) == list(range(100))
    b.set_epoch(6)
    assert list(a) != list(b)


def test_crop_flip() -> None:
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(crop_flip(x, 0, False, g), x)
    y = crop_flip(x, 2, True, torch.Generator().manual_seed(1))
    assert y.shape == x.shape
    # every output is a shifted (and maybe mirrored) window of the zero-padded input
    padded = torch.nn.functional.pad(x, (2,) * 4)
    for i in range(2):
        found = any(
            torch.equal(y[i], padded[i, :, dy : dy + 8, dx : dx + 8])
            or torch.equal(y[i].flip(-1), padded[i, :, dy : dy + 8, dx : dx + 8])
            for dy in range(5)
            for dx in range(5)
        )
        assert found
    z = crop_flip(x, 2, True, torch.Generator().manual_seed(1))
    assert torch.equal(y, z)  # same generator seed, same augmentation


def test_normalize() -> None:
    x = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    out = normalize(x, (0.5, 0.5, 0.5), (0.5, 0.25, 1.0))
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([1.0, 2.0, 0.5]))
