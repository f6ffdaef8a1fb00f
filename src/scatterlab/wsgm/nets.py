"""Small U-Net score networks (plain torch) with a sinusoidal time embedding.

``ScoreUNet(in_channels, out_channels, cond_channels)``: forward(x, t, cond=None) predicts the
noise eps. The conditional version (cond_channels > 0) concatenates the conditioning low-pass
image to the input as extra channels, as in the authors' ConditionalModel.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Sinusoidal embedding. t: (B,) float -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, dim % 2))


def _norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(8, ch), ch)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with a per-channel time shift; residual 1x1 if needed."""

    def __init__(self, cin: int, cout: int, emb_dim: int, padding_mode: str) -> None:
        super().__init__()
        self.n1, self.n2 = _norm(cin), _norm(cout)
        self.c1 = nn.Conv2d(cin, cout, 3, padding=1, padding_mode=padding_mode)
        self.c2 = nn.Conv2d(cout, cout, 3, padding=1, padding_mode=padding_mode)
        self.emb = nn.Linear(emb_dim, cout)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        nn.init.zeros_(self.c2.weight)  # start as identity: stabler short trainings
        nn.init.zeros_(self.c2.bias)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.c1(F.silu(self.n1(x)))
        h = h + self.emb(emb)[:, :, None, None]
        h = self.c2(F.silu(self.n2(h)))
        return self.skip(x) + h


class ScoreUNet(nn.Module):
    """U-Net predicting eps, shapes: x (B, in_channels, H, W), t (B,), cond (B, cond, H, W).

    H and W must be divisible by 2^(len(channel_mult) - 1). ``time_scale`` multiplies t before
    the embedding (the authors feed t * 1000 / T). Circular padding suits periodic fields.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int | None = None,
        cond_channels: int = 0,
        base_channels: int = 32,
        channel_mult: tuple[int, ...] | list[int] = (1, 2),
        num_res_blocks: int = 1,
        time_scale: float = 200.0,
        padding_mode: str = "circular",
    ) -> None:
        super().__init__()
        out_channels = out_channels or in_channels
        self.in_channels, self.cond_channels, self.out_channels = (
            in_channels,
            cond_channels,
            out_channels,
        )
        self.time_scale = time_scale
        self.n_down = len(channel_mult) - 1
        emb_dim = 4 * base_channels
        self.emb_dim = emb_dim
        self.time_mlp = nn.Sequential(
            nn.Linear(base_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        self.base = base_channels
        self.inp = nn.Conv2d(
            in_channels + cond_channels, base_channels, 3, padding=1, padding_mode=padding_mode
        )
        chs = [base_channels * m for m in channel_mult]
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skip_chs = []
        cur = base_channels
        for i, ch in enumerate(chs):
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks):
                blocks.append(ResBlock(cur, ch, emb_dim, padding_mode))
                cur = ch
            self.down.append(blocks)
            skip_chs.append(cur)
            if i < len(chs) - 1:
                self.downsample.append(
                    nn.Conv2d(cur, cur, 3, stride=2, padding=1, padding_mode=padding_mode)
                )
        self.mid = ResBlock(cur, cur, emb_dim, padding_mode)
        self.up = nn.ModuleList()
        self.upconv = nn.ModuleList()
        for i, ch in reversed(list(enumerate(chs))):
            blocks = nn.ModuleList()
            for k in range(num_res_blocks):
                blocks.append(
                    ResBlock(cur + (skip_chs[i] if k == 0 else 0), ch, emb_dim, padding_mode)
                )
                cur = ch
            self.up.append(blocks)
            if i > 0:
                self.upconv.append(nn.Conv2d(cur, cur, 3, padding=1, padding_mode=padding_mode))
        self.out_norm = _norm(cur)
        self.out = nn.Conv2d(cur, out_channels, 3, padding=1, padding_mode=padding_mode)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        if self.cond_channels:
            if cond is None:
                raise ValueError("this conditional ScoreUNet needs a `cond` tensor")
            x = torch.cat([x, cond], dim=1)
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        emb = self.time_mlp(timestep_embedding(t * self.time_scale, self.base))
        h = self.inp(x)
        skips = []
        for i, blocks in enumerate(self.down):
            for blk in blocks:
                h = blk(h, emb)
            skips.append(h)
            if i < self.n_down:
                h = self.downsample[i](h)
        h = self.mid(h, emb)
        for j, blocks in enumerate(self.up):
            h = torch.cat([h, skips.pop()], dim=1)
            for blk in blocks:
                h = blk(h, emb)
            if j < self.n_down:
                h = self.upconv[j](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.out(F.silu(self.out_norm(h)))
