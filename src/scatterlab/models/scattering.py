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

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scatterlab.errors import ConfigError
from scatterlab.models.filters import filter_bank

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


class ScatteringBlock(nn.Module):
    """One block W rho Std P N.

    rho (skip=False): (x * phi, rho(x * psi_theta)); (skip=True): (W x, rho(W x)), so P sees
    both the linear coefficients and their non-linear transform, low-pass included.
    Input (B, in_channels + in_complex, H, W) split layout; output (B, out + out_complex, H', W').
    `size`: the expected input size H = W, for which W's filtering matrix is built up front.
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
    ) -> None:
        super().__init__()
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
        x = self.rho(x)
        return self.normalization(self.proj(x, *self.standardization.statistics(x)))


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
    Input (B, in_channels, input_size, input_size); output logits (B, num_classes).
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        input_size: int = 32,
        widths: Sequence[int] = (64, 128, 256, 512, 512, 512, 512, 512),
        width: float = 1.0,
        L: int = 4,
        skip: bool = True,
        nonlinearity: str = "modulus",
        complex_projection: bool = True,
        factorize: bool = True,
        factorize_from: int = 0,
        classifier_affine: bool = True,
        classifier_bias: bool = True,
    ) -> None:
        super().__init__()
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
                n, m, out, L, size, kind, subsample, skip, nonlinearity, complex_projection
            )
            blocks.append(block)
            n, m, size = out, block.out_complex, out_size
        self.blocks = nn.ModuleList(blocks)
        self.classifier = Classifier(n + m, size, num_classes, classifier_affine, classifier_bias)

    def features(self, x: Tensor) -> Tensor:
        """Output of the last block, split layout (B, n + m, h, w)."""
        for block in self.blocks:
            x = block(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


def _check_positive(name: str, value: object, kind: type) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value > 0
    if kind is int:
        ok = ok and float(value).is_integer()
    if not ok or (isinstance(value, float) and not math.isfinite(value)):
        raise ConfigError(f"{name} must be a positive {kind.__name__}, got {value!r}")
