"""The information-plane task of Shwartz-Ziv & Tishby (2017), generated here.

12 binary inputs, every one of the 4096 patterns once. The 12 bits sit on 12 fixed points
p_1..p_12 on the unit sphere (drawn uniformly with `points_seed`); a pattern x is the set of
its active points, and its label is rotation invariant (a function of the pairwise angles of
the active points only):

    f(x) = sum_{i < j active} (1 + coupling * <p_i, p_j>),   y = 1[f(x) > theta],

theta the quantile that makes `positive_fraction` (0.517, as the authors' file var_u.mat) of the
patterns positive. The authors' own rule and points are not published with the paper; this is
a construction of the same kind (O(3)-invariant f, a step at a balanced threshold). Its label
statistics by number of active bits are in `label_table()` (and the README), to compare with
theirs (0-4 bits: 0, 5: 7.6%, 6: 57.6%, 7: 92.4%, 8-12: 1).

Inputs reach the net as floats in {0, 1}: stored as uint8 0/1 in (N, 12, 1, 1) (12 channels
of one pixel, so `model=mlp` sees 12 inputs) with mean 0 and std 1/255. Splits: `train` is a
seeded `train_fraction` (80%, as IDNNs' `-inds 80`) of the patterns; `val` and `test` the
rest; `all` every pattern (the information plane is measured on all of them).
"""

from __future__ import annotations

import torch
from torch import Tensor

from scatterlab.data.base import ImageDataModule
from scatterlab.ranges import OpenFraction, Real, Seed

BITS = 12


def patterns(bits: int = BITS) -> Tensor:
    """Every `bits`-bit pattern once, (2^bits, bits) in {0, 1} (uint8), row n = binary of n."""
    n = torch.arange(2**bits)
    return ((n[:, None] >> torch.arange(bits)) & 1).to(torch.uint8)


def sphere_points(seed: int = 0, n: int = BITS) -> Tensor:
    """n points uniform on the unit 2-sphere (normalised Gaussians), float64 (n, 3)."""
    g = torch.Generator().manual_seed(seed)
    p = torch.randn(n, 3, generator=g, dtype=torch.float64)
    return p / p.norm(dim=1, keepdim=True)


def labels(
    x: Tensor, points: Tensor, coupling: float = 2.5, positive_fraction: float = 0.517
) -> Tensor:
    """Rotation-invariant labels (N,) int64 of patterns x (N, 12) (see the module docstring)."""
    xf = x.to(torch.float64)
    k = xf.sum(1)
    r2 = (xf @ points).square().sum(1)  # ||sum_active p_i||^2 = k + 2 sum_{i<j} <p_i, p_j>
    f = k * (k - 1) / 2 + coupling * (r2 - k) / 2
    theta = torch.quantile(f, 1 - positive_fraction)
    return (f > theta).long()


def label_table(x: Tensor, y: Tensor) -> dict[int, float]:
    """Fraction of y = 1 by number of active bits."""
    k = x.long().sum(1)
    return {int(a): float(y[k == a].double().mean()) for a in k.unique()}


class InfoPlaneDataModule(ImageDataModule):
    """The 12-bit, 4096-pattern task (module docstring); full-batch by default."""

    CONFIG_CHECKS: tuple[tuple[str, str], ...] = (
        *ImageDataModule.CONFIG_CHECKS,
        (
            "image_size == 1 and in_channels == 12 and num_classes == 2",
            "the task has 12 binary inputs (12 channels of 1 pixel) and 2 classes: set "
            "data.image_size=1, data.in_channels=12, data.num_classes=2",
        ),
        (
            "train_fraction * 4096 >= 1 and (1 - train_fraction) * 4096 >= 1",
            "data.train_fraction leaves no training or no held-out pattern of the 4096",
        ),
    )

    def __init__(
        self,
        train_fraction: OpenFraction = 0.8,
        coupling: Real = 2.5,
        positive_fraction: OpenFraction = 0.517,
        points_seed: Seed = 0,
        split_seed: Seed = 0,
        **kwargs,
    ) -> None:
        kwargs.setdefault("num_classes", 2)
        kwargs.setdefault("in_channels", BITS)
        kwargs.setdefault("image_size", 1)
        kwargs.setdefault("batch_size", 4096)
        kwargs.setdefault("mean", (0.0,))
        kwargs.setdefault("std", (1 / 255,))
        super().__init__(**kwargs)
        self.train_fraction, self.coupling = train_fraction, coupling
        self.positive_fraction = positive_fraction
        self.points_seed, self.split_seed = points_seed, split_seed

    def load(self) -> dict[str, tuple[Tensor, Tensor]]:
        x = patterns()
        y = labels(x, sphere_points(self.points_seed), self.coupling, self.positive_fraction)
        g = torch.Generator().manual_seed(self.split_seed)
        order = torch.randperm(len(y), generator=g)
        n_train = round(self.train_fraction * len(y))
        train, rest = order[:n_train].sort().values, order[n_train:].sort().values
        images = x[:, :, None, None]  # (4096, 12, 1, 1)
        return {
            "train": (images[train], y[train]),
            "val": (images[rest], y[rest]),
            "test": (images[rest], y[rest]),
            "all": (images, y),
        }
