"""Ornstein-Uhlenbeck score-based diffusion, the WSGM cascade and the single-scale SGM.

Forward process: x_t = e^{-t} x_0 + sqrt(1 - e^{-2t}) z, t in [0, T]. Networks predict z
(noise-prediction MSE). Training times t = T u^2 (``train_schedule="quadratic"``) or T u.
Sampling uses the DDPM ancestral update on a time grid 0 = t_0 < ... < t_N = T, uniform
t_k = T k/N or quadratic t_k = T (k/N)^2, with beta_k = 1 - exp(-2 (t_k - t_{k-1})):

    x_{k-1} = (x_k - beta_k / sqrt(1 - abar_k) eps(x_k, t_k)) / sqrt(1 - beta_k) + sigma_k z

with abar_k = exp(-2 t_k), sigma_k^2 = beta_k ("large", the authors' FIXED_LARGE) or the
posterior variance beta_k (1 - abar_{k-1}) / (1 - abar_k) ("small"); no noise on the last step.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Annotated, Literal

import torch
from torch import Tensor, nn

from scatterlab.ranges import Positive, PositiveInt, Range
from scatterlab.wsgm._errors import ConfigError
from scatterlab.wsgm.dwt import DWT2d, check_size
from scatterlab.wsgm.nets import ScoreUNet

GRIDS = ("uniform", "quadratic")


def time_grid(n_steps: int, T: float, grid: str = "uniform") -> Tensor:
    """(n_steps + 1,) float64 times t_0 = 0 < ... < t_N = T."""
    if n_steps < 1:
        raise ConfigError(f"number of sampling steps must be >= 1, got {n_steps}")
    u = torch.linspace(0.0, 1.0, n_steps + 1, dtype=torch.float64)
    if grid == "uniform":
        return T * u
    if grid == "quadratic":
        return T * u.pow(2)
    raise ConfigError(f"unknown time grid {grid!r}: use one of {GRIDS}")


class OUDiffusion:
    """The OU forward process, its noise-prediction loss and the ancestral sampler."""

    def __init__(
        self,
        T: float = 5.0,
        train_schedule: str = "quadratic",
        variance: str = "large",
        eps_skip: bool = True,
    ) -> None:
        if T <= 0:
            raise ConfigError(f"final diffusion time T must be positive, got {T}")
        if train_schedule not in GRIDS:
            raise ConfigError(f"unknown train_schedule {train_schedule!r}: use one of {GRIDS}")
        if variance not in ("large", "small"):
            raise ConfigError(f"unknown sampler variance {variance!r}: use 'large' or 'small'")
        self.T, self.train_schedule, self.variance = T, train_schedule, variance
        # eps = sigma_t x_t + net(...): the exact noise predictor for N(0, I) data plus a learnt
        # residual. Data are standardised, so an untrained model already has the right
        # per-channel variance and short trainings stay stable.
        self.eps_skip = eps_skip

    def predict_eps(self, net: nn.Module, x: Tensor, t: Tensor, cond: Tensor | None) -> Tensor:
        """The noise prediction at x_t (B, ...), t (B,)."""
        out = net(x, t, cond)
        if self.eps_skip:
            sigma = torch.sqrt((1 - torch.exp(-2 * t)).clamp(min=0))
            out = out + sigma.view(-1, *([1] * (x.dim() - 1))).to(x.dtype) * x
        return out

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t given x_0 (B, ...) and t (B,)."""
        a = torch.exp(-t).view(-1, *([1] * (x0.dim() - 1)))
        return a * x0 + torch.sqrt((1 - a * a).clamp(min=0)) * noise

    def sample_t(self, n: int, device, generator: torch.Generator | None = None) -> Tensor:
        u = torch.rand(n, device=device, generator=generator)
        u = u.pow(2) if self.train_schedule == "quadratic" else u
        return (self.T * u).clamp(min=1e-4)

    def loss(
        self,
        net: nn.Module,
        x0: Tensor,
        cond: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Noise-prediction MSE averaged over batch and pixels.

        ``generator`` fixes the times and noises (validation: the same draws every epoch, so
        epochs are compared on common random numbers, not on fresh noise).
        """
        t = self.sample_t(x0.shape[0], x0.device, generator)
        noise = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
        xt = self.q_sample(x0, t, noise)
        return (self.predict_eps(net, xt, t, cond) - noise).pow(2).mean()

    @torch.no_grad()
    def sample(
        self,
        net: nn.Module,
        shape: Sequence[int],
        n_steps: int,
        grid: str = "uniform",
        cond: Tensor | None = None,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        clip: float | None = None,
    ) -> Tensor:
        """Ancestral sampling from N(0, I) at t = T down to t = 0. Returns (shape)."""
        device = device if device is not None else next(net.parameters()).device
        ts = time_grid(n_steps, self.T, grid)
        abar = torch.exp(-2 * ts)
        x = torch.randn(tuple(shape), device=device, generator=generator)
        for k in range(n_steps, 0, -1):
            beta = float(1 - abar[k] / abar[k - 1])
            t = torch.full((shape[0],), float(ts[k]), device=device)
            eps = self.predict_eps(net, x, t, cond)
            if clip is not None:
                # Clip the implied x_0 prediction (images only), then re-derive eps.
                s = float(torch.sqrt(1 - abar[k]))
                a = float(torch.sqrt(abar[k]))
                x0 = ((x - s * eps) / a).clamp(-clip, clip)
                eps = (x - a * x0) / s
            x = (x - beta / float(torch.sqrt(1 - abar[k])) * eps) / math.sqrt(1 - beta)
            if k > 1:
                var = (
                    beta
                    if self.variance == "large"
                    else float(beta * (1 - abar[k - 1]) / (1 - abar[k]))
                )
                x = x + math.sqrt(var) * torch.randn(x.shape, device=device, generator=generator)
        return x


@torch.no_grad()
def ema_update(shadow: nn.Module, model: nn.Module, decay: float) -> None:
    """shadow <- decay * shadow + (1 - decay) * model (parameters); buffers are copied."""
    for e, p in zip(shadow.parameters(), model.parameters(), strict=True):
        e.lerp_(p.detach(), 1 - decay)
    for e, b in zip(shadow.buffers(), model.buffers(), strict=True):
        e.copy_(b)


def ema_decay_at(decay: float, num_updates: int) -> float:
    """Warm-up of the EMA decay: short runs average over the recent past only."""
    return min(decay, (1 + num_updates) / (10 + num_updates))


class EMA:
    """Exponential moving average of a module (``shadow`` is a frozen deep copy)."""

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True) -> None:
        self.decay, self.warmup, self.num_updates = decay, warmup, 0
        self.shadow = copy.deepcopy(model).eval().requires_grad_(False)

    def update(self, model: nn.Module) -> None:
        self.num_updates += 1
        d = ema_decay_at(self.decay, self.num_updates) if self.warmup else self.decay
        ema_update(self.shadow, model, d)


class _Standardizer(nn.Module):
    """Per-channel mean/std, fitted once from data. x: (B, C, H, W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(1, channels, 1, 1))
        self.register_buffer("std", torch.ones(1, channels, 1, 1))

    @torch.no_grad()
    def fit(self, x: Tensor) -> None:
        self.mean.copy_(x.mean(dim=(0, 2, 3)).view_as(self.mean))
        self.std.copy_(x.std(dim=(0, 2, 3)).clamp(min=1e-8).view_as(self.std))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std

    def inverse(self, x: Tensor) -> Tensor:
        return x * self.std + self.mean


_COARSEST_OK = (
    "coarsest is None or (coarsest < size and size % coarsest == 0 "
    "and (size // coarsest) & (size // coarsest - 1) == 0)",
    "give model.coarsest a size / 2^J below model.size (e.g. 8 for sizes 16..128)",
)


def _unet_ok(name: str) -> tuple[str, str]:
    """Config check of the ScoreUNet kwargs `name` (a dict or None) of a score model."""
    d = f"({name} or {{}})"
    return (
        f"{d}.get('base_channels', 32) >= 1 and {d}.get('num_res_blocks', 1) >= 1 "
        f"and min([1, *{d}.get('channel_mult', (1, 2))]) >= 1 "
        f"and {d}.get('padding_mode', 'circular') in ('zeros', 'reflect', 'replicate', 'circular')",
        f"model.{name}: base_channels, num_res_blocks and each channel_mult must be >= 1, "
        "padding_mode one of zeros, reflect, replicate, circular",
    )


def _levels_to(size: int, coarsest: int) -> int:
    """log2(size / coarsest), or ConfigError when that is not a whole number >= 1."""
    if coarsest < 1 or size % coarsest or (size // coarsest) & (size // coarsest - 1):
        raise ConfigError(
            f"model.coarsest={coarsest} must divide size {size} by a power of 2 (8 for 16..128)"
        )
    levels = (size // coarsest).bit_length() - 1
    if levels < 1:
        raise ConfigError(f"model.coarsest={coarsest} must be smaller than the size {size}")
    return levels


def _net(cfg: dict, cin: int, cout: int, cond: int, T: float) -> ScoreUNet:
    return ScoreUNet(
        in_channels=cin, out_channels=cout, cond_channels=cond, time_scale=1000.0 / T, **cfg
    )


class ScoreModel(nn.Module):
    """Common interface of WSGM and SGM: fit_stats, loss, sample (all on standardized data)."""

    diffusion: OUDiffusion
    size: int
    channels: int

    def fit_stats(self, x: Tensor) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def loss(  # pragma: no cover
        self,
        x: Tensor,
        pixels_per_scale: int | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError

    def sample(
        self,
        n: int,
        n_steps: int,
        grid: str = "uniform",
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def _device(self) -> torch.device:
        return next(self.parameters()).device

    def _generator(self, seed: int | None, generator: torch.Generator | None):
        if generator is not None or seed is None:
            return generator
        return torch.Generator(device=self._device()).manual_seed(seed)


class SGM(ScoreModel):
    """Single-scale score model on the full-resolution field (per-channel standardized).

    x: (B, channels, size, size). ``clip`` bounds the standardized x_0 prediction while
    sampling (the authors clip images to [-1, 1]; None for physical fields). ``coarsest``
    (e.g. 8), when set, replaces ``net.channel_mult`` by [1, 2, ..., 2] so that the U-Net's
    bottleneck is coarsest x coarsest at every size (WSGM's coarsest scale).
    """

    CONFIG_CHECKS: tuple[tuple[str, str], ...] = (
        _COARSEST_OK,
        _unet_ok("net"),
        (
            "coarsest is not None or size % 2 ** (len((net or {}).get('channel_mult', (1, 2))) - 1)"
            " == 0",
            "the U-Net halves the field len(model.net.channel_mult) - 1 times: give a model.size "
            "divisible by that power of 2, or shorten model.net.channel_mult",
        ),
    )

    def __init__(
        self,
        size: PositiveInt = 32,
        channels: PositiveInt = 1,
        net: dict | None = None,
        T: Positive = 5.0,
        train_schedule: Literal["uniform", "quadratic"] = "quadratic",
        variance: Literal["large", "small"] = "large",
        eps_skip: bool = True,
        clip: Positive | None = None,
        coarsest: PositiveInt | None = None,
    ) -> None:
        super().__init__()
        net = dict(net or {})
        if coarsest is not None:
            # Downsample to coarsest x coarsest at the bottleneck, as WSGM's coarsest scale:
            # channel_mult [1, 2, ..., 2] with log2(size / coarsest) halvings.
            net["channel_mult"] = [1] + [2] * _levels_to(size, coarsest)
        check_size(size, len(net.get("channel_mult", (1, 2))) - 1)
        self.size, self.channels, self.clip = size, channels, clip
        self.diffusion = OUDiffusion(T, train_schedule, variance, eps_skip)
        self.norm = _Standardizer(channels)
        self.net = _net(net, channels, channels, 0, T)

    def fit_stats(self, x: Tensor) -> None:
        self.norm.fit(x)

    def loss(
        self,
        x: Tensor,
        pixels_per_scale: int | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Noise-prediction loss on x (B, C, L, L); with ``pixels_per_scale`` on the first
        max(1, pixels_per_scale / L^2) images only (the same pixel budget as WSGM's scales)."""
        if pixels_per_scale is not None:
            x = x[: max(1, min(x.shape[0], pixels_per_scale // (x.shape[-1] ** 2)))]
        loss = self.diffusion.loss(self.net, self.norm(x), generator=generator)
        return loss, {"loss_full": loss.detach()}

    @torch.no_grad()
    def sample(
        self,
        n: int,
        n_steps: int,
        grid: str = "uniform",
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """(n, channels, size, size) samples in data units."""
        g = self._generator(seed, generator)
        z = self.diffusion.sample(
            self.net,
            (n, self.channels, self.size, self.size),
            n_steps,
            grid,
            generator=g,
            device=self._device(),
            clip=self.clip,
        )
        return self.norm.inverse(z)


class PixelDetailNet(nn.Module):
    """Noise predictor of standardized details xbar_j (B, 3C, s, s) given the standardized
    low-pass x_j (B, C, s, s), computed by a U-Net on the finer 2s x 2s pixel field.

    The noisy details are unstandardized and put back with the low-pass by the inverse DWT,
    x = IDWT(x_j, xbar_j,t) (B, C, 2s, 2s), so that the network sees the field where phi^4's
    non-Gaussianity is local and translation invariant (its double-well marginal acts pixel by
    pixel, which in the wavelet basis is a joint law of four coefficients per site); its input
    is [x, IDWT(x_j, 0)] (the noisy and the clean part), standardized by x_{j-1}'s statistics,
    and its output's DWT details are the prediction (the low-pass part is dropped).
    """

    def __init__(
        self,
        unet: ScoreUNet,
        dwt: DWT2d,
        low_norm: _Standardizer,
        detail_norm: _Standardizer,
        channels: int,
    ) -> None:
        super().__init__()
        self.unet, self.dwt = unet, dwt
        self.low_norm, self.detail_norm = low_norm, detail_norm
        self.pixel_norm = _Standardizer(channels)  # x_{j-1} statistics, fitted by WSGM

    def forward(self, z: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        if cond is None:
            raise ValueError("PixelDetailNet needs the low-pass `cond`")
        low = self.low_norm.inverse(cond)
        noisy = self.dwt.inverse_level(low, self.detail_norm.inverse(z))
        clean = self.dwt.inverse_level(low, torch.zeros_like(z))
        x = torch.cat([self.pixel_norm(noisy), self.pixel_norm(clean)], dim=1)
        return self.dwt.forward_level(self.unet(x, t))[1]


DETAIL_NETS = ("wavelet", "pixel")
# side of the coarsest scale (as a config expression)
_COARSE_SIZE = "(coarsest if coarsest is not None else size >> levels)"


class WSGM(ScoreModel):
    """Wavelet score-based generative model: p(x) = p(x_J) prod_j p(xbar_j | x_j).

    ``nets[0]`` is the unconditional model of the standardized coarsest low-pass x_J
    (B, C, L/2^J, L/2^J); ``nets[j]`` (j = 1..J) models the standardized detail coefficients
    xbar_j (B, 3C, L/2^j, L/2^j) given the standardized low-pass x_j (B, C, L/2^j, L/2^j),
    concatenated as input channels. Sampling goes coarse to fine with the same number of steps
    at every scale. ``net`` holds ScoreUNet kwargs for all scales; ``coarse_net`` optionally
    overrides them for the coarsest model. ``coarsest`` (e.g. 8), when set, replaces ``levels``
    by J = log2(size / coarsest), so one setting serves every lattice size. ``detail_net``:
    "wavelet" (the authors': U-Net on the detail channels with the low-pass concatenated) or
    "pixel" (``PixelDetailNet``: the same U-Net family on the finer pixel field).
    """

    CONFIG_CHECKS: tuple[tuple[str, str], ...] = (
        _COARSEST_OK,
        _unet_ok("net"),
        _unet_ok("coarse_net"),
        (
            "coarsest is not None or size % 2**levels == 0",
            "model.size must be divisible by 2^J (J = model.levels): lower model.levels",
        ),
        (
            f"{_COARSE_SIZE} % 2 ** (len((net or {{}}).get('channel_mult', (1, 2))) - 1) == 0",
            "the U-Nets halve each scale len(model.net.channel_mult) - 1 times: lower J "
            "(model.levels) or shorten model.net.channel_mult",
        ),
        (
            f"{_COARSE_SIZE} % 2 ** (len((coarse_net or net or {{}}).get('channel_mult', (1, 2)))"
            " - 1) == 0",
            "the coarsest U-Net halves its scale len(model.coarse_net.channel_mult) - 1 times: "
            "lower J (model.levels) or shorten model.coarse_net.channel_mult",
        ),
    )

    def __init__(
        self,
        size: Annotated[int, Range(ge=2)] = 32,
        channels: PositiveInt = 1,
        levels: PositiveInt = 2,
        wavelet: str = "haar",
        net: dict | None = None,
        coarse_net: dict | None = None,
        T: Positive = 5.0,
        train_schedule: Literal["uniform", "quadratic"] = "quadratic",
        variance: Literal["large", "small"] = "large",
        eps_skip: bool = True,
        coarsest: PositiveInt | None = None,
        detail_net: Literal["wavelet", "pixel"] = "wavelet",
    ) -> None:
        super().__init__()
        if detail_net not in DETAIL_NETS:
            raise ConfigError(f"unknown model.detail_net {detail_net!r}: use one of {DETAIL_NETS}")
        net = dict(net or {})
        coarse_net = dict(coarse_net or net)
        if coarsest is not None:  # J from the coarsest size, e.g. 8: J = log2(L / 8)
            levels = _levels_to(size, coarsest)
        check_size(size, levels)
        n_down = len(net.get("channel_mult", (1, 2))) - 1
        n_down_c = len(coarse_net.get("channel_mult", (1, 2))) - 1
        if levels < 1:
            raise ConfigError("WSGM needs levels (J) >= 1; use the SGM model for J = 0")
        for j in range(1, levels + 1):
            if (size >> j) % (2**n_down):
                raise ConfigError(
                    f"scale j={j} has size {size >> j}, not divisible by the U-Net's "
                    f"2^{n_down}: lower J or shorten channel_mult"
                )
        if (size >> levels) % (2**n_down_c):
            raise ConfigError(
                f"coarsest size {size >> levels} not divisible by 2^{n_down_c}: lower J or "
                "shorten coarse_net.channel_mult"
            )
        self.size, self.channels, self.levels = size, channels, levels
        self.dwt = DWT2d(wavelet, levels)
        self.diffusion = OUDiffusion(T, train_schedule, variance, eps_skip)
        c = channels
        self.detail_net = detail_net
        # low_norms[j]: x_j for j = 1..J (index j-1); detail_norms[j-1]: xbar_j.
        self.low_norms = nn.ModuleList([_Standardizer(c) for _ in range(levels)])
        self.detail_norms = nn.ModuleList([_Standardizer(3 * c) for _ in range(levels)])
        if detail_net == "wavelet":  # the authors': a U-Net on [details, low-pass] channels
            details = [_net(net, 3 * c, 3 * c, c, T) for _ in range(levels)]
        else:
            details = [
                PixelDetailNet(
                    _net(net, 2 * c, c, 0, T),
                    self.dwt,
                    self.low_norms[j],
                    self.detail_norms[j],
                    c,
                )
                for j in range(levels)
            ]
        self.nets = nn.ModuleList([_net(coarse_net, c, c, 0, T), *details])

    def _decompose(self, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """lows [x_1..x_J], details [xbar_1..xbar_J]."""
        lows, details = [], []
        low = x
        for _ in range(self.levels):
            low, d = self.dwt.forward_level(low)
            lows.append(low)
            details.append(d)
        return lows, details

    @torch.no_grad()
    def fit_stats(self, x: Tensor) -> None:
        lows, details = self._decompose(x)
        for j in range(self.levels):
            self.low_norms[j].fit(lows[j])
            self.detail_norms[j].fit(details[j])
            if isinstance(self.nets[j + 1], PixelDetailNet):  # x_{j-1}: x itself for j = 1
                self.nets[j + 1].pixel_norm.fit(lows[j - 1] if j else x)

    def loss(
        self,
        x: Tensor,
        pixels_per_scale: int | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Sum over scales of the noise-prediction losses; per-scale values in the dict.

        x: (B, C, L, L). With ``pixels_per_scale``, the model at resolution s trains on the
        first min(B, pixels_per_scale / s^2) images only, so a large batch gives every scale
        the same number of pixels (otherwise coarse scales see very few pixels per step).
        """
        lows, details = self._decompose(x)

        def take(t: Tensor) -> Tensor:
            if pixels_per_scale is None:
                return t
            return t[: max(1, min(t.shape[0], pixels_per_scale // (t.shape[-1] ** 2)))]

        parts: dict[str, Tensor] = {}
        total = self.diffusion.loss(
            self.nets[0], take(self.low_norms[-1](lows[-1])), generator=generator
        )
        parts[f"loss_low{self.levels}"] = total.detach()
        for j in range(1, self.levels + 1):
            cond = take(self.low_norms[j - 1](lows[j - 1]))
            target = take(self.detail_norms[j - 1](details[j - 1]))
            lj = self.diffusion.loss(self.nets[j], target, cond, generator=generator)
            parts[f"loss_detail{j}"] = lj.detach()
            total = total + lj
        return total, parts

    @torch.no_grad()
    def sample(
        self,
        n: int,
        n_steps: int,
        grid: str = "uniform",
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Coarse-to-fine sampling, n_steps at every scale -> (n, C, size, size), data units."""
        g = self._generator(seed, generator)
        dev = self._device()
        c, J = self.channels, self.levels
        s = self.size >> J
        low = self.low_norms[J - 1].inverse(
            self.diffusion.sample(
                self.nets[0], (n, c, s, s), n_steps, grid, generator=g, device=dev
            )
        )
        for j in range(J, 0, -1):
            s = self.size >> j
            cond = self.low_norms[j - 1](low)
            d = self.diffusion.sample(
                self.nets[j], (n, 3 * c, s, s), n_steps, grid, cond=cond, generator=g, device=dev
            )
            low = self.dwt.inverse_level(low, self.detail_norms[j - 1].inverse(d))
        return low
