"""Non-learned scattering baseline: kymatio's Scattering2D, then a linear classifier."""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from scatterlab.ranges import PositiveInt


class FixedScattering(nn.Module):
    """Scattering2D(J, L, order 2) features, standardized (no affine), then a linear layer.

    Input (B, in_channels, input_size, input_size); output logits (B, num_classes).
    """

    CONFIG_CHECKS: tuple[tuple[str, str], ...] = (
        ("2**J <= input_size", "lower model.J: the images must be at least 2^J pixels wide"),
    )

    def __init__(
        self,
        num_classes: PositiveInt = 10,
        in_channels: PositiveInt = 3,
        input_size: PositiveInt = 32,
        J: PositiveInt = 2,
        L: PositiveInt = 8,
        max_order: Literal[1, 2] = 2,
    ) -> None:
        super().__init__()
        # Imported here: kymatio is slow to import and only this baseline needs it.
        from kymatio.torch import Scattering2D

        self.scattering = Scattering2D(
            J=J, shape=(input_size, input_size), L=L, max_order=max_order
        )
        paths = 1 + L * J + (L**2 * J * (J - 1) // 2 if max_order >= 2 else 0)
        size = input_size // 2**J
        self.norm = nn.BatchNorm2d(in_channels * paths, affine=False)
        self.linear = nn.Linear(in_channels * paths * size * size, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        s = self.scattering(x.float().contiguous())  # (B, C, paths, h, w)
        return self.linear(self.norm(s.flatten(1, 2)).flatten(1))
