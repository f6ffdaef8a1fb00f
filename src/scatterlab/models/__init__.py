"""Networks as plain torch modules (no Lightning)."""

from torch import nn

from scatterlab.models.fixed_scattering import FixedScattering
from scatterlab.models.mlp import MLP
from scatterlab.models.resnet import ResNet18
from scatterlab.models.scattering import LearnedScattering, ScatteringBlock
from scatterlab.models.sparse_scattering import ISTC, SparseScattering
from scatterlab.models.tight_frame import TightFrame, TightFrameScattering


def count_parameters(module: nn.Module) -> int:
    """Number of real scalars among the parameters (a complex entry counts as 2)."""
    return sum(p.numel() * (2 if p.is_complex() else 1) for p in module.parameters())


__all__ = [
    "FixedScattering",
    "ISTC",
    "LearnedScattering",
    "MLP",
    "ResNet18",
    "ScatteringBlock",
    "SparseScattering",
    "TightFrame",
    "TightFrameScattering",
    "count_parameters",
]
