"""Fully connected networks h^l = W^l phi(h^{l-1}) + b^l, with the mean-field initialisation.

Shared by the random-network theory (trainability vs depth), the information-plane
experiments (the 12-10-7-5-4-3-2 network) and the layer analyses: every hidden layer is a
named child `layers.<i>` whose output (after the non-linearity) is the representation T_i.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
from torch import Tensor, nn

from scatterlab.ranges import NonNegative, Positive, PositiveInt, Range

ACTIVATIONS = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "erf": None,  # built below: nn has no erf module
    "hardtanh": nn.Hardtanh,
    "linear": nn.Identity,
    "sigmoid": nn.Sigmoid,
}


class Erf(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return torch.erf(x)


def activation(name: str) -> nn.Module:
    """The pointwise non-linearity `name` (one of ACTIVATIONS) as a module."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")
    return Erf() if name == "erf" else ACTIVATIONS[name]()


class Layer(nn.Module):
    """phi(W x + b): one hidden layer; its output is the layer's representation.

    `dropout` > 0 drops units of the output in training (the SparseScatNet head).
    """

    def __init__(self, fan_in: int, fan_out: int, act: str, dropout: float = 0.0) -> None:
        super().__init__()
        self.linear = nn.Linear(fan_in, fan_out)
        self.act = activation(act)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.act(self.linear(x)))


class MLP(nn.Module):
    """Flatten, hidden layers of `widths` (or `depth` layers of width `width`), linear readout.

    Weights are N(0, sigma_w^2 / fan_in) (`init=gaussian`) or sigma_w times a random
    orthogonal matrix (`init=orthogonal`), biases N(0, sigma_b^2): the ensembles of the
    mean-field theory. `init=default` keeps PyTorch's.
    Input (B, in_channels, input_size, input_size), or already flat: logits (B, num_classes).
    """

    CONFIG_CHECKS: tuple[tuple[str, str], ...] = (
        ("widths is not None or depth is not None", "give model.depth (or model.widths)"),
    )

    def __init__(
        self,
        num_classes: PositiveInt,
        in_channels: PositiveInt,
        input_size: PositiveInt,
        widths: Annotated[list[PositiveInt], Range(ge=1)] | None = None,
        depth: PositiveInt | None = None,
        width: PositiveInt = 128,
        activation: Literal["tanh", "relu", "erf", "hardtanh", "linear", "sigmoid"] = "tanh",
        sigma_w: Positive = 1.0,
        sigma_b: NonNegative = 0.0,
        init: Literal["gaussian", "orthogonal", "default"] = "gaussian",
        dropout: Annotated[float, Range(ge=0, lt=1)] = 0.0,
    ) -> None:
        super().__init__()
        if widths is None:
            if depth is None or depth < 1:
                raise ValueError("model.depth must be a positive integer (or give model.widths)")
            widths = [width] * depth
        widths = list(widths)
        if not widths or any(int(w) < 1 for w in widths):
            raise ValueError(f"model.widths must be positive integers, got {widths}")
        if sigma_w <= 0 or sigma_b < 0:
            raise ValueError(
                f"model.sigma_w must be > 0 and model.sigma_b >= 0, got {sigma_w}, {sigma_b}"
            )
        if init not in ("gaussian", "orthogonal", "default"):
            raise ValueError(f"model.init must be gaussian, orthogonal or default, got {init!r}")
        dims = [in_channels * input_size**2, *widths]
        self.layers = nn.ModuleList(
            Layer(a, b, activation, dropout) for a, b in zip(dims[:-1], dims[1:], strict=True)
        )
        self.classifier = nn.Linear(dims[-1], num_classes)
        self.sigma_w, self.sigma_b = sigma_w, sigma_b
        if init != "default":
            with torch.no_grad():
                for lin in [*(layer.linear for layer in self.layers), self.classifier]:
                    init_weights(lin, sigma_w, sigma_b, init)

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)
        for layer in self.layers:
            x = layer(x)
        return self.classifier(x)


def init_weights(lin: nn.Linear, sigma_w: float, sigma_b: float, init: str) -> None:
    """Mean-field initialisation of one linear layer, in place."""
    fan_out, fan_in = lin.weight.shape
    if init == "orthogonal":
        nn.init.orthogonal_(lin.weight, gain=sigma_w * math.sqrt(max(1.0, fan_out / fan_in)))
    else:
        nn.init.normal_(lin.weight, std=sigma_w / math.sqrt(fan_in))
    if sigma_b > 0:
        nn.init.normal_(lin.bias, std=sigma_b)
    else:
        nn.init.zeros_(lin.bias)
