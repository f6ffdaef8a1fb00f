"""Learned scattering networks (phase collapse): blocks ``W rho Std P N``.

Each block applies a fixed one-scale wavelet transform W, a non-linearity rho on the wavelet
coefficients (the complex modulus collapses their phase), a standardization without affine
parameters, a learned 1x1 channel matrix P (complex by default, no bias) and a per-pixel L2
normalization over channels. Only P and the classifier are learned.

Complex activations use the split layout (docs/design.md): a real tensor (B, n + m, H, W) whose
first n channels are real parts and last m channels the imaginary parts of the first m
channels. Real-valued channels (moduli, real inputs) so carry no zero imaginary part: this
halves the work of P on them and keeps every op real (bf16, channels_last, compile all work).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scatterlab.errors import ConfigError
from scatterlab.models.filters import filter_bank
from scatterlab.ranges import NonNegativeInt, PositiveInt, Range, WidthMultiplier

NONLINEARITIES = ("modulus", "soft_threshold", "relu", "tanh", "identity")


def split(x: Tensor, m: int) -> tuple[Tensor, Tensor]:
    """Split layout (B, n + m, H, W) -> real parts (B, n, ...), imaginary parts (B, m, ...)."""
    n = x.shape[1] - m
    return x[:, :n], x[:, n:]


def as_complex(x: Tensor, m: int) -> Tensor:
    """Split layout with m complex channels -> complex tensor (B, n, H, W) (imag 0 past m)."""
    re, im = split(x, m)
    im = F.pad(im, (0, 0, 0, 0, 0, re.shape[1] - m))
    return torch.complex(re.float(), im.float())


class Wavelet(nn.Module):
    """Fixed one-scale wavelet transform W x = (x * phi, x * psi_theta), subsampled or not.

    Input (B, n + m, H, W) in split layout; odd sizes are cropped to even first, so the
    output is (H // 2, W // 2) with subsampling and (H - H % 2, W - W % 2) without.
    Returns (low, high_re, high_im): low (B, n + m, H', W') in the input's layout, and the
    real and imaginary parts (B, n * L, H', W') of the n * L complex wavelet coefficients.

    Maps of at most `matmul_max_pixels` pixels are filtered by one matrix product with the
    (H W, (1 + 2L) H' W') matrix of the padded, strided convolution: a dense GEMM does
    ~H W / 49 times the multiply-adds of the 7x7 filtering but runs 2-30x faster than a
    depthwise convolution (whose backward is especially slow) on these sizes. The matrix for
    `size` x `size` inputs is built once as a buffer; other sizes are built on first use.
    `complex_input`: the block's inputs are all complex (see `complex_coefficients`).
    """

    def __init__(
        self,
        L: int,
        kind: str = "morlet",
        subsample: bool = True,
        size: int | None = None,
        matmul_max_pixels: int = 1024,
        complex_input: bool = False,
    ) -> None:
        super().__init__()
        self.L, self.kind, self.subsample = L, kind, subsample
        self.matmul_max_pixels = matmul_max_pixels
        self.register_buffer("filters", filter_bank(kind, L)[:, None], persistent=False)
        self._matrices: dict[tuple[int, int, bool], Tensor] = {}
        self.register_buffer("matrix", None, persistent=False)
        self.register_buffer("complex_matrix", None, persistent=False)
        if size is not None and size * size <= matmul_max_pixels:
            size -= size % 2
            # complex inputs use only the complex matrix (see complex_coefficients)
            name = "complex_matrix" if complex_input else "matrix"
            mat = self.build_matrix(size, size, complex_input)
            self.register_buffer(name, mat, persistent=False)

    def _convolve(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, C, 1 + 2L, H', W') by padding and a depthwise convolution."""
        N, C = x.shape[:2]
        pad = self.filters.shape[-1] // 2
        # Reflection needs pad < size; tiny maps (the last blocks) fall back to replication.
        mode = "reflect" if pad < min(x.shape[-2:]) else "replicate"
        y = F.pad(x, (pad,) * 4, mode=mode)
        weight = self.filters.to(y.dtype).repeat(C, 1, 1, 1)
        y = F.conv2d(y, weight, stride=2 if self.subsample else 1, groups=C)
        return y.view(N, C, -1, *y.shape[-2:])

    def build_matrix(self, H: int, W: int, complex_input: bool = False) -> Tensor:
        """The transform of one (H, W) map as a float32 matrix.

        Real input: (H W, (1 + 2L) P) with P = H' W', columns [x * phi, x * Re psi_l,
        x * Im psi_l]. Complex input z = a + ib: (2 H W, 2 (1 + L) P), rows [a, b], columns
        [Re(z * phi), Re(z * psi_l), Im(z * phi), Im(z * psi_l)]: the complex products are
        part of the GEMM.
        """
        eye = torch.eye(H * W, dtype=torch.float64, device=self.filters.device)
        with torch.no_grad():
            t = self._convolve(eye.view(H * W, 1, H, W)).flatten(1)
        if complex_input:
            P = t.shape[1] // (1 + 2 * self.L)
            low, re, im = t.split([P, self.L * P, self.L * P], 1)
            zero = torch.zeros_like(low)
            t = torch.cat([torch.cat([low, re, zero, im], 1), torch.cat([zero, -im, low, re], 1)])
        return t.float().contiguous()

    def _matrix_for(self, H: int, W: int, complex_input: bool = False) -> Tensor:
        built = self.complex_matrix if complex_input else self.matrix
        if built is not None and built.shape[0] == H * W * (1 + complex_input):
            return built
        key = (H, W, complex_input)
        if key not in self._matrices or self._matrices[key].device != self.filters.device:
            self._matrices[key] = self.build_matrix(H, W, complex_input)
        return self._matrices[key]

    def batch_last_matrix(self, H: int, W: int, dtype: torch.dtype) -> Tensor:
        """The complex-input matrix (2 H W, 2 (1 + L) P) in `dtype` (cached)."""
        mat = self._matrix_for(H, W, complex_input=True)
        if dtype == mat.dtype:
            return mat
        key = (H, W, str(dtype))
        cached = self._matrices.get(key)  # type: ignore[call-overload]
        if cached is None or cached.device != mat.device:
            cached = self._matrices[key] = mat.to(dtype)  # type: ignore[index]
        return cached

    def complex_coefficients(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """W z for complex input only: (B, 2n, H, W) split layout (n complex channels) ->
        (re, im), each (B, n, 1 + L, H', W'): [z * phi, z * psi_1..L] per channel."""
        B, C, H, W = x.shape
        n, L = C // 2, self.L
        x = x[..., : H - H % 2, : W - W % 2]
        H, W = x.shape[-2:]
        Ho, Wo = (H // 2, W // 2) if self.subsample else (H, W)
        pixels = H * W
        if pixels > self.matmul_max_pixels:
            low, high_re, high_im = self(x, n)
            low_re, low_im = split(low, n)
            re = torch.cat([low_re[:, :, None], high_re.view(B, n, L, Ho, Wo)], 2)
            im = torch.cat([low_im[:, :, None], high_im.view(B, n, L, Ho, Wo)], 2)
            return re, im
        mat = self._matrix_for(H, W, complex_input=True)
        mat = mat if torch.is_autocast_enabled(x.device.type) else mat.to(x.dtype)
        # rows (channel, [re, im] pixels): one copy of the (small) input
        z = x.reshape(B, 2, n, pixels).transpose(1, 2).reshape(B * n, 2 * pixels)
        y = (z @ mat).view(B, n, 2, 1 + L, Ho, Wo)
        return y[:, :, 0], y[:, :, 1]

    def forward(self, x: Tensor, m: int) -> tuple[Tensor, Tensor, Tensor]:
        B, C, H, W = x.shape
        n, L = C - m, self.L
        x = x[..., : H - H % 2, : W - W % 2]
        H, W = x.shape[-2:]
        pixels = H * W
        if pixels <= self.matmul_max_pixels:
            Ho, Wo = (H // 2, W // 2) if self.subsample else (H, W)
            mat = self._matrix_for(H, W)
            x = x.reshape(B * C, pixels)
            # autocast runs the product in its dtype; otherwise follow the input's dtype
            mat = mat if torch.is_autocast_enabled(x.device.type) else mat.to(x.dtype)
            y = (x @ mat).view(B, C, 1 + 2 * L, Ho, Wo)
        else:
            y = self._convolve(x)
        # split (not slicing) so that backward concatenates gradients instead of adding each
        # slice's gradient into a zero tensor of the full size
        low, psi_re, psi_im = y.split([1, L, L], dim=2)
        # channels: real parts of the m complex ones, the n - m real ones, imaginary parts
        a_re, x_re, b_re = psi_re.split([m, n - m, m], dim=1)
        a_im, x_im, b_im = psi_im.split([m, n - m, m], dim=1)
        # (a + ib) * (psi_r + i psi_i) = (a*psi_r - b*psi_i) + i (a*psi_i + b*psi_r)
        if m == 0:  # real input (the first block, real P_j)
            high_re, high_im = x_re, x_im
        elif m == n:  # complex input: no concatenation (a copy) needed
            high_re, high_im = a_re - b_im, a_im + b_re
        else:
            high_re, high_im = torch.cat([a_re - b_im, x_re], 1), torch.cat([a_im + b_re, x_im], 1)
        return low.squeeze(2), high_re.flatten(1, 2), high_im.flatten(1, 2)


class _Modulus(torch.autograd.Function):
    """|re + i im| in one pass (hypot), with gradient (re, im) / |z| and 0 where |z| < 1e-6.

    The composite sqrt(re^2 + im^2) costs five passes forward and about as many backward, on
    the largest tensors of the network.
    """

    @staticmethod
    def forward(ctx, re: Tensor, im: Tensor) -> Tensor:
        mod = torch.hypot(re, im)
        ctx.save_for_backward(re, im, mod)
        return mod

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor]:
        re, im, mod = ctx.saved_tensors
        scale = torch.where(mod > 1e-6, grad / mod, 0.0)
        return re * scale, im * scale


def _modulus(re: Tensor, im: Tensor) -> Tensor:
    """Complex modulus with a finite gradient where both parts vanish."""
    return _Modulus.apply(re, im)


class Nonlinearity(nn.Module):
    """Pointwise rho on c complex channels (re, im) and r real channels x.

    modulus: |z| (phase collapse; complex in, real out); soft_threshold: z ReLU(1 - lambda/|z|)
    with a learned per-channel threshold (init 0.1); relu: ReLU on the real phases, i.e.
    ReLU(Re z) + i ReLU(Im z); tanh: tanh(|z|) z / |z|; identity.
    """

    def __init__(self, kind: str, num_complex: int, num_real: int = 0) -> None:
        super().__init__()
        if kind not in NONLINEARITIES:
            raise ConfigError(
                f"model.nonlinearity={kind!r} is unknown: use one of {', '.join(NONLINEARITIES)}"
            )
        self.kind = kind
        if kind == "soft_threshold":
            self.threshold = nn.Parameter(torch.full((num_complex + num_real,), 0.1))

    @property
    def real_output(self) -> bool:
        return self.kind == "modulus"

    def forward(self, re: Tensor, im: Tensor, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Returns (re, im, real) of the output; modulus returns all channels as real."""
        if self.kind == "identity":
            return re, im, x
        if self.kind == "relu":
            return F.relu(re), F.relu(im), F.relu(x)
        mod = _modulus(re, im)
        if self.kind == "modulus":
            return re[:, :0], im[:, :0], torch.cat([mod, x.abs()], 1)
        if self.kind == "tanh":
            gain = torch.tanh(mod) / mod
            return re * gain, im * gain, torch.tanh(x)
        lam = self.threshold.abs().view(1, -1, 1, 1)
        c = re.shape[1]
        gain = F.relu(1 - lam[:, :c] / mod)
        real_gain = F.relu(1 - lam[:, c:] / x.abs().clamp_min(1e-12))
        return re * gain, im * gain, x * real_gain


class Standardization(nn.Module):
    """Batch standardization without affine parameters, on real and complex channels.

    Input (B, n + m, H, W) in split layout. Each real channel is centred and divided by its
    standard deviation; each complex channel by sqrt(E|z - mu|^2), one scale for both parts.
    running_var holds that variance per real feature (the complex one repeated on both parts).
    """

    def __init__(
        self, num_features: int, num_complex: int, momentum: float = 0.1, eps: float = 1e-5
    ):
        super().__init__()
        self.num_complex, self.momentum, self.eps = num_complex, momentum, eps
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _pool_complex(self, var: Tensor) -> Tensor:
        m = self.num_complex
        if m == 0:
            return var
        n = var.shape[0] - m
        pooled = var[:m] + var[n:]
        return torch.cat([pooled, var[m:n], pooled])

    def statistics(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(mean, 1 / std) per feature: of the batch when training (updating the running
        estimates), the running estimates otherwise."""
        if self.training:
            # statistics in float32 at least (bf16 activations), float64 for double models
            xs = x.to(torch.promote_types(x.dtype, self.running_mean.dtype))
            var, mean = torch.var_mean(xs, dim=(0, 2, 3), correction=0)
            var = self._pool_complex(var)
            with torch.no_grad():
                count = x.numel() / x.shape[1]
                unbiased = var * count / max(count - 1, 1)
                self.running_mean.lerp_(mean, self.momentum)
                self.running_var.lerp_(unbiased, self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        return mean, torch.rsqrt(var + self.eps)

    def forward(self, x: Tensor) -> Tensor:
        mean, scale = self.statistics(x)
        return (x - mean.view(1, -1, 1, 1).to(x.dtype)) * scale.view(1, -1, 1, 1).to(x.dtype)


class Projection(nn.Module):
    """The learned 1x1 channel matrix P (no bias).

    Complex P: weight (2, out, n) holds Re P and Im P; each of the n input channels (real or
    complex) gets one complex weight, so the parameter count is 2 * out * n. It is initialized
    as a random semi-unitary matrix (SVD of a complex Gaussian). Output: out complex channels,
    split layout (B, 2 out, H, W). Real P: weight (out, n + m) on the split features,
    orthogonal init; output (B, out, H, W).
    """

    def __init__(self, in_channels: int, num_complex: int, out_channels: int, complex: bool = True):
        super().__init__()
        self.in_channels, self.num_complex = in_channels, num_complex
        self.out_channels, self.complex = out_channels, complex
        if complex:
            w = _random_semi_unitary(out_channels, in_channels)
            self.weight = nn.Parameter(torch.stack([w.real, w.imag]).contiguous())
        else:
            w = torch.empty(out_channels, in_channels + num_complex)
            self.weight = nn.Parameter(nn.init.orthogonal_(w))

    @property
    def out_complex(self) -> int:
        """Number of complex channels of the output (split layout)."""
        return self.out_channels if self.complex else 0

    def matrix(self) -> Tensor:
        """The real matrix acting on split features: (2 out or out, n + m)."""
        if not self.complex:
            return self.weight
        wr, wi = self.weight
        m = self.num_complex
        return torch.cat([torch.cat([wr, -wi[:, :m]], 1), torch.cat([wi, wr[:, :m]], 1)], 0)

    def forward(self, x: Tensor, mean: Tensor | None = None, scale: Tensor | None = None) -> Tensor:
        """P x, or P ((x - mean) * scale) when given the per-feature statistics of a
        standardization: folded into the weights and a bias, which saves two passes over x
        and the memory of the standardized copy."""
        w = self.matrix()
        if scale is None:
            return F.conv2d(x, w.to(x.dtype)[:, :, None, None])
        w = w * scale
        bias = -(w @ mean)
        return F.conv2d(x, w.to(x.dtype)[:, :, None, None], bias.to(x.dtype))


def _random_semi_unitary(rows: int, cols: int) -> Tensor:
    """Haar-random complex matrix with orthonormal rows (or columns, if rows > cols).

    QR of a complex Gaussian, with the phases of R's diagonal moved into Q so the law is
    uniform; much cheaper than an SVD for the 512 x 9216 matrices of the large models.
    """
    g = torch.randn(max(rows, cols), min(rows, cols), dtype=torch.complex64)
    q, r = torch.linalg.qr(g)
    d = torch.diagonal(r)
    q = q * (d / d.abs().clamp_min(1e-12))
    return q.mH if rows < cols else q


class Normalization(nn.Module):
    """Divides each pixel by the L2 norm of its channels (complex: of the complex vector)."""

    def __init__(self, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        norm = x.float().pow(2).sum(1, keepdim=True).add(self.eps).sqrt()
        return x / norm.to(x.dtype)


# --- The batch-last path of the complex skip blocks (CPU) ------------------------------------
#
# The reference path (ScatteringBlock.forward_reference) runs each block as NCHW tensors:
# W by a GEMM per (image, channel), rho, a concatenation, standardization statistics, a 1x1
# convolution P and the normalization, with autograd saving every intermediate. Most of the
# time outside the GEMMs went to elementwise passes over the largest tensors, and most of the
# memory to their saved copies. The batch-last path keeps activations as (C, H, W, B), where
# P_j is one large GEMM (N = H W B columns) on features that need no concatenation:
#   Y = W z:  one GEMM with rows (input channel, image), as in complex_coefficients, and one
#             transpose to (n, 2, 1 + L, P, B): [re, im] x filter x pixel x image per channel,
#             i.e. P_j's features in the order (c, part, filter);
#   M = |Y|:  (n, 1 + L, P, B), one pass;
#   out = P_y Std(Y) + P_m Std(M): two GEMMs, standardization folded into the weights and a bias;
#   N:        out / |out| per column.
# _StdProjection computes the gradient of the standardization statistics from the weight
# gradient's GEMM (sum_n h_kn x_kn = sum_o W_ok (dOut X^T)_ok), so its backward is four GEMMs
# and four elementwise passes, and saves only Y (M = |Y| is recomputed): less than half the
# reference path's saved activations. The block's output is returned as the (B, C, H, W)
# view of its batch-last storage: same shape and values as the reference path, and the next
# block reads it without a copy.
#
# Measured (AMD EPYC, 2 cores, AVX-512 with BF16; shared, load 4-17; batch 32, width 1): with
# float32 GEMMs this path takes 1.05-1.15x the reference path's step (its 1x1 convolution is a
# GEMM too; the extra transposes and reorderings cost more than the elementwise passes saved),
# with bf16 GEMMs (AVX512-BF16, cpu_matmul) 0.6x.


@cache
def _cpu_has_bf16() -> bool:
    """Whether the CPU multiplies bf16 natively (AVX512-BF16 or AMX), where bf16 GEMMs are
    about twice as fast as float32 ones."""
    from scatterlab.env import cpu_info

    return bool({"avx512_bf16", "amx_bf16"} & set(cpu_info()[1]))


CPU_MATMUL = ("auto", "float32", "bfloat16")


def matmul_dtype(setting: str, dtype: torch.dtype) -> torch.dtype:
    """dtype of the block GEMMs on the CPU for activations of `dtype`: bf16 for float32 models
    with setting "bfloat16", or "auto" on a CPU with native bf16; float64 models stay float64."""
    if dtype != torch.float32 or setting == "float32":
        return dtype
    if setting == "bfloat16" or (setting == "auto" and _cpu_has_bf16()):
        return torch.bfloat16
    return dtype


class _StdProjection(torch.autograd.Function):
    """out = P_y Std(Y) + P_m Std(M), M = |Y|, on batch-last features, with the gradient of
    the modulus and of the standardization statistics.

    Y (n, 2, F, N): real and imaginary parts of n F complex features (N = pixels x batch);
    M = |Y| (n, F, N): their moduli, n F real features. w_y (R, 2 n F) acts on Y (columns in Y's
    order), w_m (R, n F) on M. Std: a complex feature is centred and divided by
    sqrt(E|z - mu|^2 + eps), a real one by its standard deviation, over the N columns: batch
    statistics when `stats` is None (returned, for the running estimates), else the given
    (mean_y (n, 2, F), var_y (n, 2, F), mean_m (n, F), var_m (n, F)). Returns (out (R, N),
    mean_y, var_y, mean_m, var_m); statistics accumulate in float32 at least.
    """

    @staticmethod
    def forward(ctx, Y, w_y, w_m, stats, eps):  # type: ignore[override]
        n, _, F, N = Y.shape
        M = torch.hypot(Y[:, 0], Y[:, 1])
        acc = torch.promote_types(Y.dtype, torch.float32)
        if stats is None:
            if Y.dtype == acc:
                var_y, mean_y = torch.var_mean(Y, -1, correction=0)
                var_m, mean_m = torch.var_mean(M, -1, correction=0)
                var_c = var_y.sum(1)
            else:  # bf16 activations: float32 sums of x and x^2, one pass each
                mean_y = Y.sum(-1, dtype=acc) / N
                mean_m = M.sum(-1, dtype=acc) / N
                sq_y = torch.linalg.vector_norm(Y, dim=-1, dtype=acc).square() / N
                sq_m = torch.linalg.vector_norm(M, dim=-1, dtype=acc).square() / N
                var_c = (sq_y - mean_y.square()).sum(1).clamp_min(0)
                var_m = (sq_m - mean_m.square()).clamp_min(0)
            var_y = var_c[:, None].expand(n, 2, F)  # E|z - mu|^2 for both parts
        else:
            mean_y, var_y, mean_m, var_m = stats
        s_y, s_m = torch.rsqrt(var_y + eps), torch.rsqrt(var_m + eps)
        ws_y = w_y * s_y.reshape(1, -1).to(w_y.dtype)
        ws_m = w_m * s_m.reshape(1, -1).to(w_m.dtype)
        bias = -(ws_y @ mean_y.reshape(-1).to(w_y.dtype) + ws_m @ mean_m.reshape(-1).to(w_m.dtype))
        dt = Y.dtype
        Y2, M2 = Y.view(-1, N), M.view(-1, N)
        out = torch.addmm(bias.to(dt)[:, None], ws_y.to(dt), Y2)
        out.addmm_(ws_m.to(dt), M2)
        # M is recomputed in backward (one pass over Y) rather than kept: a third less memory
        ctx.save_for_backward(Y, w_y, w_m, mean_y, mean_m, s_y, s_m)
        ctx.batch_stats = stats is None
        ctx.mark_non_differentiable(mean_y, var_y, mean_m, var_m)
        return out, mean_y, var_y, mean_m, var_m

    @staticmethod
    def backward(ctx, grad, *_):  # type: ignore[override]
        Y, w_y, w_m, mean_y, mean_m, s_y, s_m = ctx.saved_tensors
        n, _, F, N = Y.shape
        M = torch.hypot(Y[:, 0], Y[:, 1])
        dt, wdt = Y.dtype, w_y.dtype
        grad = grad.to(dt).contiguous()
        Y2, M2 = Y.view(-1, N), M.view(-1, N)
        s_yy, s_m1 = s_y.reshape(-1), s_m.reshape(-1)
        mu_y, mu_m = mean_y.reshape(-1), mean_m.reshape(-1)
        # dOut Y^T and dOut M^T: the weight gradients before centring and scaling
        g1 = grad.sum(1, dtype=s_y.dtype)  # (R,)
        r_y = (grad @ Y2.t()).to(s_y.dtype) - g1[:, None] * mu_y
        r_m = (grad @ M2.t()).to(s_y.dtype) - g1[:, None] * mu_m
        dw_y = (r_y * s_yy).to(wdt) if ctx.needs_input_grad[1] else None
        dw_m = (r_m * s_m1).to(wdt) if ctx.needs_input_grad[2] else None
        ws_y, ws_m = w_y.to(s_y.dtype) * s_yy, w_m.to(s_y.dtype) * s_m1
        if ctx.batch_stats:
            # BatchNorm's backward per feature: dX = s h + a + b X with h = W^T dOut,
            # S1 = sum_n h = W^T (dOut 1), S2 = sum_n h (X - mu) = sum_o W_ok r_ok
            s1_y, s1_m = ws_y.t() @ g1, ws_m.t() @ g1  # includes s: sum_n s h
            s2_y = (ws_y * r_y).sum(0).view(n, 2, F).sum(1)  # s S2 per complex feature
            s2_m = (ws_m * r_m).sum(0).view(n, F)
            b_y = -(s_y[:, 0].square() * s2_y) / N  # (n, F): -s^3 S2 / N (same s for both parts)
            b_m = -(s_m.square() * s2_m) / N
            a_y = -s1_y / N - b_y[:, None].expand(n, 2, F).reshape(-1) * mu_y
            a_m = -s1_m.view(n, F) / N - b_m * mean_m
        else:
            b_y = b_m = torch.zeros_like(s_m)
            a_y, a_m = torch.zeros_like(mu_y), torch.zeros_like(s_m)
        # dY = (Ws_y^T dOut + a_y + b_y Y) + (Y / M) (Ws_m^T dOut + a_m + b_m M)
        #    = Ws_y^T dOut + a_y + Y t,  t = b_y + b_m + (Ws_m^T dOut + a_m) / M
        g_m = torch.addmm(a_m.reshape(-1, 1).to(dt), ws_m.t().to(dt), grad).view(n, F, N)
        t = torch.addcdiv((b_y + b_m).to(dt)[..., None].expand(n, F, N), g_m, M)
        # |z| = 0 (so z = 0): the modulus gets no gradient there, as in _Modulus
        t = t.nan_to_num_(0.0, 0.0, 0.0)
        dY = torch.addmm(a_y[:, None].to(dt), ws_y.t().to(dt), grad).view(n, 2, F, N)
        dY.addcmul_(Y, t[:, None])
        return dY, dw_y, dw_m, None, None


class _PixelNormalization(torch.autograd.Function):
    """x / sqrt(|x|^2 + eps) per column of x (C, N), |.| over the C rows."""

    @staticmethod
    def forward(ctx, x, eps):  # type: ignore[override]
        acc = torch.promote_types(x.dtype, torch.float32)
        inv = torch.rsqrt(torch.linalg.vector_norm(x, dim=0, dtype=acc).square() + eps)
        out = x * inv.to(x.dtype)
        ctx.save_for_backward(out, inv)
        return out

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        out, inv = ctx.saved_tensors
        grad = grad.to(out.dtype)
        # d(x / |x|) = (g - y <y, g>) / |x|
        dot = (out * grad).sum(0, dtype=inv.dtype)
        return torch.addcmul(grad, out, dot.to(out.dtype), value=-1).mul_(inv.to(out.dtype)), None


class ScatteringBlock(nn.Module):
    """One block W rho Std P N.

    rho (skip=False): (x * phi, rho(x * psi_theta)); (skip=True): (W x, rho(W x)), so P sees
    both the linear coefficients and their non-linear transform, low-pass included.
    Input (B, in_channels + in_complex, H, W) split layout; output (B, out + out_complex, H', W').
    `size`: the expected input size H = W, for which W's filtering matrix is built up front.
    `cpu_matmul`: dtype of the GEMMs of the batch-last path (`matmul_dtype`); `batch_last`:
    use that path where it applies (complex skip blocks with modulus on the CPU, maps up to
    `Wavelet.matmul_max_pixels`), else always `forward_reference`.
    """

    def __init__(
        self,
        in_channels: int,
        in_complex: int,
        out_channels: int,
        L: int = 4,
        size: int | None = None,
        filters: str = "morlet",
        subsample: bool = True,
        skip: bool = True,
        nonlinearity: str = "modulus",
        complex_projection: bool = True,
        cpu_matmul: str = "auto",
        batch_last: bool = True,
    ) -> None:
        super().__init__()
        if cpu_matmul not in CPU_MATMUL:
            raise ConfigError(
                f"model.cpu_matmul={cpu_matmul!r} is unknown: use one of {', '.join(CPU_MATMUL)}"
            )
        self.cpu_matmul, self.batch_last = cpu_matmul, batch_last
        n, m = in_channels, in_complex
        self.in_complex, self.skip = m, skip
        # The paper's model (complex P_j): complex products inside the wavelet GEMM (see rho).
        self.fused_rho = skip and nonlinearity == "modulus" and 0 < m == n
        self.wavelet = Wavelet(L, filters, subsample, size, complex_input=self.fused_rho)
        # rho acts on: the n*L wavelet coefficients (+ W x's low-pass with skip).
        rho_c = n * L + (m if skip else 0)
        rho_r = (n - m) if skip else 0
        self.nonlinearity = Nonlinearity(nonlinearity, rho_c, rho_r)
        # Channels of rho's output: complex ones first (split layout), then real ones.
        lin_c, lin_r = m + (n * L if skip else 0), n - m  # linear part kept as is
        if self.nonlinearity.real_output:
            self.features, self.features_complex = lin_c + lin_r + rho_c + rho_r, lin_c
        else:
            self.features = lin_c + lin_r + rho_c + rho_r
            self.features_complex = lin_c + rho_c
        self.standardization = Standardization(
            self.features + self.features_complex, self.features_complex
        )
        self.proj = Projection(
            self.features, self.features_complex, out_channels, complex_projection
        )
        self.normalization = Normalization()

    @property
    def out_complex(self) -> int:
        return self.proj.out_complex

    def rho(self, x: Tensor) -> Tensor:
        """W then rho: (B, n + m, H, W) -> (B, features + features_complex, H', W')."""
        m = self.in_complex
        if self.fused_rho:
            # One concatenation; features per input channel and filter (low-pass, psi_1..L):
            # Re W z, |W z| (real), Im W z.
            re, im = self.wavelet.complex_coefficients(x)
            return torch.cat([re, _modulus(re, im), im], 1).flatten(1, 2)
        low, high_re, high_im = self.wavelet(x, m)
        low_re, low_im = split(low, m)
        low_c_re, low_r = low_re[:, :m], low_re[:, m:]
        if self.skip and self.nonlinearity.kind == "modulus":
            # The paper's model, with a single concatenation (each one copies every feature):
            # the same features as the general path below.
            mod = [_modulus(low_c_re, low_im), _modulus(high_re, high_im), low_r.abs()]
            return torch.cat([low_c_re, high_re, low_r, *mod, low_im, high_im], 1)
        if self.skip:
            lin_re, lin_im = torch.cat([low_c_re, high_re], 1), torch.cat([low_im, high_im], 1)
            nl_re, nl_im, nl_x = self.nonlinearity(lin_re, lin_im, low_r)
        else:
            nl_re, nl_im, nl_x = self.nonlinearity(high_re, high_im, high_re[:, :0])
            lin_re, lin_im = low_c_re, low_im
        return torch.cat([lin_re, nl_re, low_r, nl_x, lin_im, nl_im], 1)

    def forward(self, x: Tensor) -> Tensor:
        if self._batch_last_applies(x):
            return self.forward_batch_last(x)
        return self.forward_reference(x)

    def forward_reference(self, x: Tensor) -> Tensor:
        """rho, then P folded with the standardization, then N, on NCHW tensors (any block,
        any device; the path forward hooks on the block's submodules see)."""
        x = self.rho(x)
        return self.normalization(self.proj(x, *self.standardization.statistics(x)))

    def _batch_last_applies(self, x: Tensor) -> bool:
        """The batch-last path: complex skip blocks on the CPU whose maps are filtered by the
        GEMM, with no hooks on the submodules (they would not be called)."""
        if not (self.fused_rho and self.batch_last and x.device.type == "cpu"):
            return False
        if (x.shape[-2] - x.shape[-2] % 2) * (x.shape[-1] - x.shape[-1] % 2) > (
            self.wavelet.matmul_max_pixels
        ):
            return False
        hooked = (m._forward_hooks or m._forward_pre_hooks for m in self.children())
        return not any(hooked)

    def forward_batch_last(self, x: Tensor) -> Tensor:
        """The same map as forward_reference, on batch-last tensors (see _StdProjection).

        x (B, 2n, H, W), split layout, any strides (the view this path returns costs no
        copy); returns (B, 2 out, H', W'), the view of (2 out, H', W', B) storage, in the
        dtype of the block GEMMs (`cpu_matmul`).
        """
        B, C, H, W = x.shape
        n, L = C // 2, self.wavelet.L
        H, W = H - H % 2, W - W % 2
        Ho, Wo = (H // 2, W // 2) if self.wavelet.subsample else (H, W)
        if torch.is_autocast_enabled("cpu"):  # the autocast dtype, for every GEMM here
            dtype = torch.get_autocast_dtype("cpu")
        else:
            dtype = matmul_dtype(self.cpu_matmul, x.dtype)
        with torch.autocast("cpu", enabled=False):
            # rows (input channel, image), columns [re, im] x pixels: one GEMM for W, as in
            # complex_coefficients, then one transpose to (channel, [re, im] x filter x
            # pixel, image), the layout in which P_j is one GEMM
            z = x.view(B, 2, n, *x.shape[-2:])[..., :H, :W].permute(2, 0, 1, 3, 4)
            z = z.to(dtype).reshape(n * B, 2 * H * W)
            y = z @ self.wavelet.batch_last_matrix(H, W, dtype)
            y = y.view(n, B, -1).transpose(1, 2).contiguous().view(n, 2, 1 + L, Ho * Wo * B)
            w_y, w_mod = self._batch_last_weights(n, 1 + L)
            std = self.standardization
            stats = None if std.training else self._running_stats(n, 1 + L)
            out, mean_y, var_y, mean_m, var_m = _StdProjection.apply(y, w_y, w_mod, stats, std.eps)
            if std.training:
                self._update_running_stats(mean_y, var_y, mean_m, var_m, y.shape[-1])
            out = _PixelNormalization.apply(out, self.normalization.eps)
        return out.view(-1, Ho, Wo, B).permute(3, 0, 1, 2)

    def _batch_last_weights(self, n: int, F: int) -> tuple[Tensor, Tensor]:
        """P_j's real matrix in the batch-last order: (w_y (R, 2 n F) on the [re, im] parts
        in Y's order (channel, part, filter), w_m (R, n F) on the moduli)."""
        f = n * F
        if self.proj.complex:
            wr, wi = self.proj.weight  # (out, 2 f): f complex features, then f moduli
            wr_c, wi_c = wr[:, :f].view(-1, n, F), wi[:, :f].view(-1, n, F)
            # Re(w z) = wr a - wi b, Im(w z) = wi a + wr b for z = a + ib
            w_y = torch.cat([torch.stack([wr_c, -wi_c], 2), torch.stack([wi_c, wr_c], 2)])
            return w_y.flatten(1), torch.cat([wr[:, f:], wi[:, f:]])
        w_re, w_mod, w_im = self.proj.matrix().split([f, f, f], 1)
        w_y = torch.stack([w_re.view(-1, n, F), w_im.view(-1, n, F)], 2).flatten(1)
        return w_y, w_mod

    def _running_stats(self, n: int, F: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The standardization's running estimates in the batch-last order:
        (mean_y (n, 2, F), var_y (n, 2, F), mean_m (n, F), var_m (n, F))."""
        std = self.standardization
        m_re, m_mod, m_im = std.running_mean.view(3, n, F)
        v_re, v_mod, v_im = std.running_var.view(3, n, F)
        return torch.stack([m_re, m_im], 1), torch.stack([v_re, v_im], 1), m_mod, v_mod

    @torch.no_grad()
    def _update_running_stats(
        self, mean_y: Tensor, var_y: Tensor, mean_m: Tensor, var_m: Tensor, count: int
    ) -> None:
        """As Standardization.statistics: lerp towards the batch's (unbiased) statistics."""
        std = self.standardization
        mean = torch.cat([mean_y[:, 0].flatten(), mean_m.flatten(), mean_y[:, 1].flatten()])
        var = torch.cat([var_y[:, 0].flatten(), var_m.flatten(), var_y[:, 1].flatten()])
        var = var * count / max(count - 1, 1)
        std.running_mean.lerp_(mean.to(std.running_mean.dtype), std.momentum)
        std.running_var.lerp_(var.to(std.running_var.dtype), std.momentum)


class Classifier(nn.Module):
    """BatchNorm on the real and imaginary parts, flatten (no pooling), linear layer.

    Input (B, C, h, w) with C real features (split layout); output (B, num_classes).
    """

    def __init__(
        self, channels: int, size: int, num_classes: int, affine: bool = True, bias: bool = True
    ) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=affine)
        self.linear = nn.Linear(channels * size * size, num_classes, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.norm(x).flatten(1))


# How many of the blocks before the last one subsample (block_plan), as a config expression.
_SUBSAMPLED_BEFORE_LAST = "(min(F, len(widths) - 1) + max(0, len(widths) - 1 - F) // 2)".replace(
    "F", "(factorize_from if factorize else len(widths))"
)


def block_plan(num_blocks: int, factorize: bool, factorize_from: int) -> list[tuple[str, bool]]:
    """(filter kind, subsample) per block.

    Plain blocks use the J=1 Morlet filters and subsample. From `factorize_from` on, factorized
    blocks alternate half-octave filters without (scale 1) and with (scale 2^{1/2}) subsampling.
    """
    plan = []
    for j in range(num_blocks):
        if not factorize or j < factorize_from:
            plan.append(("morlet", True))
        elif (j - factorize_from) % 2 == 0:
            plan.append(("half_octave_1", False))
        else:
            plan.append(("half_octave_3_2", True))
    return plan


class LearnedScattering(nn.Module):
    """Learned scattering classifier: blocks W rho Std P N, then BatchNorm + linear.

    widths: output channels of each P_j before the multiplier `width`. With the defaults
    (CIFAR: 8 blocks, L=4, factorized filters) `skip=True` is "LScat + skip" (24,459,018
    parameters) and `skip=False` is "LScat" (12,251,018).
    `cpu_matmul` ("auto" | "float32" | "bfloat16"): dtype of the GEMMs of the complex skip
    blocks on the CPU (`matmul_dtype`); "auto" is bf16 on CPUs with native bf16 (AVX512-BF16,
    AMX), where it is about twice as fast (quickstart test accuracy unchanged over 2 seeds),
    statistics and normalization staying float32; "float32" for float32 arithmetic throughout.
    Input (B, in_channels, input_size, input_size); output logits (B, num_classes).
    """

    CONFIG_CHECKS: tuple[tuple[str, str], ...] = (
        (
            f"input_size // 2 ** {_SUBSAMPLED_BEFORE_LAST} >= 2",
            "the images are too small for that many blocks (each subsampling block halves "
            "them): use fewer blocks (model.widths), a later model.factorize_from, or larger "
            "images",
        ),
    )

    def __init__(
        self,
        num_classes: PositiveInt = 10,
        in_channels: PositiveInt = 3,
        input_size: PositiveInt = 32,
        widths: Annotated[Sequence[PositiveInt], Range(ge=1)] = (
            64,
            128,
            256,
            512,
            512,
            512,
            512,
            512,
        ),
        width: WidthMultiplier = 1.0,
        L: PositiveInt = 4,
        skip: bool = True,
        nonlinearity: Literal["modulus", "soft_threshold", "relu", "tanh", "identity"] = "modulus",
        complex_projection: bool = True,
        factorize: bool = True,
        factorize_from: NonNegativeInt = 0,
        classifier_affine: bool = True,
        classifier_bias: bool = True,
        cpu_matmul: Literal["auto", "float32", "bfloat16"] = "auto",
    ) -> None:
        super().__init__()
        # the config check refuses these first; this guards direct calls
        _check_positive("model.width", width, float)
        _check_positive("model.L", L, int)
        _check_positive("model.input_size", input_size, int)
        if not widths:
            raise ConfigError("model.widths is empty: give one output width per block")
        self.widths = [max(1, round(w * width)) for w in widths]
        blocks, n, m, size = [], in_channels, 0, input_size
        for out, (kind, subsample) in zip(
            self.widths, block_plan(len(widths), factorize, factorize_from), strict=True
        ):
            out_size = size // 2 if subsample else size - size % 2
            if out_size < 1:
                raise ConfigError(
                    f"model.input_size={input_size} is too small for {len(widths)} blocks: "
                    "use fewer blocks (model.widths) or larger images"
                )
            block = ScatteringBlock(
                n,
                m,
                out,
                L,
                size,
                kind,
                subsample,
                skip,
                nonlinearity,
                complex_projection,
                cpu_matmul,
            )
            blocks.append(block)
            n, m, size = out, block.out_complex, out_size
        self.blocks = nn.ModuleList(blocks)
        self.classifier = Classifier(n + m, size, num_classes, classifier_affine, classifier_bias)

    def features(self, x: Tensor) -> Tensor:
        """Output of the last block, split layout (B, n + m, h, w), in x's dtype."""
        dtype = x.dtype
        for block in self.blocks:
            x = block(x)
        return x.to(dtype)  # the batch-last path may run its blocks in bf16

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


def _check_positive(name: str, value: object, kind: type) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value > 0
    if kind is int:
        ok = ok and float(value).is_integer()
    if not ok or (isinstance(value, float) and not math.isfinite(value)):
        raise ConfigError(f"{name} must be a positive {kind.__name__}, got {value!r}")
