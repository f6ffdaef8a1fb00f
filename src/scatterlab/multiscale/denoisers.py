"""Local denoisers with an exact receptive field: flat (pixels) and conditional (wavelet details
given the coarse field), after Kadkhodaie, Guth, Mallat & Simoncelli, ICLR 2023.

``LocalDenoiser``: the authors' BF_CNN_RF (LabForComputationalVision/
local-probability-models-of-images, ``code/network.py``) at CPU size: max(depth, (rf - 1) / 2)
bias-free periodic convolutions without down-sampling, (rf - 1) / 2 of them 3 x 3 (the first,
the last and evenly spread ones) and the others 1 x 1, with ReLUs and bias-free batch
normalisation (divide by the batch standard deviation, multiply by a learned gain: no mean, no
bias) in between. Unlike the authors' plain stack (64 channels wide) the hidden layers are
residual, which a narrow network needs to train in a few hundred steps; the last layer starts
at zero (the denoiser starts as the identity). So every receptive field has the same depth, an
output value depends on exactly the rf x rf input window around it (``rf_window``), and the
network is homogeneous, f(a y) = a f(y) for a > 0 (in eval mode). It predicts the noise (the
residual): x_hat = y - f(y), blind to sigma.

* flat: input the noisy field y = x + sigma z (1 channel, L x L).
* conditional, scale j: input the noisy details ybar_j = xbar_j + sigma z (3 channels) and the
  coarse field x_j (1 channel), both L / 2^j x L / 2^j; output the noise of the 3 detail
  channels (the authors concatenate the low-pass band to the noisy details the same way).
  Its receptive field counts coefficients of scale j (one covers 2^j pixels).
* ``MultiscaleDenoiser``: the full-image denoiser of the paper's Figure 2: the coarsest
  low-pass y_J denoised by a network that sees the whole coarse field, then for j = J .. 1 the
  details ybar_j denoised by the conditional network given the *denoised* coarse field, and
  x_hat_{j-1} = W^T (x_hat_j, xbar_hat_j). The conditional networks are trained on the clean
  coarse field (they model p(xbar_j | x_j)).

The wavelet transform is orthogonal, so white noise of variance sigma^2 in pixels is white
noise of the same variance on every coefficient, and the full-image squared error is the sum
of the errors of the low-pass and of every detail band (``band_errors``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from scatterlab.errors import ConfigError
from scatterlab.wsgm.dwt import DWT2d, check_size


def check_rf(rf: int) -> int:
    """rf, or ConfigError unless it is an odd integer >= 3."""
    if rf < 3 or rf % 2 == 0:
        raise ConfigError(
            f"receptive field rf={rf} must be odd and >= 3 (a centred window of 3 x 3 "
            "convolutions): use 5, 9, 13, 23 or 43"
        )
    return rf


def kernel_sizes(rf: int, depth: int | None = None) -> list[int]:
    """Kernel size (3 or 1) of each layer of a network of receptive field rf with
    max(depth, (rf - 1) / 2) layers: k = (rf - 1) / 2 of them 3 x 3 at evenly spread
    positions, first and last included, the others 1 x 1."""
    k = (check_rf(rf) - 1) // 2
    depth = k if depth is None else max(depth, k)
    if k == 1:
        return [3] + [1] * (depth - 1)
    at = {round(i * (depth - 1) / (k - 1)) for i in range(k)}
    return [3 if i in at else 1 for i in range(depth)]


class BiasFreeBatchNorm(nn.Module):
    """x / sd(x) * gain per channel (no mean subtraction, no bias), the authors' BF_batchNorm;
    in eval mode the running sd is used, so the layer is a fixed per-channel scale."""

    def __init__(self, channels: int, momentum: float = 0.1) -> None:
        super().__init__()
        self.register_buffer("running_sd", torch.ones(1, channels, 1, 1))
        self.gain = nn.Parameter(torch.full((1, channels, 1, 1), 0.1))
        self.momentum = momentum

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            sd = torch.sqrt(x.var(dim=(0, 2, 3), keepdim=True, unbiased=False) + 1e-5)
            with torch.no_grad():
                self.running_sd.lerp_(sd, self.momentum)
        else:
            sd = self.running_sd
        return x / sd * self.gain


class LocalDenoiser(nn.Module):
    """Bias-free CNN with receptive field rf: (B, c_in, n, n) -> (B, c_out, n, n), periodic.

    depth: least number of convolutions (``kernel_sizes``; default (rf - 1) / 2, all 3 x 3);
    width: hidden channels.
    """

    def __init__(
        self,
        rf: int,
        c_in: int,
        c_out: int,
        width: int = 16,
        depth: int | None = None,
        noise_input: bool = False,
    ) -> None:
        super().__init__()
        sizes = kernel_sizes(rf, depth)
        self.noise_input = noise_input
        c_in_net = c_in + int(noise_input)

        def conv(a: int, b: int, ks: int) -> nn.Conv2d:
            return nn.Conv2d(a, b, ks, padding=ks // 2, bias=False, padding_mode="circular")

        self.first = conv(c_in_net, width if len(sizes) > 1 else c_out, sizes[0])
        self.hidden = nn.ModuleList(
            nn.Sequential(conv(width, width, ks), BiasFreeBatchNorm(width), nn.ReLU())
            for ks in sizes[1:-1]
        )
        self.last = conv(width, c_out, sizes[-1]) if len(sizes) > 1 else None
        # the last layer starts at zero: the denoiser starts as the identity, x_hat = y (the
        # authors start near it with tiny batch-norm gains)
        nn.init.zeros_((self.last or self.first).weight)
        self.rf, self.c_in, self.c_out, self.depth = rf, c_in, c_out, len(sizes)

    def forward(self, x: Tensor, sigma: Tensor | float | None = None) -> Tensor:
        """The predicted noise of x (B, c_in, n, n); sigma (scalar or (B,)) is used, and
        needed, only by a network with ``noise_input`` (a constant input channel)."""
        if self.noise_input:
            if sigma is None:
                raise ValueError("this denoiser takes the noise level: call it as net(y, sigma)")
            s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1)
            x = torch.cat([x, s.expand(x.shape[0], 1, *x.shape[-2:])], 1)
        if self.last is None:
            return self.first(x)
        h = torch.relu(self.first(x))
        for layer in self.hidden:
            # residual hidden layers: a plain stack of 20 layers 8 channels wide does not train
            # in a few hundred steps (the authors' are 64 wide); a skip keeps the window exact
            h = h + layer(h)
        return self.last(h) if self.last is not None else h


def rf_window(net: nn.Module, c_in: int, size: int, seed: int = 0, draws: int = 32) -> Tensor:
    """(size, size) bool mask of the input pixels on which the centre output value depends:
    nonzero gradient of output [0, size/2, size/2] with respect to the input (any channel),
    net in eval mode, summed over ``draws`` random inputs (a ReLU that is off on one input
    can hide a pixel)."""
    net = copy.deepcopy(net).double().eval()  # float64: a corner's gradient is a product of
    # rf / 2 small weights, which float32 can flush to zero
    for m in net.modules():  # a zero layer (the initial last one) would hide the window
        if isinstance(m, nn.Conv2d) and not m.weight.any():
            nn.init.normal_(m.weight)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(draws, c_in, size, size, generator=g, dtype=torch.float64, requires_grad=True)
    net(x, 1.0)[:, 0, size // 2, size // 2].sum().backward()  # eval mode: the draws are independent
    return x.grad.abs().sum(dim=(0, 1)) > 0


def measured_rf(net: nn.Module, c_in: int, size: int) -> int:
    """Width of the input window that one output value depends on (``rf_window``)."""
    cols = rf_window(net, c_in, size).any(dim=0).nonzero()
    return int(cols.max() - cols.min() + 1)


def coarse_rf(n: int) -> int:
    """Smallest odd receptive field that covers a periodic n x n field (>= n + 1)."""
    return max(3, n + 1 if n % 2 == 0 else n + 2)


def _batch(x: Tensor, n: int, g: torch.Generator, augment: bool) -> Tensor:
    """n random fields of x (N, 1, L, L); with augment, randomly shifted, flipped and
    transposed (the symmetries of a stationary isotropic lattice field such as phi^4; not of
    digits, and a shift by an odd amount moves a field against the wavelet grid)."""
    idx = torch.randint(0, x.shape[0], (n,), generator=g)
    b = x[idx]
    if augment:
        sh = torch.randint(0, x.shape[-1], (2,), generator=g).tolist()
        b = torch.roll(b, sh, (-2, -1))
        if torch.rand((), generator=g) < 0.5:
            b = b.flip(-1)
        if torch.rand((), generator=g) < 0.5:
            b = b.transpose(-1, -2)
    return b


def train_net(
    net: LocalDenoiser,
    make_pair,
    steps: int,
    lr: float,
) -> LocalDenoiser:
    """Adam on the residual MSE, mean of abs(f(y) - n)^2 (the authors' loss), learning rate
    cosine-decayed to 0. ``make_pair()`` gives (noisy input, noise, sigma) batches.

    The loss weighs a noise level by sigma^2, so in a few hundred steps the small levels are
    learnt least (a relative loss, abs(f(y) - n)^2 / sigma^2 on log-uniform levels, tried on
    phi^4 with 8 channels, reached 1.4 dB at sigma = 1 in 300 steps, the plain one 5.4)."""
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: 0.5 * (1 + math.cos(math.pi * t / max(steps, 1)))
    )
    net.train()
    for _ in range(steps):
        inp, noise, sig = make_pair()
        loss = (net(inp, sig) - noise).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return net.eval()


def _sigmas(batch: int, sigma_max: float, g: torch.Generator, sigma_min: float = 0.0) -> Tensor:
    """One noise level per field, uniform on [0, sigma_max] (the authors': 0 to 255); with
    sigma_min > 0, every other field log-uniform on [sigma_min, sigma_max] instead, so that the
    small levels a sampler ends on are trained too (the plain loss weighs a level by sigma^2)."""
    sig = sigma_max * torch.rand(batch, 1, 1, 1, generator=g)
    if sigma_min > 0:
        lo, hi = math.log(sigma_min), math.log(sigma_max)
        log_u = torch.exp(lo + (hi - lo) * torch.rand(batch, 1, 1, 1, generator=g))
        sig = torch.where((torch.arange(batch) % 2 == 1).view(-1, 1, 1, 1), log_u, sig)
    return sig


def train_flat(
    x: Tensor,
    rf: int,
    steps: int,
    batch: int,
    sigma_max: float,
    width: int = 16,
    depth: int | None = None,
    lr: float = 2e-3,
    seed: int = 0,
    augment: bool = True,
    sigma_min: float = 0.0,
    noise_input: bool = False,
) -> LocalDenoiser:
    """A flat denoiser of the fields x (N, 1, L, L), one noise level per field (``_sigmas``)."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    net = LocalDenoiser(rf, 1, 1, width, depth, noise_input)

    def pair() -> tuple[Tensor, Tensor, Tensor]:
        b = _batch(x, batch, g, augment)
        sig = _sigmas(batch, sigma_max, g, sigma_min)
        noise = sig * torch.randn(b.shape, generator=g)
        return b + noise, noise, sig

    return train_net(net, pair, steps, lr)


class MultiscaleDenoiser(nn.Module):
    """Coarse-to-fine full-image denoiser: a global low-pass network at the coarsest scale J
    and one conditional network per scale j = 1..J (``nets[j - 1]``)."""

    def __init__(self, low: LocalDenoiser, nets: list[LocalDenoiser], wavelet: str) -> None:
        super().__init__()
        self.low, self.nets = low, nn.ModuleList(nets)
        self.dwt = DWT2d(wavelet, len(nets))

    def denoise_details(
        self, j: int, noisy: Tensor, coarse: Tensor, sigma: Tensor | float | None = None
    ) -> Tensor:
        """Denoised details of scale j given the (clean or denoised) coarse field x_j (sigma:
        the noise level, for networks with ``noise_input``)."""
        return noisy - self.nets[j - 1](torch.cat([noisy, coarse], 1), sigma)

    @torch.no_grad()
    def forward(self, y: Tensor, sigma: Tensor | float | None = None) -> Tensor:
        """The denoised full image; white noise of level sigma in pixels has the same level on
        every orthogonal wavelet coefficient, so every network gets the same sigma."""
        low, dets = self.dwt(y)
        x = low - self.low(low, sigma)
        for j in range(len(self.nets), 0, -1):
            x = self.dwt.inverse_level(x, self.denoise_details(j, dets[j - 1], x, sigma))
        return x


def train_multiscale(
    x: Tensor,
    rf: int,
    levels: int,
    steps: int,
    batch: int,
    sigma_max: float,
    width: int = 16,
    depth: int | None = None,
    lr: float = 2e-3,
    seed: int = 0,
    wavelet: str = "haar",
    low_rf: int | None = None,
    augment: bool = True,
    sigma_min: float = 0.0,
    noise_input: bool = False,
) -> MultiscaleDenoiser:
    """The conditional networks (receptive field rf, trained on the clean coarse field) and the
    coarsest low-pass network (receptive field ``low_rf``, default: the whole coarse field)."""
    check_size(x.shape[-1], levels)
    dwt = DWT2d(wavelet, levels)
    n_low = x.shape[-1] >> levels
    low_rf = coarse_rf(n_low) if low_rf is None else check_rf(low_rf)
    nets = []
    for j in range(1, levels + 1):
        torch.manual_seed(seed + j)
        g = torch.Generator().manual_seed(seed + j)
        net = LocalDenoiser(rf, 4, 3, width, depth, noise_input)

        def pair(j: int = j, g: torch.Generator = g) -> tuple[Tensor, Tensor, Tensor]:
            b = _batch(x, batch, g, augment)
            for _ in range(j - 1):
                b = dwt.forward_level(b)[0]
            low, det = dwt.forward_level(b)
            sig = _sigmas(batch, sigma_max, g, sigma_min)
            noise = sig * torch.randn(det.shape, generator=g)
            return torch.cat([det + noise, low], 1), noise, sig

        nets.append(train_net(net, pair, steps, lr))
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    low_net = LocalDenoiser(low_rf, 1, 1, width, depth, noise_input)

    def pair_low() -> tuple[Tensor, Tensor, Tensor]:
        b = dwt(_batch(x, batch, g, augment))[0]
        sig = _sigmas(batch, sigma_max, g, sigma_min)
        noise = sig * torch.randn(b.shape, generator=g)
        return b + noise, noise, sig

    low_net = train_net(low_net, pair_low, steps, lr)
    return MultiscaleDenoiser(low_net, nets, wavelet).eval()


def band_errors(est: Tensor, x: Tensor, levels: int, wavelet: str = "haar") -> dict[str, float]:
    """Squared error of est against x per pixel, split over the orthogonal wavelet bands:
    {"low": ..., "j=1": ..., ..., "j=J": ..., "total": ...}; the bands sum to the total."""
    dwt = DWT2d(wavelet, levels)
    n = x[0].numel()
    lo_e, det_e = dwt(est.double())
    lo_x, det_x = dwt(x.double())
    out = {"low": float((lo_e - lo_x).pow(2).sum() / (x.shape[0] * n))}
    for j, (a, b) in enumerate(zip(det_e, det_x, strict=True), 1):
        out[f"j={j}"] = float((a - b).pow(2).sum() / (x.shape[0] * n))
    out["total"] = float((est.double() - x.double()).pow(2).mean())
    return out


def psnr(mse: float, peak: float = 1.0) -> float:
    """10 log10(peak^2 / mse) (dB)."""
    return 10 * math.log10(peak**2 / max(mse, 1e-30))


@torch.no_grad()
def noisy_copy(x: Tensor, sigma: float, seed: int = 1) -> Tensor:
    """x + sigma z with a fixed noise draw (the same for every model)."""
    g = torch.Generator().manual_seed(seed)
    return x + sigma * torch.randn(x.shape, generator=g)


@torch.no_grad()
def oracle_detail_mse(
    model: MultiscaleDenoiser, x: Tensor, sigma: float, j: int = 1, seed: int = 1
) -> float:
    """Error per pixel of the scale-j details denoised given the *clean* coarse field x_j (the
    conditional network's own task), in the units of ``band_errors``."""
    g = torch.Generator().manual_seed(seed)
    b = x
    for _ in range(j - 1):
        b = model.dwt.forward_level(b)[0]
    low, det = model.dwt.forward_level(b)
    est = model.denoise_details(j, det + sigma * torch.randn(det.shape, generator=g), low, sigma)
    return float((est - det).double().pow(2).sum() / (x.shape[0] * x[0].numel()))


@torch.no_grad()
def wiener_mse(train: Tensor, test: Tensor, sigma: float, seed: int = 1) -> float:
    """Error per pixel of the global linear (Wiener) filter P(k) / (P(k) + sigma^2), P the
    power spectrum of the training fields, on ``noisy_copy(test, sigma, seed)``: the best
    translation-invariant linear denoiser (for a stationary field), a reference line."""
    n = train.shape[-1] * train.shape[-2]
    power = torch.fft.fft2(train.double()).abs().pow(2).mean(0) / n
    y = noisy_copy(test, sigma, seed).double()
    est = torch.fft.ifft2(torch.fft.fft2(y) * power / (power + sigma**2)).real
    return float((est - test.double()).pow(2).mean())


@torch.no_grad()
def stochastic_ascent(
    denoise: Callable[[Tensor], Tensor],
    y0: Tensor,
    h0: float = 0.01,
    beta: float = 0.5,
    sigma_end: float = 0.01,
    max_steps: int = 1000,
    generator: torch.Generator | None = None,
    grow: float = 2.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Sample the prior implicit in a blind denoiser: Kadkhodaie & Simoncelli (NeurIPS 2021),
    Algorithm 1 (stochastic coarse-to-fine gradient ascent), each field of the batch on its
    own noise estimate.

    With d = denoise(y) - y (proportional to sigma^2 grad log p_sigma(y)) and
    sigma_t = abs(d) / sqrt(n): y <- y + h_t d + gamma_t z, h_t = h0 t / (1 + h0 (t - 1)),
    gamma_t^2 = ((1 - beta h_t)^2 - (1 - h_t)^2) sigma_t^2, so the effective noise shrinks by
    a factor (1 - beta h_t) per step (beta = 1: no injected noise). A field stops once
    sigma_t < sigma_end, after max_steps, or once sigma_t has grown to ``grow`` times its
    smallest value: a denoiser trained briefly amplifies some directions once the noise is
    below what it can remove (its floor), and the ascent then diverges geometrically.
    Returns (denoise(y) of the last iterate, steps taken per field, last sigma_t per field).
    """
    y = y0.clone()
    n = y[0].numel()
    active = torch.ones(y.shape[0], dtype=torch.bool)
    steps = torch.zeros(y.shape[0], dtype=torch.long)
    sigma = torch.full((y.shape[0],), float("inf"))
    lowest = sigma.clone()
    view = (-1,) + (1,) * (y.dim() - 1)
    for t in range(1, max_steps + 1):
        h = h0 * t / (1 + h0 * (t - 1))
        d = denoise(y) - y
        sigma = torch.where(active, d.flatten(1).norm(dim=1) / math.sqrt(n), sigma)
        lowest = torch.minimum(lowest, sigma)
        active &= (sigma >= sigma_end) & (sigma < grow * lowest)
        if not active.any():
            break
        gamma = math.sqrt(max((1 - beta * h) ** 2 - (1 - h) ** 2, 0.0)) * sigma
        z = torch.randn(y.shape, generator=generator, dtype=y.dtype)
        step = h * d + gamma.view(view) * z
        y = y + torch.where(active.view(view), step, torch.zeros_like(step))
        steps += active.long()
    return denoise(y), steps, sigma


Denoise = Callable[[Tensor, "float | None"], Tensor]  # (y, sigma) -> x_hat
Draw = Callable[[Denoise, Tensor], tuple[Tensor, Tensor, Tensor]]  # (denoise, y0) -> x, ...


def geometric_sigmas(sigma0: float, sigma_end: float, steps: int) -> list[float]:
    """steps + 1 noise levels from sigma0 down to sigma_end, evenly spaced in log sigma."""
    r = (sigma_end / sigma0) ** (1 / steps)
    return [sigma0 * r**k for k in range(steps + 1)]


@torch.no_grad()
def ancestral(
    denoise: Denoise, y0: Tensor, sigmas: list[float], generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Ancestral sampling down a decreasing noise schedule with a denoiser that is told the
    noise level, x_hat = denoise(y, sigma) (Tweedie: x_hat - y = sigma^2 grad log p_sigma):
    y <- y + (1 - r) (x_hat - y) + sigma' sqrt(1 - r) z, r = sigma'^2 / sigma^2, the step of
    the variance-exploding reverse diffusion from sigma to sigma' (y0 at level sigmas[0]).
    Returns (denoise(y, sigmas[-1]), steps per field, sigmas[-1] per field), as
    ``stochastic_ascent``."""
    y = y0.clone()
    for s, s_next in zip(sigmas[:-1], sigmas[1:], strict=True):
        r = (s_next / s) ** 2
        z = torch.randn(y.shape, generator=generator, dtype=y.dtype)
        y = y + (1 - r) * (denoise(y, s) - y) + s_next * math.sqrt(1 - r) * z
    n = y.shape[0]
    steps = torch.full((n,), len(sigmas) - 1, dtype=torch.long)
    return denoise(y, sigmas[-1]), steps, torch.full((n,), sigmas[-1])


def make_draw(
    noise_input: bool,
    sigma0: float,
    sigma_end: float = 0.01,
    steps: int = 200,
    h0: float = 0.01,
    beta: float = 0.5,
    max_steps: int = 1000,
    generator: torch.Generator | None = None,
) -> Draw:
    """The sampler of a denoiser: ``ancestral`` on ``geometric_sigmas(sigma0, sigma_end,
    steps)`` when the networks take the noise level (noise_input), else the blind
    ``stochastic_ascent`` (h0, beta, sigma_end, max_steps)."""
    if noise_input:
        sigmas = geometric_sigmas(sigma0, sigma_end, steps)
        return lambda denoise, y0: ancestral(denoise, y0, sigmas, generator)
    return lambda denoise, y0: stochastic_ascent(
        lambda y: denoise(y, None), y0, h0, beta, sigma_end, max_steps, generator
    )


def flat_denoiser(net: LocalDenoiser) -> Denoise:
    """(y, sigma) -> y - f(y[, sigma]) of a flat network (sigma unused by a blind one)."""
    return lambda y, sigma=None: y - net(y, sigma)


def initial_noise(
    n: int, like: Tensor, sigma0: float, generator: torch.Generator | None, match: bool
) -> Tensor:
    """n starting fields shaped like the data ``like`` (N, C, h, w): mean + sd z, sd = sigma0
    (the blind ascent's start, the authors'), or, with match, sqrt(sigma0^2 + var) (the law
    of the data at noise level sigma0 to second order: the start of the reverse diffusion)."""
    mean, var = float(like.mean()), float(like.var())
    sd = math.sqrt(sigma0**2 + var) if match else sigma0
    return mean + sd * torch.randn(n, *like.shape[1:], generator=generator)


@torch.no_grad()
def sample_multiscale(
    model: MultiscaleDenoiser,
    train: Tensor,
    n: int,
    draw: Draw,
    sigma0: float = 1.0,
    generator: torch.Generator | None = None,
    match: bool = False,
) -> tuple[Tensor, dict[str, tuple[Tensor, Tensor]]]:
    """n fields shaped like ``train`` (N, 1, L, L) drawn coarse to fine (Kadkhodaie, Guth,
    Mallat & Simoncelli 2023, Algorithm 1): the coarsest low-pass x_J with the low-pass
    network, then for j = J .. 1 the details xbar_j with the conditional network given the
    generated x_j, and x_{j-1} = W^T (x_j, xbar_j); each by ``draw`` (``make_draw``) from
    ``initial_noise`` of that band of the training fields. Returns the fields and
    {"low", "j=J", .., "j=1"}: (steps taken, last sigma) per field."""
    levels = len(model.nets)
    low, dets = model.dwt(train)
    x, steps, sig = draw(flat_denoiser(model.low), initial_noise(n, low, sigma0, generator, match))
    taken = {"low": (steps, sig)}
    for j in range(levels, 0, -1):
        coarse = x
        y0 = initial_noise(n, dets[j - 1], sigma0, generator, match)
        if not match:  # the blind ascent starts the details from sigma0 z (no mean)
            y0 = y0 - float(dets[j - 1].mean())
        det, steps, sig = draw(lambda y, s, j=j, c=coarse: model.denoise_details(j, y, c, s), y0)
        taken[f"j={j}"] = (steps, sig)
        x = model.dwt.inverse_level(coarse, det)
    return x, taken
