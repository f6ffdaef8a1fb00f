"""Microcanonical WPH synthesis (L-BFGS on the moment distance) and the Gaussian baseline.

Synthesis (Bruna & Mallat 2019; Allys et al. 2020; Zhang & Mallat 2021): start from Gaussian
white noise with the data's mean and standard deviation and minimise, for each synthesis y_i,

    loss_i = mean_k |phi_k(y_i) - target_k|^2

over the normalised WPH moments phi (``WPHOp`` with the normalisation fitted on the data).
``match="mean"``: every synthesis matches the moments averaged over the data fields (one field
or a set); ``match="each"``: synthesis i matches data field i mod T (keeps the field-to-field
spread of the statistics, e.g. of the mean magnetisation). The syntheses of one batch are one
L-BFGS variable; their losses are independent, so the summed loss has a block-diagonal Hessian.

Gaussian baseline: the maximum-entropy model of the power spectrum alone: the data's mean
periodogram with independent Gaussian Fourier coefficients (uniform random phases).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from scatterlab.errors import ConfigError
from scatterlab.wph.operator import WPHOp, check_fields

MATCH = ("mean", "each")


@dataclass
class SynthesisInfo:
    """What a synthesis did: losses are means over the batch of loss_i."""

    initial_loss: float = float("nan")
    final_loss: float = float("nan")
    iterations: int = 0
    evaluations: int = 0
    seconds: float = 0.0
    converged: bool = False
    history: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, float]:
        return {
            "initial_loss": self.initial_loss,
            "final_loss": self.final_loss,
            "iterations": float(self.iterations),
            "evaluations": float(self.evaluations),
            "seconds": self.seconds,
            "converged": float(self.converged),
        }


def moment_loss(op: WPHOp, y: Tensor, target: Tensor) -> Tensor:
    """Per-synthesis loss mean_k |phi_k(y_i) - target_k|^2. y (B, M, N), target (B or 1, K)
    -> (B,)."""
    return (op.moments(y) - target).abs().pow(2).mean(dim=1)


def _targets(op: WPHOp, data: Tensor, n: int, match: str, chunk: int = 16) -> Tensor:
    with torch.no_grad():
        phi = torch.cat([op.moments(data[i : i + chunk]) for i in range(0, len(data), chunk)])
    if match == "mean":
        return phi.mean(dim=0, keepdim=True).expand(n, -1)
    return phi[torch.arange(n) % len(phi)]


def synthesize(
    op: WPHOp,
    data: Tensor,
    n: int = 1,
    match: str = "mean",
    steps: int = 100,
    tol: float = 1e-6,
    history_size: int = 20,
    batch: int = 16,
    seed: int = 0,
    progress: bool = True,
    fit_normalization: bool = True,
    callback=None,
) -> tuple[Tensor, SynthesisInfo]:
    """Draw n syntheses of the fields ``data`` (T, M, N) or (T, 1, M, N) -> ((n, M, N), info).

    The operator's normalisation is fitted on ``data`` (unless ``fit_normalization=False``).
    Batches of ``batch`` syntheses run L-BFGS (strong Wolfe line search, ``history_size``) for at
    most ``steps`` iterations each and stop early once the batch's mean loss is below ``tol``
    or stops changing (relative change < 1e-9). Runs on the operator's device.
    ``callback(iteration, mean loss)`` is called after every L-BFGS iteration.
    """
    if match not in MATCH:
        raise ConfigError(f"unknown synthesis match {match!r}: use one of {MATCH}")
    if n < 1 or steps < 1 or batch < 1:
        raise ConfigError("synthesis n, steps and batch must be >= 1")
    if data.dim() == 4:
        data = data[:, 0]
    check_fields(data, op.size, op.J)
    # callable from Lightning's test stage, which runs under inference_mode
    with torch.inference_mode(False), torch.enable_grad():
        data = data.clone().to(op.psi_hat.device, op.psi_hat.dtype).reshape(-1, *op.size)
        return _synthesize(
            op,
            data,
            n,
            match,
            steps,
            tol,
            history_size,
            batch,
            seed,
            progress,
            fit_normalization,
            callback,
        )


def _synthesize(
    op: WPHOp,
    data: Tensor,
    n: int,
    match: str,
    steps: int,
    tol: float,
    history_size: int,
    batch: int,
    seed: int,
    progress: bool,
    fit_normalization: bool,
    callback=None,
) -> tuple[Tensor, SynthesisInfo]:
    dev, dt = op.psi_hat.device, op.psi_hat.dtype
    if fit_normalization:
        op.fit_normalization(data)
    targets = _targets(op, data, n, match)
    mean, std = float(data.mean()), float(data.std())
    gen = torch.Generator(device="cpu").manual_seed(seed)
    info = SynthesisInfo()
    out: list[Tensor] = []
    init_losses, final_losses = [], []
    t0 = time.time()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps * ((n + batch - 1) // batch), desc="WPH synthesis", leave=False)
    for start in range(0, n, batch):
        b = min(batch, n - start)
        y0 = mean + std * torch.randn(b, *op.size, generator=gen, dtype=torch.float64)
        y, stats = _lbfgs(
            op, y0.to(dev, dt), targets[start : start + b], steps, tol, history_size, bar, callback
        )
        init_losses.append(stats["initial"] * b)
        final_losses.append(stats["final"] * b)
        info.iterations += len(stats["history"])
        info.evaluations += stats["evaluations"]
        if start == 0:
            info.history = stats["history"]
        out.append(y)
    if bar is not None:
        bar.close()
    info.seconds = time.time() - t0
    info.initial_loss = sum(init_losses) / n
    info.final_loss = sum(final_losses) / n
    info.converged = info.final_loss < tol
    return torch.cat(out), info


def _lbfgs(
    op: WPHOp,
    y0: Tensor,
    target: Tensor,
    steps: int,
    tol: float,
    history_size: int,
    bar=None,
    callback=None,
) -> tuple[Tensor, dict]:
    """L-BFGS from y0 (B, M, N) on sum_i loss_i; stops early (see ``synthesize``)."""
    y = y0.clone().requires_grad_(True)
    b = y.shape[0]
    opt = torch.optim.LBFGS(
        [y],
        lr=1.0,
        max_iter=1,  # one iteration per step() call: the loop below counts and stops
        max_eval=25,
        history_size=history_size,
        tolerance_grad=0.0,
        tolerance_change=0.0,
        line_search_fn="strong_wolfe",
    )
    evals, last = [0], [float("nan")]

    def closure() -> Tensor:
        opt.zero_grad()
        loss = moment_loss(op, y, target).sum()
        loss.backward()
        evals[0] += 1
        last[0] = float(loss.detach()) / b
        return loss

    with torch.no_grad():
        initial = float(moment_loss(op, y, target).mean())
    prev, history = initial, []
    for it in range(steps):
        opt.step(closure)
        history.append(last[0])
        if callback is not None:
            callback(it, last[0])
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{last[0]:.3g}")
        done = last[0] < tol or abs(prev - last[0]) <= 1e-9 * max(abs(prev), 1e-30)
        if done or last[0] != last[0]:  # converged, stalled, or NaN
            if bar is not None:
                bar.update(steps - it - 1)
            break
        prev = last[0]
    with torch.no_grad():
        final = float(moment_loss(op, y, target).mean())
    stats = {"initial": initial, "final": final, "history": history, "evaluations": evals[0]}
    return y.detach(), stats


def gaussian_baseline(data: Tensor, n: int, seed: int = 0) -> Tensor:
    """Gaussian fields with the data's mean and mean periodogram: (T, [1,] M, N) -> (n, M, N).

    y = mean + ifft2(fft2(w) sqrt(S / (M N))) with w white N(0, 1) and S the mean over fields
    of |fft2(x - mean)|^2, so E|fft2(y - mean)|^2 = S at every wave vector (DC included).
    """
    if data.dim() == 4:
        data = data[:, 0]
    check_fields(data)
    x = data.double()
    mean = x.mean()
    s = torch.fft.fft2(x - mean).abs().pow(2).mean(dim=0)
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(n, *x.shape[-2:], generator=gen, dtype=torch.float64)
    amp = (s / (x.shape[-1] * x.shape[-2])).sqrt()
    return (mean + torch.fft.ifft2(torch.fft.fft2(w) * amp).real).to(data.dtype)
