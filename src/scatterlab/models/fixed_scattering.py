"""Non-learned scattering baseline: kymatio's Scattering2D, then a linear classifier."""

from __future__ import annotations

from torch import Tensor, nn


class FixedScattering(nn.Module):
    """Scattering2D(J, L, order 2) features, standardized (no affine), then a linear layer.

    Input (B, in_channels, input_size, input_size); output logits (B, num_classes).
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        input_size: int = 32,
        J: int = 2,
        L: int = 8,
        max_order: int = 2,
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
