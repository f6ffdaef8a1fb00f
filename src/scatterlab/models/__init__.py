"""Networks as plain torch modules (no Lightning)."""

from torch import nn

from scatterlab.models.fixed_scattering import FixedScattering
from scatterlab.models.resnet import ResNet18
from scatterlab.models.scattering import LearnedScattering, ScatteringBlock


def count_parameters(module: nn.Module) -> int:
    """Number of real scalars among the parameters (a complex entry counts as 2)."""
    return sum(p.numel() * (2 if p.is_complex() else 1) for p in module.parameters())


__all__ = [
    "FixedScattering",
    "LearnedScattering",
    "ResNet18",
    "ScatteringBlock",
    "count_parameters",
]
