"""The hardware and software a run or benchmark ran on, recorded so that no report guesses it."""

from __future__ import annotations

import os
import platform
from functools import cache
from typing import Any

import torch

# instruction-set extensions worth naming beside a CPU (they decide its GEMM speed)
_ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")


@cache
def cpu_info() -> tuple[str, list[str]]:
    """(CPU model name, the instruction-set flags of _ISA_FLAGS it has), from /proc/cpuinfo."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and name in ("", platform.machine()):
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return name, [f for f in _ISA_FLAGS if f in flags]


def cpu_cores() -> int:
    """Cores this process may run on (the affinity mask, as SLURM and taskset set it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def environment(precision: str | None = None, device: str | None = None) -> dict[str, Any]:
    """Device, CPU (model, ISA, cores), GPUs, library versions and precision of this process."""
    import lightning

    name, isa = cpu_info()
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    env: dict[str, Any] = {
        "device": device or ("cuda" if gpus else "cpu"),
        "cpu": name,
        "cpu_isa": " ".join(isa),
        "cpu_cores": cpu_cores(),
        "gpu_count": gpus,
        "gpu_name": torch.cuda.get_device_name(0) if gpus else None,
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "python": platform.python_version(),
        "hostname": platform.node(),
    }
    if precision is not None:
        env["precision"] = str(precision)
    return env


def describe(env: dict[str, Any]) -> str:
    """One line naming the hardware of `env`, e.g. 'AMD EPYC 9B14 (avx2 avx512f ...), 2 cores'."""
    if env.get("device") == "cuda" and env.get("gpu_name"):
        n = env.get("gpu_count", 1)
        return f"{n} x {env['gpu_name']}" if n > 1 else str(env["gpu_name"])
    isa = f" ({env['cpu_isa']})" if env.get("cpu_isa") else ""
    return f"{env.get('cpu', 'CPU')}{isa}, {env.get('cpu_cores', '?')} cores"
