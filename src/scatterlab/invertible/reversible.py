"""Memory-saving backpropagation through a stack of invertible blocks (RevNet, Gomez et al.
2017; memcnn): activations are recomputed from the outputs instead of being stored.

`reversible_stack(x, blocks)` runs the blocks without building a graph and keeps only the
final output. The backward walks the blocks in reverse: each block rebuilds its input from its
output (`block.recompute`, which also re-runs F with autograd on), backpropagates the incoming
gradient through that one block, and hands the input and its gradient to the block below. So
the activations of one block are alive at a time: memory O(1) in depth instead of O(depth), for
one extra F evaluation per block (a third more compute than a plain backward).

Two things must be reproduced exactly in the recomputation:
- dropout masks: each block's forward runs from a saved RNG state, restored when it is redone;
- BatchNorm running statistics: updated by the forward only (the recomputation would update
  them a second time; the buffers are saved and restored around it). In training mode BN uses
  the batch statistics of its input, which the reconstruction reproduces to float precision.
The gradients equal plain backprop's up to the reconstruction error (tested: float64 to ~1e-12).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack, contextmanager

import torch
from torch import Tensor, nn


def _rng_state(device: torch.device) -> tuple[Tensor, Tensor | None]:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


@contextmanager
def _rng_restored(state: tuple[Tensor, Tensor | None], device: torch.device):
    """Run with the RNG state `state`; the caller's state is restored afterwards."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.set_rng_state(state[0])
        if state[1] is not None:
            torch.cuda.set_rng_state(state[1], device)
        yield


@contextmanager
def _bn_frozen(module: nn.Module):
    """Keep the BatchNorm buffers (running mean/var, counters) as they are on entry."""
    saved = [
        (m, [b.clone() for b in m.buffers()])
        for m in module.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, bufs in saved:
                for b, old in zip(m.buffers(), bufs, strict=True):
                    b.copy_(old)


def _has_dropout(module: nn.Module) -> bool:
    return any(isinstance(m, nn.Dropout) and m.p > 0 for m in module.modules())


class _ReversibleStack(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, blocks: Sequence[nn.Module], prefix: int, *params: Tensor):
        ctx.blocks, ctx.prefix, ctx.states = blocks, prefix, []
        inp = x
        for block in blocks:  # autograd is off inside Function.forward: nothing is stored
            need_rng = block.training and _has_dropout(block)
            ctx.states.append(_rng_state(x.device) if need_rng else None)
            x = block(x)
        ctx.save_for_backward(inp if prefix else None, x)
        return x

    @staticmethod
    def backward(ctx, grad: Tensor):
        inp, y = ctx.saved_tensors
        y = y.detach()
        blocks, states, k = ctx.blocks, ctx.states, ctx.prefix
        param_grads: list[Tensor | None] = []
        for block, state in zip(reversed(blocks[k:]), reversed(states[k:]), strict=True):
            params = [p for p in block.parameters() if p.requires_grad]
            # the BN buffers are restored after the backward (BN's graph checks their version)
            with torch.enable_grad(), _bn_frozen(block), _maybe_rng(state, y.device):
                x1, x2, out = block.recompute(y)
                g1, g2, *gp = torch.autograd.grad(out, (x1, x2, *params), grad, allow_unused=True)
            param_grads = gp + param_grads
            grad = block.merge_input(g1, g2)
            y = block.merge_input(x1, x2).detach()  # the reconstructed input
            del out
        if k:  # the first k blocks: recomputed forwards from the stored input, exactly
            params = [p for b in blocks[:k] for p in b.parameters() if p.requires_grad]
            x = inp.detach().requires_grad_()
            with torch.enable_grad(), ExitStack() as frozen:
                out = x
                for block, state in zip(blocks[:k], states[:k], strict=True):
                    frozen.enter_context(_bn_frozen(block))
                    with _maybe_rng(state, x.device):
                        out = block(out)
                gx, *gp = torch.autograd.grad(out, (x, *params), grad, allow_unused=True)
            param_grads, grad = gp + param_grads, gx
        return (grad, None, None, *param_grads)


@contextmanager
def _maybe_rng(state: tuple[Tensor, Tensor | None] | None, device: torch.device):
    if state is None:
        yield
    else:
        with _rng_restored(state, device):
            yield


def reversible_stack(x: Tensor, blocks: Sequence[nn.Module], prefix: int = 0) -> Tensor:
    """blocks[-1](...blocks[0](x)) with the memory-saving backward (module docstring).

    Each block must provide `recompute(y) -> (x1, x2, out)` and `merge_input(a, b)` (see
    `IRevBlock`). The first `prefix` blocks are instead recomputed forwards from the stored
    input x (as gradient checkpointing does): behind a zero-padding block some channels are
    exact zeros that sit on ReLU kinks (with BN shifts at 0 they stay there in training), and a
    reconstruction off by 1e-16 would take the other branch of the kink. Parameters that
    require grad get their gradients as with plain backprop.
    """
    blocks = list(blocks)
    params = [p for b in blocks for p in b.parameters() if p.requires_grad]
    return _ReversibleStack.apply(x, blocks, prefix, *params)
