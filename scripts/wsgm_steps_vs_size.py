"""Headline WSGM result: spectrum error vs number of sampling steps, for several lattice sizes.

For each L, simulates phi^4 at beta = 0.68 (cached), trains a WSGM (coarsest scale 8x8, so
J = log2(L/8)) and an SGM with the same training budget (wall-clock, or --train-steps),
then samples with
N = 2, 4, ... steps (uniform grid; at every scale for WSGM) and measures ``spectrum_error``
against held-out data. Sample counts keep N_samples * L^2 fixed so every L sees the same
number of pixels. Writes results/wsgm_steps_vs_size.{json,md,png}.

    python scripts/wsgm_steps_vs_size.py                  # CPU, ~40 min on 2 cores, 1 thread
    python scripts/wsgm_steps_vs_size.py --sizes 16 32 64 128 --device cuda
    python scripts/wsgm_steps_vs_size.py --quick          # smoke run (~1 min)
    python scripts/wsgm_steps_vs_size.py --sizes 64 --out /tmp/l64  # one process per L, then
    python scripts/wsgm_steps_vs_size.py --merge /tmp/l16_32.json /tmp/l64.json
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from scatterlab.wsgm.diffusion import EMA, SGM, WSGM  # noqa: E402
from scatterlab.wsgm.metrics import spectrum_error  # noqa: E402
from scatterlab.wsgm.phi4 import Phi4Config, generate_phi4  # noqa: E402


def hardware(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(0)
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        name = next(
            line.split(":", 1)[1].strip()
            for line in out.splitlines()
            if line.startswith("Model name")
        )
    except Exception:  # lscpu missing: fall back to platform
        name = platform.processor() or platform.machine()
    return f"{name} CPU, {torch.get_num_threads()} thread(s)"


def make_models(L: int, base: int, eps_skip: bool = False) -> dict[str, torch.nn.Module]:
    J = int(math.log2(L // 8))
    # SGM: downsample to 8x8 at the bottleneck so its receptive field covers the lattice.
    sgm_mult = [1] + [2] * J
    net = {"base_channels": base, "channel_mult": [1, 2]}
    return {
        "WSGM": WSGM(size=L, channels=1, levels=J, wavelet="haar", net=net, eps_skip=eps_skip),
        "SGM": SGM(
            size=L,
            channels=1,
            net={"base_channels": base, "channel_mult": sgm_mult},
            eps_skip=eps_skip,
        ),
    }


def train(
    model,
    data: torch.Tensor,
    batch: int,
    seconds: float,
    lr: float,
    device: str,
    seed: int,
    max_steps: int | None = None,
) -> tuple[torch.nn.Module, dict]:
    """Adam for ``seconds`` of wall-clock time; every model/scale sees batch * L^2 pixels/step."""
    batch_pixels = batch * data.shape[-1] ** 2
    torch.manual_seed(seed)
    model = model.to(device)
    model.fit_stats(data[:512].to(device))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    ema = EMA(model, decay=0.995)
    g = torch.Generator().manual_seed(seed)
    t0, steps, losses = time.time(), 0, []
    # A fixed number of steps (max_steps) is fair under a shared, loaded CPU; else wall-clock.
    while (steps < max_steps) if max_steps else (time.time() - t0 < seconds):
        # WSGM: enough images for its coarsest scale to get batch_pixels too (see WSGM.loss).
        n = batch if isinstance(model, SGM) else batch_pixels // (8 * 8)
        idx = torch.randint(0, data.shape[0], (n,), generator=g)
        x = data[idx].to(device)
        # Random periodic shifts and flips: exact symmetries of the lattice field.
        x = torch.roll(x, (int(torch.randint(0, x.shape[-1], (1,), generator=g)),) * 2, (-2, -1))
        if steps % 2:
            x = x.flip(-1)
        loss, _ = model.loss(x) if isinstance(model, SGM) else model.loss(x, batch_pixels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema.update(model)
        losses.append(float(loss.detach()))
        steps += 1
    n = max(1, len(losses) // 10)
    info = {
        "train_steps": steps,
        "train_seconds": time.time() - t0,
        "loss_first": sum(losses[:n]) / n,
        "loss_last": sum(losses[-n:]) / n,
    }
    return ema.shadow, info


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--train-seconds",
        type=float,
        default=130.0,
        help="wall-clock training budget per model (same for WSGM and SGM)",
    )
    p.add_argument(
        "--train-steps",
        type=int,
        default=None,
        help="train every model for this many steps instead of --train-seconds",
    )
    p.add_argument(
        "--eps-skip",
        action="store_true",
        help="eps = sigma_t x_t + net (the library default); off: plain eps = net",
    )
    p.add_argument("--max-steps", type=int, default=256)
    p.add_argument(
        "--budget-minutes",
        type=float,
        default=36.0,
        help="stop raising the step count when the projected time exceeds this",
    )
    p.add_argument(
        "--pixels",
        type=int,
        default=16 * 64 * 64,
        help="generated pixels per evaluation (N_samples = pixels / L^2)",
    )
    p.add_argument("--batch-pixels", type=int, default=4 * 64 * 64)
    p.add_argument("--base-channels", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--grid", default="uniform", choices=["uniform", "quadratic"])
    p.add_argument("--cache-dir", default=str(ROOT / "data" / "phi4"))
    p.add_argument("--out", default=str(ROOT / "results" / "wsgm_steps_vs_size"))
    p.add_argument("--quick", action="store_true", help="tiny smoke run")
    p.add_argument(
        "--merge",
        nargs="+",
        metavar="JSON",
        help="only merge the results of runs over different sizes (e.g. one process per L, "
        "same settings) into --out",
    )
    a = p.parse_args()
    if a.merge:
        merge(a.merge, a.out)
        return
    if a.quick:
        a.sizes, a.train_seconds, a.max_steps, a.pixels = [16, 32], 5.0, 8, 8 * 32 * 32
    torch.set_num_threads(a.threads)
    t_start = time.time()
    budget = a.budget_minutes * 60
    res: dict = {
        "hardware": hardware(a.device),
        "settings": {k: v for k, v in vars(a).items()},
        "runs": {},
    }
    print(res["hardware"], flush=True)

    # Data first (cached on disk): 3/4 train, 1/4 held-out reference.
    datasets = {}
    for L in a.sizes:
        n = max(1024, 4 * a.pixels // (L * L))
        cfg = Phi4Config(
            size=L, beta=0.68, n_samples=n, n_chains=min(256, n), n_therm=150, thin=5, seed=L
        )
        x = generate_phi4(cfg, a.cache_dir, device=a.device, progress=False)
        x = (x - x.mean()) / x.std()  # one global scale; metrics are scale-free
        ntr = 3 * n // 4
        datasets[L] = (x[:ntr], x[ntr:])
        print(f"data L={L}: {n} samples ({time.time() - t_start:.0f}s)", flush=True)

    # Train everything, then sweep steps (so a budget cut only trims the largest N).
    models = {}
    for L in a.sizes:
        train_x, ref = datasets[L]
        n_eval = max(4, a.pixels // (L * L))
        floor = spectrum_error(train_x[:n_eval], ref)
        for name, model in make_models(L, a.base_channels, a.eps_skip).items():
            batch = max(2, a.batch_pixels // (L * L))
            ema, info = train(
                model, train_x, batch, a.train_seconds, a.lr, a.device, L, a.train_steps
            )
            info.update(
                n_params=sum(q.numel() for q in model.parameters()),
                n_eval=n_eval,
                batch=batch,
                data_floor=floor,
            )
            models[(name, L)] = ema
            res["runs"].setdefault(name, {})[str(L)] = {"info": info, "errors": {}, "sec": {}}
            print(f"trained {name} L={L}: {info}", flush=True)

    Path(a.out + ".json").parent.mkdir(parents=True, exist_ok=True)
    steps = [2**k for k in range(1, int(math.log2(a.max_steps)) + 1)]
    for n_steps in steps:
        for (name, L), ema in models.items():
            run = res["runs"][name][str(L)]
            n_eval = run["info"]["n_eval"]
            prev = run["sec"].get(str(n_steps // 2))
            elapsed = time.time() - t_start
            if prev is not None and elapsed + 2.2 * prev > budget:
                print(f"skip {name} L={L} N={n_steps}: over budget", flush=True)
                continue
            t0 = time.time()
            s = ema.sample(n_eval, n_steps, grid=a.grid, seed=1234).cpu()
            run["sec"][str(n_steps)] = time.time() - t0
            err = spectrum_error(s, datasets[L][1]) if torch.isfinite(s).all() else float("inf")
            run["errors"][str(n_steps)] = err
            print(
                f"{name} L={L} N={n_steps}: err={err:.4f} ({run['sec'][str(n_steps)]:.1f}s)",
                flush=True,
            )
        Path(a.out + ".json").write_text(json.dumps(res, indent=1))
    res["total_seconds"] = time.time() - t_start
    Path(a.out + ".json").parent.mkdir(parents=True, exist_ok=True)
    Path(a.out + ".json").write_text(json.dumps(res, indent=1))
    write_report(res, a.out)


def merge(paths: list[str], out: str) -> None:
    """Union of the runs of several result files (their settings must agree but for sizes)."""
    parts = [json.loads(Path(q).read_text()) for q in paths]
    res = {**parts[0], "runs": {}}
    for part in parts:
        for key in ("train_steps", "train_seconds", "lr", "batch_pixels", "grid", "eps_skip"):
            if part["settings"].get(key) != res["settings"].get(key):
                raise SystemExit(f"cannot merge {paths}: different {key}")
        for name, runs in part["runs"].items():
            res["runs"].setdefault(name, {}).update(runs)
    sizes = sorted({int(L) for runs in res["runs"].values() for L in runs})
    res["settings"] = {**res["settings"], "sizes": sizes}
    res["total_seconds"] = max(q.get("total_seconds", 0.0) for q in parts)
    Path(out + ".json").parent.mkdir(parents=True, exist_ok=True)
    Path(out + ".json").write_text(json.dumps(res, indent=1))
    write_report(res, out)


def steps_to_reach(errors: dict[str, float], eps: float) -> int | None:
    ok = [int(n) for n, e in errors.items() if e <= eps]
    return min(ok) if ok else None


def write_report(res: dict, out: str, thresholds=(0.05, 0.1, 0.2)) -> None:
    s = res["settings"]
    all_steps = sorted(
        {int(n) for m in res["runs"].values() for r in m.values() for n in r["errors"]}
    )
    if s.get("train_steps"):
        training = f"training {s['train_steps']} Adam steps per model"
    else:
        training = f"training {s['train_seconds']:.0f}s wall-clock per model"
    lines = [
        f"Hardware: {res['hardware']}. phi^4 beta=0.68, {s['grid']} time grid, T=5, "
        f"{training} (same for WSGM and SGM), lr {s['lr']}, {s['batch_pixels']} pixels per "
        f"step at every scale, U-Net base {s['base_channels']} channels, {s['pixels']} "
        "generated pixels per evaluation; WSGM: Haar, coarsest scale 8x8 (J=log2(L/8)).",
        "",
        "spectrum_error (per-bin relative L2 error of the radial power spectrum vs held-out "
        "data; `floor` = the same error for real data of the same size):",
        "",
        "| model | L | floor | "
        + " | ".join(f"N={n}" for n in all_steps)
        + " | "
        + " | ".join(f"N(err<={t})" for t in thresholds)
        + " | N(err<=2 floor) |",
        "|---|---|---|" + "---|" * (len(all_steps) + len(thresholds) + 1),
    ]
    for name, runs in res["runs"].items():
        for L, r in runs.items():
            errs = r["errors"]
            cells = [f"{errs[str(n)]:.3f}" if str(n) in errs else "-" for n in all_steps]
            # fixed errors, and twice the data's own error (the floor falls as pixels grow)
            reach = [steps_to_reach(errs, t) for t in thresholds]
            reach.append(steps_to_reach(errs, 2 * r["info"]["data_floor"]))
            lines.append(
                f"| {name} | {L} | {r['info']['data_floor']:.3f} | "
                + " | ".join(cells)
                + " | "
                + " | ".join(str(v) if v else f">{max(map(int, errs))}" for v in reach)
                + " |"
            )
    lines += ["", "Training (steps in the budget, loss first/last 10%), parameters:", ""]
    lines.append("| model | L | steps | loss first | loss last | params | eval samples |")
    lines.append("|---|---|---|---|---|---|---|")
    for name, runs in res["runs"].items():
        for L, r in runs.items():
            i = r["info"]
            lines.append(
                f"| {name} | {L} | {i['train_steps']} | {i['loss_first']:.3f} | "
                f"{i['loss_last']:.3f} | {i['n_params']} | {i['n_eval']} |"
            )
    Path(out + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
        for ax, name in zip(axes, ["WSGM", "SGM"], strict=False):
            for L, r in res["runs"].get(name, {}).items():
                xs = sorted(int(n) for n in r["errors"])
                (line,) = ax.loglog(xs, [r["errors"][str(n)] for n in xs], "o-", label=f"L={L}")
                ax.axhline(r["info"]["data_floor"], color=line.get_color(), ls=":", lw=0.8)
            ax.set_title(f"{name} ({s['grid']} grid)")
            ax.set_xlabel("sampling steps N (per scale for WSGM)")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend()
        axes[0].set_ylabel("spectrum_error")
        fig.suptitle(res["hardware"], fontsize=8)
        fig.tight_layout()
        fig.savefig(out + ".png", dpi=120)
    except Exception as exc:  # plotting must not lose the numbers
        print(f"plot skipped: {exc}")


if __name__ == "__main__":
    main()
