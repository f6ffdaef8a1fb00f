"""i-RevNet (Jacobsen, Smeulders & Oyallon, ICLR 2018): a classifier that is invertible up to
its final projection onto the classes.

A block acts on a tensor x (B, C, H, W) seen as two halves (x1, x2) of C/2 channels:

    y1 = F(x2) + S(x1),   y2 = S(x2),   output cat(y2, y1),
    inverse: x2 = S^-1(y2),   x1 = S^-1(y1 - F(x2)),

F a bottleneck (BN-ReLU-conv3x3 three times, widths out/mult, out/mult, out; no BN-ReLU in
front of the first block) and S the identity (stride 1) or the invertible space-to-depth
squeeze (stride 2: each 2x2 patch becomes 4 channels, (B, c, H, W) -> (B, 4c, H/2, W/2)).
Whatever F is, the block is a bijection: F never has to be inverted.

Injective variant: a stride-1 block whose output is wider than its input (2 * out > C)
first zero-pads the channels to 2 * out (the official CIFAR net pads 3 -> 32 channels); the
inverse drops the padded channels. So the whole map x -> features(x) is injective, and
bijective when no block pads. Channel rules checked in `__init__`: a stride-1 block needs
2 * out >= C, a stride-2 block C even and out = 2 * C.

The head (BN, ReLU, global average pooling, linear) is the only non-invertible part.
`recompute=True` trains with the memory-saving backward of `scatterlab.invertible.reversible`
(activations are recomputed from the block outputs instead of being stored).
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scatterlab.errors import ConfigError
from scatterlab.ranges import Range

# Upper bounds of the config ranges: far above the published nets (72 blocks in a stage, 1536
# channels), low enough that an accepted value builds in memory.
MAX_BLOCKS, MAX_CHANNELS = 256, 4096
MAX_PARAMS = 300_000_000  # 1.2 GB of float32 weights, 2.4x the ImageNet net


def squeeze(x: Tensor, block: int = 2) -> Tensor:
    """Invertible down-sampling (B, C, H, W) -> (B, C * block^2, H / block, W / block).

    Output channel c * block^2 + i * block + j holds pixel (i, j) of each block x block patch
    of input channel c (torch.nn.functional.pixel_unshuffle's order).
    """
    return F.pixel_unshuffle(x, block)


def unsqueeze(x: Tensor, block: int = 2) -> Tensor:
    """Inverse of `squeeze`: (B, C * block^2, H, W) -> (B, C, H * block, W * block)."""
    return F.pixel_shuffle(x, block)


class Bottleneck(nn.Module):
    """F of a block: [BN-ReLU] conv(stride) - BN-ReLU - conv - dropout - BN-ReLU - conv.

    (B, c_in, H, W) -> (B, c_out, H / stride, W / stride); no biases (BN follows). Kernel
    sizes `kernels`: (3, 3, 3) in the released PyTorch code, (1, 3, 1) in the paper's
    (TensorFlow) models, whose parameter counts its Table 1 gives.
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        stride: int,
        first: bool,
        mult: int,
        dropout: float,
        affine: bool,
        kernels: tuple[int, int, int] = (3, 3, 3),
    ) -> None:
        super().__init__()
        mid = c_out // mult
        k1, k2, k3 = kernels
        layers: list[nn.Module] = [] if first else [nn.BatchNorm2d(c_in, affine=affine), nn.ReLU()]
        layers += [
            nn.Conv2d(c_in, mid, k1, stride, k1 // 2, bias=False),
            nn.BatchNorm2d(mid, affine=affine),
            nn.ReLU(),
            nn.Conv2d(mid, mid, k2, 1, k2 // 2, bias=False),
            nn.Dropout(dropout),
            nn.BatchNorm2d(mid, affine=affine),
            nn.ReLU(),
            nn.Conv2d(mid, c_out, k3, 1, k3 // 2, bias=False),
        ]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class IRevBlock(nn.Module):
    """One i-RevNet block on merged tensors: (B, c_in, H, W) -> (B, 2 * out, H/s, W/s).

    c_in: input channels; out: channels of each output half; stride 1 or 2. A stride-1 block
    with 2 * out > c_in zero-pads its input to 2 * out channels first (injective).
    """

    def __init__(
        self,
        c_in: int,
        out: int,
        stride: int,
        first: bool = False,
        mult: int = 4,
        dropout: float = 0.0,
        affine: bool = True,
        kernels: tuple[int, int, int] = (3, 3, 3),
    ) -> None:
        super().__init__()
        self.c_in, self.out, self.stride = c_in, out, stride
        self.pad = 2 * out - c_in if stride == 1 else 0
        half = (c_in + self.pad) // 2  # channels of x1 and x2 before the squeeze
        self.F = Bottleneck(half, out, stride, first, mult, dropout, affine, kernels)

    def _halves(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.pad:
            x = F.pad(x, (0, 0, 0, 0, 0, self.pad))  # zeros appended along channels
        return x.chunk(2, dim=1)

    def _s(self, x: Tensor) -> Tensor:
        return squeeze(x) if self.stride == 2 else x

    def _s_inv(self, x: Tensor) -> Tensor:
        return unsqueeze(x) if self.stride == 2 else x

    def forward(self, x: Tensor) -> Tensor:
        x1, x2 = self._halves(x)
        return torch.cat((self._s(x2), self.F(x2) + self._s(x1)), dim=1)

    def inverse(self, y: Tensor) -> Tensor:
        """x from y = forward(x): (B, 2 * out, H', W') -> (B, c_in, H, W). With padding it is
        a left inverse: the padded channels are dropped."""
        y2, y1 = y.split(self.out, dim=1)
        x2 = self._zero_pad(self._s_inv(y2), self.out)
        x1 = self._s_inv(y1 - self.F(x2))
        return self.merge_input(x1, x2)

    def recompute(self, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Rebuild the input halves from the output y and re-run the block with autograd on.

        Returns (x1, x2, out): x1, x2 fresh leaves requiring grad (the padded halves), out the
        block output recomputed from them (a graph down to x1, x2 and the parameters). F runs
        once: the x1 reconstruction reuses F(x2) of the recomputed graph.
        """
        y2, y1 = y.split(self.out, dim=1)
        x2 = self._zero_pad(self._s_inv(y2).detach(), self.out).requires_grad_()
        f = self.F(x2)
        x1 = self._zero_pad(self._s_inv(y1 - f.detach()).detach(), 0).requires_grad_()
        return x1, x2, torch.cat((self._s(x2), f + self._s(x1)), dim=1)

    def _zero_pad(self, half: Tensor, start: int) -> Tensor:
        """Set the zero-padded channels of a reconstructed half (channels start.. of the padded
        input) to exact zeros, their known value: F of the first block only ever sees zeros
        there, so its BN running variances decay to ~0 and would amplify rounding noise
        1/sqrt(eps) = 316x per BN; in training mode the noise would also cross ReLU kinks that
        the forward hit exactly (BN shifts start at 0) and change the gradient."""
        if self.pad:
            first = max(self.c_in - start, 0)  # first padded channel within this half
            if first < half.shape[1]:
                half = half.clone()
                half[:, first:] = 0
        return half

    def merge_input(self, a: Tensor, b: Tensor) -> Tensor:
        """The block input from its (padded) halves; maps the halves' gradients to the input's
        gradient as well (the padding is a constant)."""
        x = torch.cat((a, b), dim=1)
        return x[:, : self.c_in] if self.pad else x


class IRevNet(nn.Module):
    """i-RevNet classifier; `forward` gives logits (B, num_classes).

    Input (B, in_channels, input_size, input_size). `init_ds=2` (or 4) squeezes the input
    first, 2x2 (4x4) patches to channels (the ImageNet nets); stage k has blocks[k] blocks,
    its first of stride strides[k], each output half channels[k] channels (null: the
    official default, (C0/2) * 4^k with C0 the channels after the initial squeeze).
    features(x) (B, 2 * channels[-1], h, w) is the invertible representation,
    inverse(features(x)) = x. dropout inside F (0.1 in the official CIFAR runs), affine_bn:
    learned BN scales/shifts, mult: bottleneck width divisor, kernels: the kernel sizes of F's
    three convolutions ([3, 3, 3] as the released code; [1, 3, 1] as the paper's models).
    """

    # checked on the config before anything is built (scatterlab.config_check); the channel
    # rules of each block are checked in __init__ (_check_block)
    CONFIG_CHECKS: tuple[tuple[str, str], ...] = (
        (
            "len(blocks) == len(strides) and (channels is None or len(channels) == len(blocks))",
            "model.blocks, model.strides and model.channels need one entry per stage",
        ),
        (
            "input_size % (max(init_ds, 1) * 2 ** strides.count(2)) == 0",
            "the input size cannot be squeezed by init_ds and every stride-2 stage: use fewer "
            "stride-2 stages or a divisible model.input_size",
        ),
        ("len(kernels) == 3", "model.kernels needs 3 kernel sizes, e.g. [3,3,3] or [1,3,1]"),
    )

    def __init__(
        self,
        num_classes: Annotated[int, Range(ge=1, le=100_000)],
        in_channels: Annotated[int, Range(ge=1, le=MAX_CHANNELS)],
        input_size: Annotated[int, Range(ge=1, le=65_536)],
        blocks: list[Annotated[int, Range(ge=1, le=MAX_BLOCKS)]] = (2, 2, 2),
        strides: list[Literal[1, 2]] = (1, 2, 2),
        channels: list[Annotated[int, Range(ge=1, le=MAX_CHANNELS)]] | None = None,
        init_ds: Literal[0, 2, 4] = 0,
        mult: Annotated[int, Range(ge=1, le=MAX_CHANNELS)] = 4,
        dropout: Annotated[float, Range(ge=0, lt=1)] = 0.0,
        affine_bn: bool = True,
        recompute: bool = False,
        kernels: list[Literal[1, 3]] = (3, 3, 3),
    ) -> None:
        super().__init__()
        blocks, strides = [int(b) for b in blocks], [int(s) for s in strides]
        kernels = tuple(int(k) for k in kernels)
        if len(kernels) != 3:
            raise ConfigError(
                f"model.kernels needs the kernel sizes of F's three convolutions (got "
                f"{len(kernels)}): e.g. [3,3,3] (released code) or [1,3,1] (the paper)"
            )
        c0 = in_channels * max(init_ds, 1) ** 2
        if channels is None:
            channels = [max(c0 // 2, 1) * 4**k for k in range(len(blocks))]
        channels = [int(c) for c in channels]
        if not (len(blocks) == len(strides) == len(channels)) or not blocks:
            raise ConfigError(
                f"model.blocks, model.strides and model.channels must have the same length "
                f"(got {len(blocks)}, {len(strides)}, {len(channels)})"
            )
        down = max(init_ds, 1) * 2 ** strides.count(2)
        if input_size % down:
            raise ConfigError(
                f"model.input_size={input_size} cannot be squeezed {down}x (init_ds and the "
                f"stride-2 stages): use an input size divisible by {down}, or fewer stride-2 stages"
            )
        self.init_ds, self.recompute = init_ds, recompute
        plan, c = [], c0  # (c_in, out, stride) of every block, checked before anything is built
        for k, (n, s, out) in enumerate(zip(blocks, strides, channels, strict=True)):
            for i in range(n):
                stride = s if i == 0 else 1
                _check_block(k, c, out, stride, mult)
                plan.append((c, out, stride))
                c = 2 * out
        size = sum(_block_params(ci, out, st, mult, kernels) for ci, out, st in plan)
        if size > MAX_PARAMS:
            raise ConfigError(
                f"model: blocks={blocks}, channels={channels}, mult={mult} would have "
                f"{size:,} parameters (more than {MAX_PARAMS:,}; the ImageNet i-RevNet has "
                f"125M): use fewer blocks, fewer channels or a larger model.mult"
            )
        stack = [
            IRevBlock(ci, out, st, i == 0, mult, dropout, affine_bn, kernels)
            for i, (ci, out, st) in enumerate(plan)
        ]
        self.stack = nn.ModuleList(stack)
        # blocks up to the one after the last zero-padding block: recomputed forwards, not by
        # inversion, in the memory-saving backward (see reversible_stack)
        padded = [i for i, b in enumerate(stack) if b.pad]
        self.exact_prefix = min(padded[-1] + 2, len(stack)) if padded else 0
        self.out_channels, self.out_size = c, input_size // down
        # momentum 0.9 on the final BN, as the official code
        self.bn = nn.BatchNorm2d(c, momentum=0.9)
        self.linear = nn.Linear(c, num_classes)

    @property
    def injective_only(self) -> bool:
        """True when some block zero-pads (the map is injective, not bijective)."""
        return any(b.pad for b in self.stack)

    def features(self, x: Tensor) -> Tensor:
        """The invertible representation: (B, C, H, W) -> (B, out_channels, out_size, out_size)."""
        if self.init_ds:
            x = squeeze(x, self.init_ds)
        if self.recompute and torch.is_grad_enabled():
            from scatterlab.invertible.reversible import reversible_stack

            return reversible_stack(x, self.stack, self.exact_prefix)
        for block in self.stack:
            x = block(x)
        return x

    def inverse(self, z: Tensor) -> Tensor:
        """x from z = features(x), block by block in reverse."""
        for block in reversed(self.stack):
            z = block.inverse(z)
        return unsqueeze(z, self.init_ds) if self.init_ds else z

    def classify(self, z: Tensor) -> Tensor:
        """The non-invertible head: BN, ReLU, global average pool, linear -> logits."""
        return self.linear(F.relu(self.bn(z)).mean((2, 3)))

    def forward(self, x: Tensor) -> Tensor:
        return self.classify(self.features(x))

    def analysis_layers(self) -> list[str]:
        """Outputs of the blocks (for callbacks=analysis): every block of short nets, else the
        last block of each stage and every 6th."""
        n = len(self.stack)
        keep = range(n) if n <= 12 else sorted({*range(5, n, 6), n - 1})
        return [f"stack.{i}" for i in keep]


def _block_params(
    c_in: int, out: int, stride: int, mult: int, kernels: tuple[int, ...] = (3, 3, 3)
) -> int:
    """Parameters of one block's F (convolutions and affine BN, as IRevBlock builds it; the
    first block's missing input BN is ignored: an upper bound)."""
    half = (c_in + (2 * out - c_in if stride == 1 else 0)) // 2
    mid = out // mult
    k1, k2, k3 = (k * k for k in kernels)
    return 2 * half + k1 * half * mid + 2 * mid + k2 * mid * mid + 2 * mid + k3 * mid * out


def _check_block(stage: int, c_in: int, out: int, stride: int, mult: int) -> None:
    """ConfigError unless a block with c_in input channels can output 2 * out channels."""
    where = f"stage {stage} (model.channels[{stage}]={out})"
    if out < mult:
        raise ConfigError(
            f"{where}: the bottleneck has channels // mult = 0 channels; use channels >= "
            f"model.mult={mult} or a smaller model.mult"
        )
    if stride == 1 and 2 * out < c_in:
        raise ConfigError(
            f"{where}: a stride-1 block cannot shrink {c_in} channels to 2 x {out} without "
            f"losing information; use model.channels[{stage}] >= {(c_in + 1) // 2}"
        )
    if stride == 2 and (c_in % 2 or out != 2 * c_in):
        raise ConfigError(
            f"{where}: a stride-2 block squeezes each half of its {c_in} input channels 4x, so "
            f"it needs an even input and model.channels[{stage}] = {2 * c_in}"
        )
