"""Local denoisers with an exact receptive field: flat (pixels) and conditional (wavelet details
given the coarse field), after Kadkhodaie, Guth, Mallat & Simoncelli, ICLR 2023.

``LocalDenoiser``: (rf - 1) / 2 bias-free 3 x 3 periodic convolutions with ReLUs, no
down-sampling, so an output value depends exactly on the rf x rf input window around it (the
authors' BF_CNN_RF, without its batch normalisation). It predicts the noise (residual).

* flat: input the noisy field y = x + sigma z (1 channel, L x L); target z.
* conditional (scale 1): input the noisy details ybar = xbar_1 + sigma z (3 channels) and the
  clean low-pass x_1 (1 channel), both L/2 x L/2; target z. Its receptive field is counted on
  the L/2 grid (one coefficient covers 2 pixels).
Both are scored on the detail coefficients of scale 1 (the flat denoiser's estimate is
transformed), so the two errors are per detail coefficient and comparable.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from scatterlab.errors import ConfigError
from scatterlab.wsgm.dwt import DWT2d


def check_rf(rf: int) -> int:
    """rf, or ConfigError unless it is an odd integer >= 3."""
    if rf < 3 or rf % 2 == 0:
        raise ConfigError(f"receptive field {rf} must be odd and >= 3 (3 x 3 convolutions)")
    return rf


class LocalDenoiser(nn.Module):
    """Bias-free CNN with receptive field rf: (B, c_in, n, n) -> (B, c_out, n, n)."""

    def __init__(self, rf: int, c_in: int, c_out: int, width: int = 16) -> None:
        super().__init__()
        depth = (check_rf(rf) - 1) // 2
        chans = [c_in] + [width] * (depth - 1) + [c_out]
        layers: list[nn.Module] = []
        for i in range(depth):
            layers.append(
                nn.Conv2d(chans[i], chans[i + 1], 3, padding=1, bias=False, padding_mode="circular")
            )
            if i < depth - 1:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)
        self.rf = rf

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def measured_rf(net: nn.Module, c_in: int, size: int) -> int:
    """Width of the input window that one output value depends on (gradient of the centre
    output with respect to the input, on a random input), size x size inputs."""
    x = torch.randn(1, c_in, size, size, requires_grad=True)
    net(x)[0, 0, size // 2, size // 2].backward()
    cols = (x.grad.abs().sum(dim=(0, 1, 2)) > 0).nonzero()
    return int(cols.max() - cols.min() + 1)


def _batch(x: Tensor, n: int, g: torch.Generator) -> Tensor:
    """n random fields of x (N, 1, L, L), randomly shifted and flipped (lattice symmetries)."""
    idx = torch.randint(0, x.shape[0], (n,), generator=g)
    b = x[idx]
    sh = torch.randint(0, x.shape[-1], (2,), generator=g).tolist()
    b = torch.roll(b, sh, (-2, -1))
    return b.flip(-1) if torch.rand((), generator=g) < 0.5 else b


def train_denoiser(
    kind: str,
    rf: int,
    x: Tensor,
    steps: int,
    batch: int,
    sigma_max: float,
    width: int = 16,
    lr: float = 2e-3,
    seed: int = 0,
) -> LocalDenoiser:
    """Train a flat or conditional denoiser on standardised fields x (N, 1, L, L) with noise
    levels sigma ~ U(0, sigma_max) (noise-prediction MSE, Adam)."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    dwt = DWT2d("haar", 1)
    net = LocalDenoiser(rf, 1 if kind == "flat" else 4, 1 if kind == "flat" else 3, width)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(steps):
        b = _batch(x, batch, g)
        sig = sigma_max * torch.rand(batch, 1, 1, 1, generator=g)
        if kind == "flat":
            z = torch.randn(b.shape, generator=g)
            inp, target = b + sig * z, z
        else:
            low, det = dwt.forward_level(b)
            z = torch.randn(det.shape, generator=g)
            inp, target = torch.cat([det + sig * z, low], 1), z
        loss = (net(inp) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


@torch.no_grad()
def detail_mse(kind: str, net: nn.Module, x: Tensor, sigma: float, seed: int = 1) -> float:
    """Mean squared error per detail coefficient of scale 1 of the denoised x (N, 1, L, L)."""
    g = torch.Generator().manual_seed(seed)
    dwt = DWT2d("haar", 1)
    low, det = dwt.forward_level(x)
    if kind == "flat":
        z = torch.randn(x.shape, generator=g)
        y = x + sigma * z
        est = dwt.forward_level(y - sigma * net(y))[1]
    else:
        z = torch.randn(det.shape, generator=g)
        y = det + sigma * z
        est = y - sigma * net(torch.cat([y, low], 1))
    return float((est - det).pow(2).mean())
