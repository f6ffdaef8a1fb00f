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
from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Params = dict[str, Tensor]


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
    """A CIFAR-10 subset from JPEG folders (root/train/<class>/*.jpg, root/test/<class>/*.jpg:
    the layout of `tar xJf cifar10-jpeg.tar.xz -C root`, no download): n_train random training
    and n_test random test images, decoded alone (not the 60,000), normalised per channel.
    Optional data: only read when module.data_root is set."""
    from scatterlab.data.datasets import read_folder_splits

    mean = torch.tensor([0.491, 0.482, 0.447])[:, None, None]
    std = torch.tensor([0.247, 0.243, 0.262])[:, None, None]
    counts = {"train": n_train, "test": n_test}
    hint = " or drop data_root to use the embedded digits"
    out = []
    for x, labels in read_folder_splits(root, counts, seed, "RGB", hint):
        out += [(x.float() / 255 - mean) / std, labels]
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


JvpMode = Literal["auto", "func", "double_vjp"]


class LinearisedMap:
    """theta_0's Jacobian J of p -> fn(p, x) as two linear maps, J v and J^T r, never formed.

    mode "func": forward mode (torch.func.jvp) and torch.func.vjp; needs every custom
    autograd.Function of fn to support functorch (setup_context, jvp).
    mode "double_vjp": plain reverse-mode autograd only, so models with old-style custom
    Functions work (the learned scattering network's modulus and fused standardization):
    g(u) = J^T u is built once with create_graph=True from a dummy u; it is linear in u, so
    J v = d/du <g(u), v> for any u, one backward pass through g's graph (kept) per product.
    Needs the custom Functions' backward to be made of differentiable torch ops (it is for
    scatterlab's; a once_differentiable backward would raise). The forward graph of fn is
    kept as well, so J^T r is one backward pass.
    mode "auto": "func" if a first forward-mode product goes through, else "double_vjp".
    """

    def __init__(
        self,
        fn: Callable[[Params, Tensor], Tensor],
        params0: Params,
        x: Tensor,
        mode: JvpMode = "auto",
    ) -> None:
        if mode not in ("auto", "func", "double_vjp"):
            raise ValueError(f"mode={mode!r}: use auto, func or double_vjp")
        self.keys = list(params0)
        if mode == "auto":
            try:
                zero = {k: torch.zeros_like(t) for k, t in params0.items()}
                torch.func.jvp(lambda p: fn(p, x), (params0,), (zero,))
                mode = "func"
            except RuntimeError:  # functorch refuses autograd.Functions without setup_context
                mode = "double_vjp"
        self.mode = mode
        if mode == "func":
            self._f = lambda p: fn(p, x)
            self._p0 = params0
            self.out, self._vjp = torch.func.vjp(self._f, params0)
            return
        with torch.enable_grad():
            self._leaves = [params0[k].detach().requires_grad_(True) for k in self.keys]
            out = fn(dict(zip(self.keys, self._leaves, strict=True)), x)
            self._u = torch.zeros_like(out, requires_grad=True)
            self._g = torch.autograd.grad(out, self._leaves, self._u, create_graph=True)
        self.out = out

    def jvp(self, v: Params) -> Tensor:
        """J v (shape of fn's output)."""
        if self.mode == "func":
            return torch.func.jvp(self._f, (self._p0,), (v,))[1]
        vs = [v[k] for k in self.keys]
        (jv,) = torch.autograd.grad(self._g, self._u, vs, retain_graph=True)
        return jv.detach()

    def vjp(self, r: Tensor) -> Params:
        """J^T r (a parameter dict)."""
        if self.mode == "func":
            return self._vjp(r)[0]
        grads = torch.autograd.grad(self.out, self._leaves, r, retain_graph=True)
        return {k: g.detach() for k, g in zip(self.keys, grads, strict=True)}


def linearised(
    fn: Callable[[Params, Tensor], Tensor],
    params0: Params,
    x: Tensor,
    y_onehot: Tensor,
    x_test: Tensor,
    steps: int,
    lr: float,
    mode: JvpMode = "auto",
) -> dict[str, object]:
    """GD of the linearised model g(v) = J(theta_0) v on L = (1/2) mean (g - Y)^2 from v = 0
    (the same for every alpha, module docstring), in parameter space without forming J:
    J v and J^T r by `LinearisedMap` (torch.func forward mode, or the double-vjp trick for
    models with old-style custom autograd Functions; `mode`). Cost per step about one
    training step of the network; memory that of the network (twice with double_vjp).
    Returns `train` (n, classes) and `test` (n_test, classes) predictions, the parameter
    displacement `v`, the training `loss` at every step and the `mode` used."""
    lin = LinearisedMap(fn, params0, x, mode)
    v = {k: torch.zeros_like(t) for k, t in params0.items()}
    losses = []
    for t in range(steps + 1):
        g = lin.jvp(v)
        r = g - y_onehot
        losses.append(float(0.5 * (r**2).mean()))
        if t == steps or not math.isfinite(losses[-1]):
            break
        grad = lin.vjp(r / r.numel())
        v = {k: v[k] - lr * grad[k] for k in v}
    mode = lin.mode
    del lin
    g_test = LinearisedMap(fn, params0, x_test, mode).jvp(v)
    return {"train": g.detach(), "test": g_test.detach(), "v": v, "loss": losses, "mode": mode}


def tangent_kernel_top(
    fn: Callable[[Params, Tensor], Tensor],
    params0: Params,
    x: Tensor,
    iters: int = 30,
    mode: JvpMode = "auto",
    seed: int = 0,
) -> float:
    """Largest eigenvalue of J^T J / (outputs) at theta_0 (the Hessian of the training loss
    of the linearised model), by power iteration with J v and J^T r: GD on it is stable for
    steps below 2 / this value."""
    lin = LinearisedMap(fn, params0, x, mode)
    gen = torch.Generator().manual_seed(seed)
    v = {k: torch.randn(t.shape, generator=gen, dtype=t.dtype) for k, t in params0.items()}
    lam = 0.0
    for _ in range(iters):
        norm = math.sqrt(sum(float((t**2).sum()) for t in v.values()))
        v = {k: t / norm for k, t in v.items()}
        jv = lin.jvp(v)
        w = lin.vjp(jv / jv.numel())
        lam = sum(float((w[k] * v[k]).sum()) for k in v)
        v = w
    return lam


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


# --- The learned scattering network (scatterlab.models.LearnedScattering) as f(theta, x) -----


def init_scattering(
    widths: Sequence[int],
    L: int,
    x_stats: Tensor,
    in_channels: int = 1,
    image_size: int = 8,
    num_classes: int = 10,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.nn.Module, Params]:
    """A learned scattering network (blocks W rho Std P N, modulus, complex P_j, skip, the
    project's default half-octave filters) and its initial parameters theta_0.

    Its standardizations and the classifier's BatchNorm are frozen at theta_0: their
    statistics are those of x_stats (the training images) at theta_0, then the network is
    put in eval mode, so f(theta, x) is a function of each image alone (with batch
    statistics it would depend on the whole batch and on theta through them: its
    linearisation would not be that of a per-image model). GEMMs in `dtype` (no bf16).
    Use with `functional_forward(model)`.
    """
    from scatterlab.models.scattering import LearnedScattering

    torch.manual_seed(seed)  # the model initialises from the global generator
    model = LearnedScattering(
        num_classes, in_channels, image_size, list(widths), L=L, cpu_matmul="float32"
    ).to(dtype)
    for mod in model.modules():
        if hasattr(mod, "running_mean"):
            mod.momentum = 1.0  # the running estimates become exactly x_stats' statistics
    with torch.no_grad():
        model.train()(x_stats.to(dtype))
    model.eval()
    return model, {k: v.detach().clone() for k, v in model.named_parameters()}


def functional_forward(model: torch.nn.Module) -> Callable[[Params, Tensor], Tensor]:
    """f(params, x) = model with its parameters replaced by params (torch.func.functional_call;
    differentiable in params with plain autograd)."""

    def fn(params: Params, x: Tensor) -> Tensor:
        return torch.func.functional_call(model, params, (x,))

    return fn


def scattering_preactivations(
    model: torch.nn.Module, params: Params, x: Tensor
) -> list[tuple[Tensor, Tensor]]:
    """The inputs (Re z, Im z) of every modulus of the scattering network at params: the
    wavelet coefficients of each block (complex channels; real channels with Im z = 0, whose
    modulus is |x|). For the phase-collapse activation pattern (`unchanged_phase_patterns`)."""
    from scatterlab.models.scattering import split

    out = []
    own = dict(model.named_parameters())
    saved = {k: v.detach().clone() for k, v in own.items()}
    with torch.no_grad():
        for k, v in params.items():  # theta in place, restored below
            own[k].copy_(v)
        for block in model.blocks:
            m = block.in_complex
            if block.fused_rho:
                re, im = block.wavelet.complex_coefficients(x)
                out.append((re, im))
            else:
                low, high_re, high_im = block.wavelet(x, m)
                low_re, low_im = split(low, m)
                out.append(
                    (
                        torch.cat([low_re[:, :m].flatten(1), high_re.flatten(1)], 1),
                        torch.cat([low_im.flatten(1), high_im.flatten(1)], 1),
                    )
                )
                low_r = low_re[:, m:].flatten(1)
                out.append((low_r, torch.zeros_like(low_r)))
            x = block(x).to(x.dtype)
        for k, v in saved.items():
            own[k].copy_(v)
    return out


def unchanged_phase_patterns(
    model: torch.nn.Module, params: Params, params0: Params, x: Tensor
) -> float:
    """The scattering network's analogue of the fraction of unchanged ReLU patterns: the
    fraction of (image, modulus input z) pairs whose phase stays in the same quadrant, i.e.
    whose sign pattern (Re z > 0, Im z > 0) is the same at theta and theta_0 (real inputs:
    the sign of z). A ReLU's pattern is the phase of a real pre-activation (0 or pi); the
    quadrant is the pattern of the 'relu' nonlinearity ReLU(Re z) + i ReLU(Im z) of the same
    network, and |z| = Re(z e^{-i arg z}) is linear in z while arg z stays put."""
    a = scattering_preactivations(model, params, x)
    b = scattering_preactivations(model, params0, x)
    same = total = 0
    for (re, im), (re0, im0) in zip(a, b, strict=True):
        ok = ((re > 0) == (re0 > 0)) & ((im > 0) == (im0 > 0))
        same, total = same + int(ok.sum()), total + ok.numel()
    return same / total
