"""Lazy training of a small CNN on real images (Chizat, Oyallon & Bach 2019, CIFAR panel shape).

The model g_alpha(theta) = alpha (f(theta) - f(theta_0)) of a small ReLU CNN f with 10 outputs,
trained by full-batch gradient descent on the square loss L(g_alpha) / alpha^2,
L(g) = (1/2) mean_{k, c} (g_c(x_k) - Y_kc)^2 with one-hot Y. For every alpha the function
moves at the same speed at initialisation (the tangent kernel does not depend on alpha);
large alpha is the lazy regime (theta moves by O(1/alpha), the network follows its
linearisation), small alpha the active one. The step is min(lr, lr_active * alpha): lr is
bounded by 2 / (the largest eigenvalue of the tangent kernel), the same for every alpha, but
the Hessian of L(g_alpha) / alpha^2 also carries a term (1/alpha) <grad L, D^2 f>, so for
small alpha the step must shrink like alpha (in the time t / alpha the small-alpha limit is a
growth of the weights until alpha f ~ Y); lr_active is the constant of that regime.

The linearised model g_lin = <J(theta_0), v> (J the Jacobian of f at theta_0) trained the same
way does not depend on alpha at all (substitute v = alpha (theta - theta_0)): it is computed
once, in parameter space by Jacobian-vector products (torch.func.jvp / vjp, J never formed).

Plain torch, float32 (fast on CPU; the smallest weight changes measured, ~1e-3 relative at
alpha = 100, are far above its resolution).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Params = dict[str, Tensor]
Dataset = Literal["digits", "cifar10"]


def load_digits_split(n_train: int, n_test: int, seed: int = 0) -> tuple[Tensor, ...]:
    """The scikit-learn digits (1797 images 8x8, embedded, no download): a random split of
    n_train + n_test images, normalised (mean 0.3, std 0.4 of pixels in [0, 1], as the
    project's digits data module). Returns x_train (n, 1, 8, 8), y_train, x_test, y_test."""
    from sklearn.datasets import load_digits

    d = load_digits()
    if n_train + n_test > len(d.target):
        raise ValueError(
            f"n_train + n_test = {n_train + n_test} is more than the {len(d.target)} digits"
        )
    x = (torch.tensor(d.images / 16.0, dtype=torch.float32)[:, None] - 0.3) / 0.4
    y = torch.as_tensor(d.target).long()
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    tr, te = perm[:n_train], perm[n_train : n_train + n_test]
    return x[tr], y[tr], x[te], y[te]


def load_cifar_split(root: str, n_train: int, n_test: int, seed: int = 0) -> tuple[Tensor, ...]:
    """A CIFAR-10 subset (torchvision layout under root, no download): n_train random training
    and n_test random test images, normalised per channel. Optional data: only used when
    asked for (module.dataset=cifar10)."""
    from torchvision.datasets import CIFAR10

    out = []
    gen = torch.Generator().manual_seed(seed)
    mean = torch.tensor([0.491, 0.482, 0.447])[:, None, None]
    std = torch.tensor([0.247, 0.243, 0.262])[:, None, None]
    for train, n in ((True, n_train), (False, n_test)):
        ds = CIFAR10(root, train=train, download=False)
        idx = torch.randperm(len(ds.targets), generator=gen)[:n]
        x = torch.as_tensor(ds.data[idx.numpy()]).permute(0, 3, 1, 2).float() / 255
        out += [(x - mean) / std, torch.as_tensor(ds.targets)[idx].long()]
    return tuple(out)


def init_cnn(
    channels: int,
    in_channels: int,
    image_size: int,
    num_classes: int = 10,
    generator: torch.Generator | None = None,
) -> Params:
    """He-initialised weights of `cnn_forward` (no biases): conv 3x3 in -> c, conv 3x3
    c -> c, 2x2 average pooling, linear -> num_classes."""
    c, feat = channels, channels * (image_size // 2) ** 2

    def randn(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=generator)

    return {
        "conv1": randn(c, in_channels, 3, 3) * math.sqrt(2 / (9 * in_channels)),
        "conv2": randn(c, c, 3, 3) * math.sqrt(2 / (9 * c)),
        "fc": randn(num_classes, feat) * math.sqrt(1 / feat),
    }


def cnn_forward(params: Params, x: Tensor) -> Tensor:
    """Logits (n, classes) of the small ReLU CNN (2 convolutions, pooling, linear)."""
    return cnn_preactivations(params, x)[0]


def cnn_preactivations(params: Params, x: Tensor) -> tuple[Tensor, list[Tensor]]:
    """Logits and the pre-activations of every ReLU (their signs are the activation pattern)."""
    z1 = F.conv2d(x, params["conv1"], padding=1)
    z2 = F.conv2d(torch.relu(z1), params["conv2"], padding=1)
    h = F.avg_pool2d(torch.relu(z2), 2)
    return h.flatten(1) @ params["fc"].T, [z1, z2]


def num_params(params: Params) -> int:
    return sum(v.numel() for v in params.values())


def linearised(
    fn: Callable[[Params, Tensor], Tensor],
    params0: Params,
    x: Tensor,
    y_onehot: Tensor,
    x_test: Tensor,
    steps: int,
    lr: float,
) -> dict[str, object]:
    """GD of the linearised model g(v) = J(theta_0) v on L = (1/2) mean (g - Y)^2 from v = 0
    (the same for every alpha, module docstring), in parameter space without forming J:
    J v by forward-mode products (torch.func.jvp), J^T r by one reusable reverse-mode product
    (torch.func.vjp at theta_0). Cost per step about one training step of the network;
    memory that of the network. Returns `train` (n, classes) and `test` (n_test, classes)
    predictions, the parameter displacement `v` and the training `loss` at every step."""

    def f_train(p: Params) -> Tensor:
        return fn(p, x)

    _, vjp_fn = torch.func.vjp(f_train, params0)
    v = {k: torch.zeros_like(t) for k, t in params0.items()}
    losses = []
    for t in range(steps + 1):
        g = torch.func.jvp(f_train, (params0,), (v,))[1]
        r = g - y_onehot
        losses.append(float(0.5 * (r**2).mean()))
        if t == steps or not math.isfinite(losses[-1]):
            break
        (grad,) = vjp_fn(r / r.numel())
        v = {k: v[k] - lr * grad[k] for k in v}
    g_test = torch.func.jvp(lambda p: fn(p, x_test), (params0,), (v,))[1]
    return {"train": g.detach(), "test": g_test.detach(), "v": v, "loss": losses}


def train_scaled(
    fn: Callable[[Params, Tensor], Tensor],
    params0: Params,
    x: Tensor,
    y_onehot: Tensor,
    alpha: float,
    steps: int,
    lr: float,
    lr_active: float | None = None,
) -> tuple[Params, list[float]]:
    """Full-batch GD on L(alpha (f(theta) - f(theta_0))) / alpha^2 from theta_0, with step
    min(lr, lr_active * alpha) (module docstring; lr_active None: lr). Returns the final
    parameters and the unscaled training loss L(g_alpha) at every step (the last entry after
    the last step)."""
    f0 = fn(params0, x).detach()
    step = step_size(alpha, lr, lr_active)
    p = {k: v.clone().requires_grad_(True) for k, v in params0.items()}
    losses = []
    for t in range(steps + 1):
        g = alpha * (fn(p, x) - f0)
        loss = 0.5 * ((g - y_onehot) ** 2).mean()
        losses.append(float(loss.detach()))
        if t == steps or not math.isfinite(losses[-1]):
            break
        grads = torch.autograd.grad(loss / alpha**2, list(p.values()))
        with torch.no_grad():
            for v, gr in zip(p.values(), grads, strict=True):
                v -= step * gr
    return {k: v.detach() for k, v in p.items()}, losses


def step_size(alpha: float, lr: float, lr_active: float | None = None) -> float:
    """min(lr, lr_active * alpha): lr for the lazy side (bounded by 2 / the largest tangent
    kernel eigenvalue, the same for every alpha), shrinking like alpha on the active side."""
    return min(lr, (lr if lr_active is None else lr_active) * alpha)


def relative_change(params: Params, params0: Params) -> float:
    """|theta - theta_0| / |theta_0| over all parameters."""
    num = sum(float(((params[k] - params0[k]) ** 2).sum()) for k in params0)
    den = sum(float((params0[k] ** 2).sum()) for k in params0)
    return math.sqrt(num / den)


def unchanged_patterns(params: Params, params0: Params, x: Tensor) -> float:
    """Fraction of (input, ReLU unit) pairs whose sign 1{pre-activation > 0} is the same at
    theta and theta_0, over every ReLU of the network on inputs x."""
    _, pre = cnn_preactivations(params, x)
    _, pre0 = cnn_preactivations(params0, x)
    same = sum(int(((a > 0) == (b > 0)).sum()) for a, b in zip(pre, pre0, strict=True))
    return same / sum(a.numel() for a in pre)
