"""Reconstruction error of an invertible net: || inverse(features(x)) - x || / || x ||."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn


@torch.no_grad()
def reconstruction_error(net: nn.Module, x: Tensor, dtype: torch.dtype = torch.float32) -> float:
    """Relative error of x (B, C, H, W) through features then inverse, in `dtype`.

    Eval mode (BN with its running statistics: a fixed function of x). The net is copied, so
    its own dtype, device and mode are untouched.
    """
    net = copy.deepcopy(net).to(dtype).eval()
    x = x.to(next(net.parameters()).device, dtype)
    rec = net.inverse(net.features(x))
    return float((rec - x).norm() / x.norm().clamp_min(torch.finfo(dtype).tiny))


def reconstruction_errors(net: nn.Module, x: Tensor) -> dict[str, float]:
    """`reconstruction_error` in float32 and float64: {"float32": e32, "float64": e64}."""
    return {
        "float32": reconstruction_error(net, x, torch.float32),
        "float64": reconstruction_error(net, x, torch.float64),
    }


def hardware() -> str:
    """One line naming this machine for results files: CPU, cores, torch, load average."""
    from pathlib import Path

    from scatterlab.env import describe, environment

    env = environment(device="cuda" if torch.cuda.is_available() else "cpu")
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    where = "GPU" if env["device"] == "cuda" else "CPU only"
    return (
        f"Hardware: {describe(env)}, {where}; torch {env['torch']}; load average "
        f"{' '.join(load) or 'unknown'} when this file was written (the machine is shared)."
    )
