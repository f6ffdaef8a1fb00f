"""Scattering + homotopy dictionary learning (Zarka, Thiry, Angles & Mallat, ICLR 2020).

"Deep network classification by scattering and homotopy dictionary learning" (SparseScatNet):
a fixed scattering transform, a learned projection P with per-pixel L2 normalization, then a
sparse code of every pixel vector x in a learned dictionary D with unit-norm atoms, computed by
K unrolled ISTA iterations (ISTC) whose threshold decreases geometrically from
lambda_0 = ||D^T x||_inf (where the code is still 0) to a learned lambda*; an MLP classifies
the codes.

ISTA on 1/2 ||x - D z||^2 + lambda ||z||_1 (with z >= 0 when `positive`):
    z_{k+1} = T_{step lambda_k}(z_k + step D^T (x - D z_k)),
T the soft threshold (one-sided ReLU(. - t) when positive). ISTC uses step 1 as in the
reference code; `ista` with step 1/||D||^2 and a fixed lambda is the classical, convergent ISTA.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scatterlab.errors import ConfigError, DivergedError
from scatterlab.models.mlp import MLP
from scatterlab.models.scattering import Normalization, _check_positive
from scatterlab.ranges import NonNegativeInt, Positive, PositiveInt, Range, WidthMultiplier


def soft_threshold(z: Tensor, t: Tensor | float, positive: bool = True) -> Tensor:
    """ReLU(z - t) (positive) or sign(z) ReLU(|z| - t); t broadcasts against z."""
    if positive:
        return F.relu(z - t)
    return torch.sign(z) * F.relu(z.abs() - t)


def ista(
    x: Tensor,
    D: Tensor,
    thresholds: Sequence[Tensor | float],
    step: float = 1.0,
    positive: bool = True,
    z0: Tensor | None = None,
) -> Tensor:
    """ISTA iterations, one per entry of `thresholds` (lambda_k, scalars or (N, 1)).

    x (N, d) signals, D (d, K) dictionary (atoms are columns); returns z (N, K) with
    z_{k+1} = T_{step lambda_k}(z_k + step D^T (x - D z_k)), z_0 = z0 or 0. Written with the
    Gram matrix D^T D (K, K) and D^T x computed once: each iteration is one (N, K) x (K, K)
    product.
    """
    gram = D.T @ D
    dtx = x @ D
    z = torch.zeros_like(dtx) if z0 is None else z0
    for lam in thresholds:
        z = soft_threshold(z + step * (dtx - z @ gram), step * lam, positive)
    return z


def homotopy_thresholds(lambda0: Tensor, lambda_star: Tensor, n_iterations: int) -> list[Tensor]:
    """lambda_k = lambda0 (lambda*/lambda0)^{(k+1)/K}, k = 0..K-1: log lambda linear, ending
    at lambda*. lambda0 broadcasts (e.g. (N, 1), one per signal)."""
    lambda0 = lambda0.clamp_min(1e-12)
    ratio = lambda_star / lambda0
    return [lambda0 * ratio ** ((k + 1) / n_iterations) for k in range(n_iterations)]


def lipschitz_step(D: Tensor) -> float:
    """1 / ||D||_2^2, the step for which ISTA provably converges."""
    return 1.0 / torch.linalg.matrix_norm(D.double(), ord=2).item() ** 2


class ISTC(nn.Module):
    """Homotopy ISTA sparse coding of each pixel vector on a learned dictionary.

    Input x (B, channels, H, W) (unit norm per pixel in SparseScatNet); output the codes
    (B, atoms, H, W), or D z (B, channels, H, W) with `output="reconstruction"`. D (channels,
    atoms) is renormalized to unit-norm columns at every forward pass (so weight decay cannot
    shrink it). lambda_0 = ||D^T x||_inf of each pixel (no gradient): below it the code is 0;
    the reference uses one maximum over the whole batch, frozen at evaluation, which makes a
    sample's code depend on its batch. lambda* = exp(log_lambda_star), kept >= lambda_star_min
    by `after_optimizer_step`.
    """

    def __init__(
        self,
        channels: int,
        atoms: int,
        n_iterations: int = 12,
        lambda_star: float = 0.05,
        lambda_star_min: float = 0.05,
        learn_lambda: bool = True,
        step: float = 1.0,
        positive: bool = True,
        output: str = "code",
    ) -> None:
        super().__init__()
        if not isinstance(n_iterations, int) or n_iterations < 1:
            raise ConfigError(
                f"model.n_iterations={n_iterations!r}: ISTC needs at least 1 ISTA iteration"
            )
        if not lambda_star > 0 or not math.isfinite(lambda_star):
            raise ConfigError(f"model.lambda_star={lambda_star!r} must be a positive threshold")
        if not 0 < lambda_star_min <= lambda_star:
            raise ConfigError(
                f"model.lambda_star_min={lambda_star_min!r} must be in (0, lambda_star]"
            )
        if output not in ("code", "reconstruction"):
            raise ConfigError(f"model.output={output!r}: use code or reconstruction")
        _check_positive("model.atoms", atoms, int)
        _check_positive("model.step", step, float)
        self.channels, self.atoms, self.n_iterations = channels, atoms, n_iterations
        self.step, self.positive, self.output = step, positive, output
        self.lambda_star_min = lambda_star_min
        self.weight = nn.Parameter(F.normalize(torch.randn(channels, atoms), dim=0))
        log = torch.tensor(math.log(lambda_star))
        if learn_lambda:
            self.log_lambda_star = nn.Parameter(log)
        else:
            self.register_buffer("log_lambda_star", log)

    @property
    def lambda_star(self) -> Tensor:
        return self.log_lambda_star.exp()

    def dictionary(self) -> Tensor:
        """D with unit-norm atoms, (channels, atoms)."""
        return F.normalize(self.weight, dim=0)

    def encode(self, x: Tensor) -> Tensor:
        """Codes of signals x (N, channels) -> (N, atoms)."""
        D = self.dictionary().to(x.dtype)
        with torch.no_grad():
            lambda0 = (x @ D).abs().amax(1, keepdim=True)
        lambdas = homotopy_thresholds(lambda0, self.lambda_star.to(x.dtype), self.n_iterations)
        z = ista(x, D, lambdas, self.step, self.positive)
        self._check_converged(x, z, D)
        return z

    def _check_converged(self, x: Tensor, z: Tensor, D: Tensor) -> None:
        """Refuse codes that blew up instead of returning them.

        At the minimiser of 1/2 ||x - D z||^2 + lambda* ||z||_1 (and below its value at z = 0)
        lambda* ||z||_1 <= ||x||^2 / 2. Step 1 (the paper's) is outside ISTA's convergence
        range when the dictionary is coherent (||D||^2 > 2 on the support): the codes then grow
        geometrically, e.g. to 1e263 for d = 32, K = 96, lambda* = 0.05 and 50 iterations.
        The margin, 1000 x the bound, lets through the paper's K = 12 unrolled iterations on
        random unit-norm dictionaries (measured up to 42 x for d = 16, K = 64; 0.5-3 x for the
        CIFAR and ImageNet sizes), which it trains with; 50 iterations exceed it by 1e3-1e10.
        """
        with torch.no_grad():
            lam = self.lambda_star.to(x.dtype)
            bound = x.pow(2).sum(1) / (2 * lam)
            l1 = z.abs().sum(1)
            bad = ~torch.isfinite(l1) | (l1 > 1000 * bound + 1e-3)
            if not bool(bad.any()):
                return
            worst = float(l1[bad].max())
            safe = lipschitz_step(D)
        raise DivergedError(
            f"ISTC diverged: a code's L1 norm reached {worst:.3g} (at most {float(bound.max()):.3g}"
            f" for a converged code) after {self.n_iterations} ISTA iterations with model.step="
            f"{self.step:g} at lambda*={float(lam):.3g}: the dictionary is too coherent for this "
            f"step; set model.step={safe:.3g} (1/||D||^2, always convergent) or raise "
            "model.lambda_star and model.lambda_star_min"
        )

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        z = self.encode(x.permute(0, 2, 3, 1).reshape(-1, C))
        if self.output == "reconstruction":
            z = z @ self.dictionary().to(z.dtype).T
        return z.view(B, H, W, -1).permute(0, 3, 1, 2)

    def after_optimizer_step(self) -> None:
        with torch.no_grad():
            self.log_lambda_star.clamp_(min=math.log(self.lambda_star_min))


def scattering_channels(in_channels: int, J: int, L: int) -> int:
    """Channels of kymatio's order-2 Scattering2D: in_channels (1 + L J + L^2 J (J - 1) / 2)."""
    return in_channels * (1 + L * J + L * L * J * (J - 1) // 2)


class ScatteringFront(nn.Module):
    """Fixed kymatio Scattering2D (order 2) + standardization (BatchNorm, no affine).

    (B, C, N, N) -> (B, scattering_channels, N / 2^J, N / 2^J).
    """

    def __init__(self, in_channels: int, input_size: int, J: int, L: int) -> None:
        super().__init__()
        # Imported here: kymatio is slow to import and only the scattering baselines need it.
        from kymatio.torch import Scattering2D

        self.scattering = Scattering2D(J=J, shape=(input_size, input_size), L=L, max_order=2)
        self.standardization = nn.BatchNorm2d(scattering_channels(in_channels, J, L), affine=False)

    def forward(self, x: Tensor) -> Tensor:
        s = self.scattering(x.float().contiguous())  # (B, C, paths, h, w)
        return self.standardization(s.flatten(1, 2))


class ProjectionBlock(nn.Module):
    """P: a kernel x kernel convolution (reflect padding, no bias), then per-pixel L2
    normalization. (B, C, h, w) -> (B, width, h, w)."""

    def __init__(self, in_channels: int, width: int, kernel_size: int = 3) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ConfigError(f"model.proj_kernel_size={kernel_size} must be odd")
        self.proj = nn.Conv2d(
            in_channels,
            width,
            kernel_size,
            padding=kernel_size // 2,
            padding_mode="reflect",
            bias=False,
        )
        self.normalization = Normalization()

    def forward(self, x: Tensor) -> Tensor:
        return self.normalization(self.proj(x))


class SparseScattering(nn.Module):
    """SparseScatNet: scattering -> P -> N -> ISTC -> BatchNorm -> AvgPool -> MLP.

    Module names for the layer analyses: `blocks.0` scattering + standardization, `blocks.1`
    P + normalization, `blocks.2` the sparse code (ISTC); `head` is the MLP (its hidden layers
    `head.layers.<i>`). `width` multiplies proj_width, atoms and hidden (reduced runs).
    ImageNet defaults: J=4, L=8, P 1251 -> 256 (3x3), 2048 atoms, K=12,
    pool 5 (14 -> 10), MLP 2 x 4096 with dropout 0.3.
    Input (B, in_channels, input_size, input_size); output logits (B, num_classes).
    """

    CONFIG_CHECKS: tuple[tuple[str, str], ...] = (
        ("2**J <= input_size", "lower model.J: the images must be at least 2^J pixels wide"),
        (
            "pool <= input_size // 2**J",
            "lower model.pool: it exceeds the input_size / 2^J scattering maps",
        ),
        ("proj_kernel_size % 2 == 1", "give model.proj_kernel_size an odd size (1, 3, 5, ...)"),
        (
            "proj_kernel_size // 2 < input_size // 2**J",
            "lower model.proj_kernel_size: its reflect padding must be smaller than the "
            "input_size / 2^J scattering maps",
        ),
        ("lambda_star_min <= lambda_star", "lower model.lambda_star_min to model.lambda_star"),
    )

    def __init__(
        self,
        num_classes: PositiveInt = 1000,
        in_channels: PositiveInt = 3,
        input_size: PositiveInt = 224,
        J: PositiveInt = 4,
        L: PositiveInt = 8,
        proj_width: PositiveInt = 256,
        proj_kernel_size: PositiveInt = 3,
        atoms: PositiveInt = 2048,
        n_iterations: PositiveInt = 12,
        lambda_star: Positive = 0.05,
        lambda_star_min: Positive = 0.05,
        learn_lambda: bool = True,
        step: Positive = 1.0,
        positive: bool = True,
        output: Literal["code", "reconstruction"] = "code",
        pool: NonNegativeInt = 5,
        pool_stride: PositiveInt = 1,
        hidden: Annotated[Sequence[PositiveInt], Range(ge=1)] = (4096, 4096),
        dropout: Annotated[float, Range(ge=0, lt=1)] = 0.3,
        width: WidthMultiplier = 1.0,
    ) -> None:
        super().__init__()
        # the multiplier of reduced runs, as in the other scattering models
        proj_width, atoms = max(1, round(proj_width * width)), max(1, round(atoms * width))
        hidden = [max(1, round(h * width)) for h in hidden]
        size = input_size // 2**J
        if size < 1:
            raise ConfigError(f"model.J={J} is too large for {input_size}x{input_size} images")
        pooled = (size - pool) // pool_stride + 1 if pool else size
        if pooled < 1:
            raise ConfigError(f"model.pool={pool} exceeds the {size}x{size} scattering maps")
        istc = ISTC(
            proj_width,
            atoms,
            n_iterations,
            lambda_star,
            lambda_star_min,
            learn_lambda,
            step,
            positive,
            output,
        )
        self.blocks = nn.ModuleList(
            [
                ScatteringFront(in_channels, input_size, J, L),
                ProjectionBlock(
                    scattering_channels(in_channels, J, L), proj_width, proj_kernel_size
                ),
                istc,
            ]
        )
        code = atoms if output == "code" else proj_width
        self.norm = nn.BatchNorm2d(code)
        self.pool = nn.AvgPool2d(pool, pool_stride) if pool else nn.Identity()
        self.head = MLP(
            num_classes,
            code,
            pooled,
            widths=list(hidden),
            activation="relu",
            init="default",
            dropout=dropout,
        )

    def features(self, x: Tensor) -> Tensor:
        """The sparse codes (B, atoms, h, w)."""
        for block in self.blocks:
            x = block(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.pool(self.norm(self.features(x))))

    def analysis_layers(self) -> list[str]:
        """Layers for scatterlab.analysis: scattering, P x, sparse code, MLP hidden layers."""
        hidden = [f"head.layers.{i}" for i in range(len(self.head.layers))]
        return ["blocks.0", "blocks.1", "blocks.2", *hidden]

    def after_optimizer_step(self) -> None:
        self.blocks[2].after_optimizer_step()


def sparse_scattering_parameter_count(
    in_channels: int,
    num_classes: int,
    input_size: int,
    J: int,
    L: int,
    proj_width: int,
    atoms: int,
    hidden: Sequence[int],
    proj_kernel_size: int = 3,
    pool: int = 5,
    pool_stride: int = 1,
    learn_lambda: bool = True,
) -> dict[str, int]:
    """Closed-form parameter counts of `SparseScattering` (output="code")."""
    size = input_size // 2**J
    pooled = (size - pool) // pool_stride + 1 if pool else size
    p = scattering_channels(in_channels, J, L) * proj_width * proj_kernel_size**2
    d = proj_width * atoms
    dims = [atoms * pooled * pooled, *hidden, num_classes]
    mlp = sum(a * b + b for a, b in zip(dims[:-1], dims[1:], strict=True))
    total = p + d + int(learn_lambda) + 2 * atoms + mlp
    return {"P": p, "D": d, "head": 2 * atoms + mlp, "total": total}
