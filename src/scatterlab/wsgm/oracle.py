"""Exact scores for stationary Gaussian fields: WSGM and SGM with oracle "networks".

With the exact score, the only error left in a sample is the time discretisation of the
sampler, which is what the WSGM claim is about (Guth et al. prove it for Gaussian fields).
For a field with power spectrum P(k) (E|fft2(x)(k)|^2 / L^2, a (L, L) tensor):

* SGM: in Fourier, eps(z_t, t) = sigma_t z_t(k) / (a^2 P_z(k) + sigma_t^2), a = e^{-t},
  sigma_t^2 = 1 - a^2, P_z the spectrum of the standardised field.
* WSGM: one DWT level maps a stationary field on an n x n grid to a stationary 4-channel field
  (low-pass A, details D) on the n/2 grid; its 4 x 4 cross-spectrum S(kappa) is computed
  numerically from the transform itself. Given A, the standardised details are Gaussian with
  mean mu(kappa) = S_DA S_AA^{-1} A(kappa) and covariance Sigma(kappa) = S_DD - S_DA S_AA^{-1}
  S_AD (per coarse frequency, standardised), so eps = sigma_t (a^2 Sigma + sigma_t^2 I)^{-1}
  (z_t - a mu). The low-pass spectrum S_AA feeds the next level.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
from torch import Tensor, nn

from scatterlab.ranges import Positive, PositiveInt, Range
from scatterlab.wsgm._errors import ConfigError
from scatterlab.wsgm.diffusion import SGM, WSGM, ScoreModel, _levels_to
from scatterlab.wsgm.dwt import DWT2d
from scatterlab.wsgm.phi4 import gaussian_spectrum


def _coefs(t: Tensor) -> tuple[float, float]:
    a = float(torch.exp(-t.reshape(-1)[0].double()))
    return a, (1 - a * a) ** 0.5


class _Oracle(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()), requires_grad=False)  # device/dtype probe


class SpectralOracle(_Oracle):
    """Exact eps for a zero-mean stationary field with spectrum ``spec`` (m, m), 1 channel."""

    def __init__(self, spec: Tensor) -> None:
        super().__init__()
        self.register_buffer("spec", spec.double())

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        a, s = _coefs(t)
        xf = torch.fft.fft2(x.double())
        return torch.fft.ifft2(s * xf / (a * a * self.spec + s * s)).real.to(x.dtype)


class ConditionalOracle(_Oracle):
    """Exact eps for standardised details (B, 3, m, m) given the standardised low-pass."""

    def __init__(self, S: Tensor, std_low: float, std_det: Tensor) -> None:
        super().__init__()
        S = S.permute(2, 3, 0, 1)  # (m, m, 4, 4)
        saa = S[..., :1, :1]
        sda = S[..., 1:, :1]
        gain = sda / saa  # (m, m, 3, 1): E[D | A] = gain * A
        sigma = S[..., 1:, 1:] - sda @ S[..., :1, 1:] / saa  # (m, m, 3, 3)
        inv = 1 / std_det.to(torch.complex128)
        self.register_buffer("gain", gain[..., 0] * std_low * inv)  # z_A -> z_D mean
        self.register_buffer("sigma", inv[:, None] * sigma * inv[None, :])
        self.register_buffer("eye", torch.eye(3, dtype=torch.complex128))

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        a, s = _coefs(t)
        xf = torch.fft.fft2(x.double()).permute(0, 2, 3, 1)  # (B, m, m, 3)
        af = torch.fft.fft2(cond.double())[:, 0]  # (B, m, m)
        r = xf - a * self.gain * af[..., None]
        m = a * a * self.sigma + s * s * self.eye
        eps = s * torch.linalg.solve(m, r[..., None])[..., 0]
        return torch.fft.ifft2(eps.permute(0, 3, 1, 2)).real.to(x.dtype)


def level_cross_spectrum(dwt: DWT2d, spec: Tensor) -> Tensor:
    """4 x 4 cross-spectrum (4, 4, n/2, n/2) of [low, details] for a field of spectrum spec."""
    n = spec.shape[-1]
    m = n // 2
    R = torch.zeros(4, 4, m, m, dtype=torch.float64)
    for b in range(4):
        c = torch.zeros(1, 4, m, m, dtype=torch.float64)
        c[0, b, 0, 0] = 1.0
        v = dwt.inverse_level(c[:, :1], c[:, 1:])  # synthesis atom of coefficient (b, 0)
        cv = torch.fft.ifft2(torch.fft.fft2(v) * spec).real  # covariance times atom
        low, det = dwt.forward_level(cv)
        R[:, b] = torch.cat([low, det], dim=1)[0]  # Cov(c_a(u), c_b(0))
    return torch.fft.fft2(R)


def oracle_sgm(spec: Tensor, T: float = 5.0, variance: str = "large") -> SGM:
    """SGM whose network is the exact score of the Gaussian field with spectrum spec (L, L)."""
    size = spec.shape[-1]
    model = SGM(
        size=size,
        channels=1,
        net={"base_channels": 8, "channel_mult": [1]},
        T=T,
        variance=variance,
        eps_skip=False,  # the oracle returns the full eps
    )
    var = float(spec.double().mean())  # pixel variance
    model.norm.std.fill_(var**0.5)
    model.net = SpectralOracle(spec / var)
    return model


def oracle_wsgm(
    spec: Tensor, levels: int, wavelet: str = "haar", T: float = 5.0, variance: str = "large"
) -> WSGM:
    """WSGM whose per-scale networks are the exact (conditional) scores of the Gaussian field."""
    size = spec.shape[-1]
    model = WSGM(
        size=size,
        channels=1,
        levels=levels,
        wavelet=wavelet,
        net={"base_channels": 8, "channel_mult": [1]},
        T=T,
        variance=variance,
        eps_skip=False,
    )
    nets: list[nn.Module] = [nn.Identity()] * (levels + 1)
    p = spec.double()
    for j in range(1, levels + 1):
        S = level_cross_spectrum(model.dwt, p)
        var = torch.stack([S[i, i].real.mean() for i in range(4)])  # channel variances
        std = var.sqrt()
        model.low_norms[j - 1].std.fill_(float(std[0]))
        model.detail_norms[j - 1].std.copy_(std[1:].view(1, 3, 1, 1).float())
        nets[j] = ConditionalOracle(S, float(std[0]), std[1:])
        p = S[0, 0].real
    nets[0] = SpectralOracle(p / float(p.mean()))
    model.nets = nn.ModuleList(nets)
    return model


def gaussian_oracle(
    kind: Literal["wsgm", "sgm"],
    size: Annotated[int, Range(ge=2)],
    beta: Positive = 0.68,
    mass2: Positive = 0.1,
    mass2_L: Positive | None = None,
    coarsest: PositiveInt = 8,
    wavelet: str = "haar",
    T: Positive = 5.0,
    variance: Literal["large", "small"] = "large",
) -> ScoreModel:
    """``oracle_wsgm`` (kind "wsgm", J = log2(size / coarsest)) or ``oracle_sgm`` (kind "sgm")
    for the mass-term Gaussian field P(k) = 1 / (beta lambda(k) + 2 mass2) on a size^2 lattice:
    the config entry of the exact-score study (``model=oracle``, ``train=false``).
    ``mass2_L``, when set, gives mass2 = mass2_L (2 pi / size)^2 (as ``data.mass2_L``)."""
    if mass2_L is not None:
        mass2 = mass2_L * (2 * math.pi / size) ** 2
    spec = gaussian_spectrum(size, beta, mass2)
    if kind == "wsgm":
        return oracle_wsgm(spec, _levels_to(size, coarsest), wavelet, T, variance)
    if kind == "sgm":
        return oracle_sgm(spec, T, variance)
    raise ConfigError(f"unknown model.kind {kind!r}: use 'wsgm' or 'sgm'")


gaussian_oracle.CONFIG_CHECKS = (  # type: ignore[attr-defined]
    (
        "kind == 'sgm' or (coarsest < size and size % coarsest == 0 "
        "and (size // coarsest) & (size // coarsest - 1) == 0)",
        "give model.coarsest a size / 2^J below model.size (e.g. 8 for sizes 16..128)",
    ),
)
