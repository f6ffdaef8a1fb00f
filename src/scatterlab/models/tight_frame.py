"""Scattering + tight-frame thresholding classifiers (Zarka, Guth & Mallat, ICLR 2021).

"Separation and concentration in deep networks": each block is a fixed one-scale wavelet
transform with phase ReLUs (separation), a standardization, a learned 1x1 matrix P, a per-pixel
L2 normalization, then a learned tight frame F with a pointwise threshold rho and F^T back,
F^T rho(F x) (concentration: small frame coefficients, mostly within-class variability, are
collapsed to zero). The network learns no biases except in the classifier.

Tightness (F^T F = I) is kept by the Parseval step F <- (1 + beta) F - beta F F^T F after every
optimizer step (`after_optimizer_step`, called by `ClassificationModule`); P and F are not
weight-decayed (`no_weight_decay_parameters`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scatterlab.errors import ConfigError
from scatterlab.models.scattering import Normalization, Wavelet
from scatterlab.ranges import NonNegative, NonNegativeInt, PositiveInt, Range, WidthMultiplier

FRAME_NONLINEARITIES = ("soft_threshold", "relu", "identity")


def parseval_step(weight: Tensor, beta: float) -> None:
    """In place A <- (1 + beta) A - beta A A^T A for a weight A of shape (out, in, ...).

    Fixed points with full rank: A^T A = I (out >= in, a tight frame) or A A^T = I (out < in,
    orthonormal rows). Near them the step contracts the singular values s towards 1
    (s <- s + beta s (1 - s^2)). The Gram matrix is formed on the smaller side.
    """
    with torch.no_grad():
        a = weight.view(weight.shape[0], -1)
        prod = a @ (a.T @ a) if a.shape[0] >= a.shape[1] else (a @ a.T) @ a
        a.mul_(1 + beta).sub_(beta * prod)


def harmonic_tight_frame(rows: int, cols: int, generator: torch.Generator | None = None) -> Tensor:
    """A random equal-norm tight frame: (rows, cols), F^T F = I, every row of norm sqrt(cols/rows).

    Columns of the real harmonic frame (cos and sin of cols/2 distinct frequencies 1..cols/2 of
    Z/rows, plus the constant for odd cols; orthonormal since cols < rows), rotated by a random
    orthogonal (cols, cols) matrix and with the rows randomly permuted. With equal row norms the
    per-forward atom renormalization of the reference is a no-op at init, so the block starts as
    an exact Fx -> F^T F x = x identity (the reference's orthogonal init only has equal norms on
    average).
    """
    if rows <= cols:
        raise ConfigError(f"a tight frame needs more rows than columns, got {rows} <= {cols}")
    n = torch.arange(rows, dtype=torch.float64)[:, None]
    k = torch.arange(1, cols // 2 + 1, dtype=torch.float64)[None]
    angle = 2 * math.pi * n * k / rows
    parts = [torch.cos(angle), torch.sin(angle)]
    frame = torch.cat(parts, 1) * math.sqrt(2 / rows)
    if cols % 2:
        frame = torch.cat([torch.full((rows, 1), 1 / math.sqrt(rows), dtype=frame.dtype), frame], 1)
    g = torch.randn(cols, cols, dtype=torch.float64, generator=generator)
    q, r = torch.linalg.qr(g)
    q = q * torch.sign(torch.diagonal(r))
    perm = torch.randperm(rows, generator=generator)
    return (frame @ q)[perm].float().contiguous()


class TightFrame(nn.Module):
    """F^T rho(F x) with a learned 1x1 tight frame F of `frame_width` atoms in R^channels.

    Input and output (B, channels, H, W). rho: soft_threshold sign(z) ReLU(|z| - lambda),
    relu ReLU(z - lambda), identity. lambda > 0 is one scalar per block, learned through its
    log (or fixed with `learn_threshold=False`), initialized as in the reference code:
    1.5/sqrt(frame_width) for soft_threshold, 1/sqrt(frame_width) for relu (inputs have unit
    norm per pixel, so a typical frame coefficient has size 1/sqrt(frame_width)).
    `normalize_atoms`: rescale every atom (row) to norm sqrt(channels / frame_width) at each
    forward (the trace of a tight frame), so that one threshold means the same for all atoms.
    """

    def __init__(
        self,
        channels: int,
        frame_width: int,
        nonlinearity: str = "soft_threshold",
        threshold: float | None = None,
        learn_threshold: bool = True,
        normalize_atoms: bool = True,
    ) -> None:
        super().__init__()
        if nonlinearity not in FRAME_NONLINEARITIES:
            raise ConfigError(
                f"model.frame_nonlinearity={nonlinearity!r} is unknown: use one of "
                f"{', '.join(FRAME_NONLINEARITIES)}"
            )
        if frame_width <= channels:
            raise ConfigError(
                f"model.frame_widths: a frame of {frame_width} atoms is not wider than its "
                f"{channels} input channels: give each frame more atoms than the block's P width"
            )
        self.channels, self.frame_width = channels, frame_width
        self.nonlinearity, self.normalize_atoms = nonlinearity, normalize_atoms
        self.weight = nn.Parameter(harmonic_tight_frame(frame_width, channels))
        if threshold is None:
            threshold = (1.5 if nonlinearity == "soft_threshold" else 1.0) / math.sqrt(frame_width)
        if threshold < 0:
            raise ConfigError(f"model.frame_threshold must be >= 0, got {threshold}")
        # Learned through its log: a gradient step then changes lambda relatively (the frame
        # coefficients are ~1/sqrt(frame_width), far smaller than a step of lr * grad on
        # lambda itself, which at lr 0.01 pushes lambda past every coefficient within a few
        # dozen steps and kills the block for good).
        t = torch.tensor(math.log(max(float(threshold), 1e-30)))
        if learn_threshold and nonlinearity != "identity":
            self.log_threshold = nn.Parameter(t)
        else:
            self.register_buffer("log_threshold", t)

    @property
    def threshold(self) -> Tensor:
        """lambda = exp(log_threshold) (0 for a threshold configured as 0)."""
        return self.log_threshold.exp()

    def frame(self) -> Tensor:
        """The frame used in the forward pass, (frame_width, channels)."""
        if not self.normalize_atoms:
            return self.weight
        norm = self.weight.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return self.weight * (math.sqrt(self.channels / self.frame_width) / norm)

    def rho(self, z: Tensor) -> Tensor:
        lam = self.threshold.to(z.dtype)
        if self.nonlinearity == "soft_threshold":
            return torch.sign(z) * F.relu(z.abs() - lam)
        if self.nonlinearity == "relu":
            return F.relu(z - lam)
        return z

    def forward(self, x: Tensor) -> Tensor:
        f = self.frame().to(x.dtype)[:, :, None, None]
        return F.conv_transpose2d(self.rho(F.conv2d(x, f)), f)


def phase_relu_channels(in_channels: int, L: int) -> int:
    """Channels of the wavelet step: per input channel x * phi and ReLU(+-Re, +-Im) of L psi."""
    return in_channels * (1 + 4 * L)


class TightFrameBlock(nn.Module):
    """One block: W (J=1, phase ReLUs) -> BatchNorm (no affine) -> P -> N -> F^T rho(F .).

    Input (B, in_channels, H, W); output (B, width, H // 2, W // 2). P: 1x1, no bias,
    orthogonal init, width <= its input (1 + 4L) in_channels. `frame_width=0`: no frame (the
    reference's `scatnetblock` baseline).
    """

    def __init__(
        self,
        in_channels: int,
        width: int,
        frame_width: int,
        L: int = 8,
        size: int | None = None,
        nonlinearity: str = "soft_threshold",
        threshold: float | None = None,
        learn_threshold: bool = True,
        normalize_atoms: bool = True,
    ) -> None:
        super().__init__()
        self.wavelet = Wavelet(L, "morlet", subsample=True, size=size)
        features = phase_relu_channels(in_channels, L)
        if width > features:
            raise ConfigError(
                f"model.widths: P width {width} exceeds its {features} input channels: "
                "use a smaller width"
            )
        self.standardization = nn.BatchNorm2d(features, affine=False)
        self.proj = nn.Conv2d(features, width, 1, bias=False)
        nn.init.orthogonal_(self.proj.weight.view(width, features))
        self.normalization = Normalization()
        self.frame = (
            TightFrame(
                width, frame_width, nonlinearity, threshold, learn_threshold, normalize_atoms
            )
            if frame_width
            else nn.Identity()
        )

    def scatter(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C (1 + 4L), H/2, W/2): low-pass, then ReLU(Re), ReLU(-Re),
        ReLU(Im), ReLU(-Im) of each wavelet coefficient."""
        low, re, im = self.wavelet(x, 0)
        return torch.cat([low, F.relu(re), F.relu(-re), F.relu(im), F.relu(-im)], 1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.normalization(self.proj(self.standardization(self.scatter(x))))
        return self.frame(x)


class TightFrameScattering(nn.Module):
    """Scattering blocks with tight-frame thresholding, then BatchNorm + flatten + linear.

    CIFAR defaults (4 blocks, P 64-128-256-512, frames 1024-2048-4096-8192, L=8): 32 -> 2
    spatially, head Linear 2048 -> 10, 11,275,470 parameters with learned thresholds.
    `width` multiplies every P and frame width (reduced runs). Blocks are `blocks.<i>` (their
    output, after F^T rho F, is the block's representation); the classifier is `classifier`.
    Input (B, in_channels, input_size, input_size); output logits (B, num_classes).
    """

    CONFIG_CHECKS: tuple[tuple[str, str], ...] = (
        (
            "len(widths) == len(frame_widths)",
            "give model.widths and model.frame_widths one entry per block each",
        ),
        (
            "input_size >= 2 ** len(widths)",
            "each block halves the images: use fewer blocks (model.widths) or larger images",
        ),
    )

    def __init__(
        self,
        num_classes: PositiveInt = 10,
        in_channels: PositiveInt = 3,
        input_size: PositiveInt = 32,
        widths: Annotated[Sequence[PositiveInt], Range(ge=1)] = (64, 128, 256, 512),
        frame_widths: Sequence[NonNegativeInt] = (1024, 2048, 4096, 8192),
        width: WidthMultiplier = 1.0,
        L: PositiveInt = 8,
        frame_nonlinearity: Literal["soft_threshold", "relu", "identity"] = "soft_threshold",
        frame_threshold: NonNegative | None = None,
        learn_threshold: bool = True,
        normalize_atoms: bool = True,
        parseval_beta: NonNegative = 5e-4,
        parseval_projection: bool = True,
    ) -> None:
        super().__init__()
        if not widths or len(widths) != len(frame_widths):
            raise ConfigError(
                f"model.widths ({len(widths)}) and model.frame_widths ({len(frame_widths)}) "
                "need one entry per block each"
            )
        self.parseval_beta, self.parseval_projection = parseval_beta, parseval_projection
        self.widths = [max(1, round(w * width)) for w in widths]
        self.frame_widths = [max(1, round(w * width)) if w else 0 for w in frame_widths]
        blocks, n, size = [], in_channels, input_size
        for out, frame in zip(self.widths, self.frame_widths, strict=True):
            if size // 2 < 1:
                raise ConfigError(
                    f"model.input_size={input_size} is too small for {len(widths)} blocks: "
                    "use fewer blocks or larger images"
                )
            blocks.append(
                TightFrameBlock(
                    n,
                    out,
                    frame,
                    L,
                    size,
                    frame_nonlinearity,
                    frame_threshold,
                    learn_threshold,
                    normalize_atoms,
                )
            )
            n, size = out, size // 2
        self.blocks = nn.ModuleList(blocks)
        self.norm = nn.BatchNorm2d(n)
        self.classifier = nn.Linear(n * size * size, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """Output of the last block, (B, widths[-1], h, w)."""
        for block in self.blocks:
            x = block(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.norm(self.features(x)).flatten(1))

    def analysis_layers(self) -> list[str]:
        """Layers for scatterlab.analysis, per block: the standardized scattering (input of P,
        after separation by the phase ReLUs), the normalized P x (input of the frame) and the
        block's output F^T rho(F P x) (after concentration)."""
        names = []
        for i, block in enumerate(self.blocks):
            names.append(f"blocks.{i}.proj:in")
            if isinstance(block.frame, TightFrame):
                names.append(f"blocks.{i}.frame:in")
            names.append(f"blocks.{i}")
        return names

    def tight_weights(self) -> list[nn.Parameter]:
        """The matrices kept tight by the Parseval step: every F (and every P)."""
        out = []
        for block in self.blocks:
            if isinstance(block.frame, TightFrame):
                out.append(block.frame.weight)
            if self.parseval_projection:
                out.append(block.proj.weight)
        return out

    def no_weight_decay_parameters(self) -> list[str]:
        """Names (as in named_parameters) of P and F: regularized by tightness, not decay."""
        ids = {id(p) for p in self.tight_weights()}
        ids |= {id(b.proj.weight) for b in self.blocks}
        return [name for name, p in self.named_parameters() if id(p) in ids]

    def after_optimizer_step(self) -> None:
        """The Parseval step on F and P (ClassificationModule calls this after each step)."""
        if self.parseval_beta > 0:
            for w in self.tight_weights():
                parseval_step(w, self.parseval_beta)


def tight_frame_parameter_count(
    in_channels: int,
    num_classes: int,
    input_size: int,
    widths: Sequence[int],
    frame_widths: Sequence[int],
    L: int = 8,
    learn_threshold: bool = True,
    frame_nonlinearity: str = "soft_threshold",
) -> dict[str, int]:
    """Closed-form parameter counts of `TightFrameScattering`: P, F, thresholds, head, total."""
    p = f = thr = 0
    n, size = in_channels, input_size
    for w, fw in zip(widths, frame_widths, strict=True):
        p += phase_relu_channels(n, L) * w
        f += fw * w
        thr += int(bool(fw) and learn_threshold and frame_nonlinearity != "identity")
        n, size = w, size // 2
    head = 2 * n + n * size * size * num_classes + num_classes
    return {"P": p, "F": f, "thresholds": thr, "head": head, "total": p + f + thr + head}
