"""WSGM benchmark: phi^4 simulator throughput, training step time and sampling throughput.

    python scripts/benchmark_wsgm.py                 # CPU (1 thread by default)
    python scripts/benchmark_wsgm.py --device cuda   # adds the GPU column

Results per device are kept in results/benchmark_wsgm.json; results/benchmark_wsgm.md is
rewritten from all devices measured so far (a CPU and a GPU column).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from scatterlab.env import describe, environment  # noqa: E402
from scatterlab.wsgm.diffusion import SGM, WSGM  # noqa: E402
from scatterlab.wsgm.phi4 import HMCSampler, Phi4Config  # noqa: E402


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bench_simulator(L: int, chains: int, trajectories: int, device: str) -> dict:
    cfg = Phi4Config(size=L, n_chains=chains, n_samples=chains, n_therm=0, thin=1, seed=0)
    s = HMCSampler(cfg, device=device)
    s.trajectory()  # warm-up
    sync(device)
    t0 = time.perf_counter()
    for _ in range(trajectories):
        s.trajectory()
    sync(device)
    dt = time.perf_counter() - t0
    sweeps = chains * trajectories / dt
    return {
        "sweeps_per_s": sweeps,
        "site_updates_per_s": sweeps * L * L,
        "leapfrog": cfg.n_leapfrog,
        "chains": chains,
        "acceptance": s.acceptance,
    }


def models(L: int, base: int) -> dict:
    J = int(math.log2(L // 8))
    return {
        "WSGM": WSGM(
            size=L, levels=J, wavelet="haar", net={"base_channels": base, "channel_mult": [1, 2]}
        ),
        "SGM": SGM(size=L, net={"base_channels": base, "channel_mult": [1] + [2] * J}),
    }


def bench_model(
    model, L: int, batch: int, steps: int, n_samples: int, sample_steps: int, device: str
) -> dict:
    model = model.to(device)
    x = torch.randn(batch, 1, L, L, device=device)
    model.fit_stats(x)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    times = []
    for i in range(steps + 2):
        sync(device)
        t0 = time.perf_counter()
        loss, _ = model.loss(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync(device)
        if i >= 2:  # skip warm-up
            times.append(time.perf_counter() - t0)
    model.sample(2, 2, seed=0)  # warm-up
    sync(device)
    t0 = time.perf_counter()
    model.sample(n_samples, sample_steps, seed=0)
    sync(device)
    dt = time.perf_counter() - t0
    return {
        "train_step_s": statistics.median(times),
        "batch": batch,
        "samples_per_s": n_samples / dt,
        "sample_steps": sample_steps,
        "n_samples": n_samples,
        "params": sum(p.numel() for p in model.parameters()),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--base-channels", type=int, default=16)
    p.add_argument("--out", default=str(ROOT / "results" / "benchmark_wsgm"))
    p.add_argument("--quick", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    gpu = a.device.startswith("cuda")
    L = a.size
    env = environment(device="cuda" if gpu else "cpu")
    hw = describe(env) + ("" if gpu else f", {torch.get_num_threads()} thread(s)")
    res = {"hardware": hw, "size": L, "base_channels": a.base_channels}
    res["simulator"] = bench_simulator(L, 1024 if gpu else 64, 2 if a.quick else 10, a.device)
    print(res["simulator"], flush=True)
    batch = 64 if gpu else 8
    n_samples = 256 if gpu else 16
    for name, m in models(L, a.base_channels).items():
        res[name] = bench_model(
            m, L, batch, 2 if a.quick else 10, n_samples, 4 if a.quick else 32, a.device
        )
        print(name, res[name], flush=True)

    path = Path(a.out + ".json")
    path.parent.mkdir(parents=True, exist_ok=True)
    allres = json.loads(path.read_text()) if path.exists() else {}
    allres["gpu" if gpu else "cpu"] = res
    path.write_text(json.dumps(allres, indent=1))
    write_md(allres, a.out + ".md")


def write_md(allres: dict, out: str) -> None:
    cols = [k for k in ("cpu", "gpu") if k in allres]

    def cell(dev: str, f) -> str:
        return f(allres[dev]) if dev in allres else "not measured yet"

    hw = "; ".join(f"{k.upper()}: {allres[k]['hardware']}" for k in cols)
    r0 = allres[cols[0]]
    lines = [
        f"Hardware: {hw}. L = {r0['size']}, U-Net base {r0['base_channels']} channels; WSGM "
        f"Haar with coarsest scale 8x8; HMC with Fourier acceleration, "
        f"{r0['simulator']['leapfrog']} leapfrog steps per trajectory.",
        "",
        "| quantity | CPU | GPU |",
        "|---|---|---|",
    ]
    rows = [
        (
            "phi^4 HMC lattice sweeps/s (1 trajectory = 1 sweep)",
            lambda r: f"{r['simulator']['sweeps_per_s']:.0f} ({r['simulator']['chains']} chains)",
        ),
        ("phi^4 HMC site updates/s", lambda r: f"{r['simulator']['site_updates_per_s']:.3g}"),
    ]
    for name in ("WSGM", "SGM"):
        rows.append(
            (
                f"{name} training step (s, median)",
                lambda r, n=name: f"{r[n]['train_step_s']:.3f} (batch {r[n]['batch']})",
            )
        )
        rows.append(
            (
                f"{name} sampling (samples/s, N steps per scale)",
                lambda r, n=name: (
                    f"{r[n]['samples_per_s']:.2f} "
                    f"(N={r[n]['sample_steps']}, {r[n]['n_samples']} samples)"
                ),
            )
        )
        rows.append((f"{name} parameters", lambda r, n=name: f"{r[n]['params']}"))
    for title, f in rows:
        lines.append(f"| {title} | {cell('cpu', f)} | {cell('gpu', f)} |")
    Path(out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
