"""Orthogonal periodic 2D discrete wavelet transform in plain torch.

Convention (one level, along one axis of even length N, filters of length K taken from
PyWavelets' reconstruction filters ``rec_lo``/``rec_hi`` of an orthogonal wavelet):

    a[n] = sum_k rec_lo[k] x[(2n + k + s) mod N],    d[n] = sum_k rec_hi[k] x[(2n + k + s) mod N]

with the decimation phase s = 1 - K/2. This is exactly PyWavelets' ``mode="periodization"``
(``pywt.dwt``/``pywt.wavedec2``, which the authors' code uses): pywt convolves with
dec_lo = rec_lo reversed and keeps the odd samples of the periodised output, which is the
correlation above shifted by K/2 - 1 samples (s = 0 for Haar, -1 for db2, -3 for db4).
The rows of this analysis operator form an orthonormal basis of R^N, so the synthesis operator
(its transpose) is the exact inverse. The 2D transform applies the 1D one along W then H.
Detail channels are ordered orientation-major: for a (B, C, H, W) input the (B, 3C, H/2, W/2)
detail tensor holds [LH (horizontal edges), HL (vertical edges), HH (diagonal)] blocks of C
channels each, mirroring the authors' psiH(RGB), psiV(RGB), psiD(RGB) layout.
"""

from __future__ import annotations

import pywt
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scatterlab.wsgm._errors import ConfigError


def wavelet_filters(name: str) -> tuple[Tensor, Tensor]:
    """Return (rec_lo, rec_hi) float64 taps of an orthogonal PyWavelets wavelet.

    Raises ConfigError for unknown or non-orthogonal wavelets.
    """
    try:
        w = pywt.Wavelet(name)
    except ValueError as exc:
        raise ConfigError(
            f"unknown wavelet {name!r}: use an orthogonal PyWavelets name such as "
            "'haar', 'db2' or 'db4'"
        ) from exc
    if not w.orthogonal:
        raise ConfigError(f"wavelet {name!r} is not orthogonal: use 'haar', 'db2' or 'db4'")
    lo = torch.tensor(w.rec_lo, dtype=torch.float64)
    hi = torch.tensor(w.rec_hi, dtype=torch.float64)
    # pywt flags 'dmey' orthogonal, but its 62 taps truncate the Meyer filter (sum of squares
    # 1.0022): its transform has no exact inverse, which WSGM's cascade relies on.
    if abs(float(lo.pow(2).sum()) - 1.0) > 1e-8 or lo.numel() % 2:
        raise ConfigError(
            f"wavelet {name!r} is only approximately orthogonal (truncated filter): "
            "use 'haar', 'dbN', 'symN' or 'coifN'"
        )
    return lo, hi


def check_size(size: int, levels: int) -> None:
    """Raise ConfigError unless ``size`` is divisible by 2**levels (levels >= 0)."""
    if levels < 0:
        raise ConfigError(f"number of wavelet levels J must be >= 0, got {levels}")
    if size % (2**levels) != 0 or size < 2**levels:
        raise ConfigError(
            f"lattice/image size {size} is not divisible by 2^J = {2**levels} (J={levels}): "
            f"choose J <= {_max_levels(size)} or a size that is a multiple of {2**levels}"
        )


def _max_levels(size: int) -> int:
    j = 0
    while size % 2 == 0 and size > 1:
        size //= 2
        j += 1
    return j


class DWT2d(nn.Module):
    """Batched orthogonal periodic 2D DWT with J levels (device- and dtype-agnostic).

    ``forward(x)`` with x of shape (B, C, H, W) returns ``(low, details)`` where low is the
    coarsest low-pass (B, C, H/2^J, W/2^J) and details is a list of J tensors, details[j-1] of
    shape (B, 3C, H/2^j, W/2^j) (finest first). ``inverse(low, details)`` is the exact inverse.
    """

    def __init__(self, wavelet: str = "haar", levels: int = 1) -> None:
        super().__init__()
        if levels < 0:
            raise ConfigError(f"number of wavelet levels J must be >= 0, got {levels}")
        lo, hi = wavelet_filters(wavelet)
        self.wavelet = wavelet
        self.levels = levels
        # (2, 1, K): analysis bank [lo, hi] used as a cross-correlation.
        self.register_buffer("bank", torch.stack([lo, hi])[:, None, :], persistent=False)
        # Decimation phase s = 1 - K/2 of PyWavelets' periodization (module docstring).
        self.phase = 1 - lo.numel() // 2

    # ---- one level, along the last axis -------------------------------------------------
    def _analysis_1d(self, x: Tensor) -> Tensor:
        """(M, N) -> (M, 2, N/2): [low, high] along the last axis (periodic)."""
        k = self.bank.shape[-1]
        n = x.shape[-1]
        # Periodic extension read from the decimation phase s = 1 - K/2 (pywt's periodization);
        # the modulo also handles K - 1 > N (tiny sizes, several wraps).
        idx = (torch.arange(n + k - 1, device=x.device) + self.phase) % n
        return F.conv1d(x[:, None, idx], self.bank.to(x.dtype), stride=2)

    def _synthesis_1d(self, y: Tensor) -> Tensor:
        """(M, 2, N/2) -> (M, N): adjoint (= inverse) of ``_analysis_1d``."""
        k = self.bank.shape[-1]
        m, _, half = y.shape
        n = 2 * half
        up = y.new_zeros(m, 2, n)
        up[..., ::2] = y
        # x[i] = sum_k rec[k] up[(i - s - k) mod N]: correlate a periodic extension (starting
        # K - 1 + s samples to the left) with the flipped filters, summing over the two bands.
        idx = (torch.arange(n + k - 1, device=y.device) - (k - 1) - self.phase) % n
        w = self.bank.to(y.dtype).flip(-1).transpose(0, 1)  # (1, 2, K)
        return F.conv1d(up[..., idx], w)[:, 0]

    # ---- one level, 2D --------------------------------------------------------------------
    def forward_level(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """One level: (B, C, H, W) -> low (B, C, H/2, W/2), details (B, 3C, H/2, W/2)."""
        b, c, h, w = x.shape
        if h % 2 or w % 2:
            raise ConfigError(f"DWT needs even spatial sizes, got {h}x{w}")
        yw = self._analysis_1d(x.reshape(-1, w)).reshape(b, c, h, 2, w // 2)
        yw = yw.permute(0, 1, 3, 4, 2).reshape(-1, h)  # rows along H
        yh = self._analysis_1d(yw).reshape(b, c, 2, w // 2, 2, h // 2)
        # axes: (b, c, band_w, w', band_h, h') -> (b, band_h, band_w, c, h', w')
        yh = yh.permute(0, 4, 2, 1, 5, 3)
        low = yh[:, 0, 0]
        details = torch.cat([yh[:, 1, 0], yh[:, 0, 1], yh[:, 1, 1]], dim=1)
        return low, details

    def inverse_level(self, low: Tensor, details: Tensor) -> Tensor:
        """Inverse of ``forward_level``."""
        b, c, h2, w2 = low.shape
        lh, hl, hh = details.reshape(b, 3, c, h2, w2).unbind(1)
        # (b, band_h, band_w, c, h', w')
        y = torch.stack([torch.stack([low, hl], 1), torch.stack([lh, hh], 1)], 1)
        y = y.permute(0, 3, 2, 5, 1, 4)  # (b, c, band_w, w', band_h, h')
        xh = self._synthesis_1d(y.reshape(-1, 2, h2))  # (b*c*2*w2, H)
        xh = xh.reshape(b, c, 2, w2, 2 * h2).permute(0, 1, 4, 2, 3).reshape(-1, 2, w2)
        return self._synthesis_1d(xh).reshape(b, c, 2 * h2, 2 * w2)

    # ---- J levels -------------------------------------------------------------------------
    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """(B, C, H, W) -> (low_J, [details_1, ..., details_J]) (finest first)."""
        check_size(x.shape[-1], self.levels)
        check_size(x.shape[-2], self.levels)
        details = []
        low = x
        for _ in range(self.levels):
            low, d = self.forward_level(low)
            details.append(d)
        return low, details

    def inverse(self, low: Tensor, details: list[Tensor]) -> Tensor:
        """Exact inverse of ``forward``."""
        x = low
        for d in reversed(details):
            x = self.inverse_level(x, d)
        return x

    def lowpass_pyramid(self, x: Tensor) -> list[Tensor]:
        """[x_0 = x, x_1, ..., x_J]: the low-pass images at every scale."""
        out = [x]
        for _ in range(self.levels):
            out.append(self.forward_level(out[-1])[0])
        return out
