"""ResNet-18 baseline: torchvision's network, with a CIFAR stem for 32x32 images."""

from __future__ import annotations

from torch import nn
from torchvision.models import resnet18

from scatterlab.ranges import PositiveInt


def ResNet18(
    num_classes: PositiveInt = 10, in_channels: PositiveInt = 3, cifar_stem: bool = True
) -> nn.Module:
    """ResNet-18; with `cifar_stem` the 7x7/2 conv and max-pool become a 3x3/1 conv (CIFAR)."""
    net = resnet18(weights=None, num_classes=num_classes)
    if cifar_stem:
        net.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        net.maxpool = nn.Identity()
    elif in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
    return net
