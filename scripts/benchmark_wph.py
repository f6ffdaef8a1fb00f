"""Benchmark: WPH synthesis of one 256 x 256 field, scatterlab.wph vs PyWPH, in one run.

Both codes get the same field (scikit-image's gravel texture, block-averaged to 256 x 256 and
standardised), the same J, L, dn and the same moment classes (PyWPH's default model: S11 S00
S01 C01 Cphase L; the same count of moments), and the same white-noise start. PyWPH runs its
published recipe (examples/synthesis.py: norm="auto", chunked backward, scipy L-BFGS-B with
maxcor 20); scatterlab runs ``scatterlab.wph.synthesis.synthesize`` (torch L-BFGS, strong-Wolfe
line search, history 20). Reported: seconds per loss+gradient evaluation, per L-BFGS iteration,
and to convergence (first iteration whose loss is below 1e-2 and 1e-3 of the initial loss of
that code's own loss), each after ``--iters`` iterations at most.

    python scripts/benchmark_wph.py [--iters 50] [--threads 2] [--device cpu|cuda]
        [--out results/benchmark_wph.md]

PyWPH is a benchmark-only extra: ``pip install pywph``. Without it the table has our row only.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from scatterlab.data.texture import load_texture
from scatterlab.env import describe, environment
from scatterlab.wph import WPHOp
from scatterlab.wph.synthesis import synthesize

CLASSES = ["S11", "S00", "S01", "C01", "Cphase", "L"]


def _summary(times: list[float], losses: list[float], evals: int, t_total: float) -> dict:
    """times[i], losses[i]: wall time since start and loss after iteration i."""
    out = {
        "iterations": len(losses),
        "evaluations": evals,
        "seconds_total": t_total,
        "seconds_per_iteration": t_total / max(len(losses), 1),
        "seconds_per_evaluation": t_total / max(evals, 1),
        "initial_loss": losses[0] if losses else float("nan"),
        "final_loss": losses[-1] if losses else float("nan"),
    }
    return out


def _to_convergence(init: float, times: list[float], losses: list[float], rel: float):
    for i, (t, v) in enumerate(zip(times, losses, strict=True)):
        if v <= rel * init:
            return i + 1, t
    return None, None


def run_ours(x: torch.Tensor, y0: torch.Tensor, args) -> dict:
    op = WPHOp(x.shape[-1], J=args.J, L=args.L, dn=args.dn, classes=CLASSES).to(args.device)
    times, losses = [], []
    t0 = time.time()
    op.fit_normalization(x.to(args.device))
    with torch.no_grad():
        init = float(
            (op.moments(y0.to(args.device)) - op.moments(x.to(args.device))).abs().pow(2).mean()
        )

    def cb(it: int, loss: float) -> None:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.time() - t0)
        losses.append(loss)

    t0 = time.time()
    _, info = synthesize(
        op,
        x,
        n=1,
        steps=args.iters,
        tol=0.0,
        seed=args.seed,
        progress=False,
        fit_normalization=False,
        callback=cb,
    )
    total = time.time() - t0
    res = _summary(times, losses, info.evaluations, total)
    res.update(initial_loss=init, n_moments=op.n_moments, code="scatterlab.wph")
    for rel in (1e-2, 1e-3):
        res[f"iters_to_{rel:g}"], res[f"seconds_to_{rel:g}"] = _to_convergence(
            init, times, losses, rel
        )
    return res


def run_pywph(x: torch.Tensor, y0: torch.Tensor, args) -> dict:
    import pywph as pw
    from scipy.optimize import minimize

    m, n = x.shape[-2:]
    dev = 0 if args.device.startswith("cuda") else "cpu"
    op = pw.WPHOp(m, n, args.J, L=args.L, dn=args.dn, device=dev)
    op.load_model(CLASSES)
    op.clear_normalization()
    data = x[0].numpy()
    coeffs = op.apply(data, norm="auto", pbc=True)
    evals = [0]
    state = {"f": float("nan")}

    def objective(v: np.ndarray):
        evals[0] += 1
        cur = torch.from_numpy(v.reshape(m, n).astype(np.float32))
        cur, nb = op.preconfigure(cur, requires_grad=True, pbc=True)
        tot = 0.0
        for i in range(nb):
            c, idx = op.apply(cur, i, norm="auto", ret_indices=True, pbc=True)
            loss = torch.sum(torch.abs(c - coeffs[idx]) ** 2)
            loss.backward(retain_graph=True)
            tot += float(loss.detach().cpu())
        grad = cur.grad.cpu().numpy().astype(np.float64).ravel()
        state["f"] = tot
        return tot, grad

    times, losses = [], []
    init = objective(y0[0].double().numpy().ravel())[0]
    evals[0] = 0
    t0 = time.time()

    def cb(_xk) -> None:
        times.append(time.time() - t0)
        losses.append(state["f"])

    minimize(
        objective,
        y0[0].double().numpy().ravel(),
        method="L-BFGS-B",
        jac=True,
        callback=cb,
        options={"maxiter": args.iters, "gtol": 1e-14, "ftol": 1e-14, "maxcor": 20},
    )
    total = time.time() - t0
    res = _summary(times, losses, evals[0], total)
    res.update(
        initial_loss=init,
        n_moments=int(op.nb_wph_moments + op.nb_scaling_moments),
        code="PyWPH " + getattr(pw, "__version__", "?"),
    )
    for rel in (1e-2, 1e-3):
        res[f"iters_to_{rel:g}"], res[f"seconds_to_{rel:g}"] = _to_convergence(
            init, times, losses, rel
        )
    return res


def _fmt(v, spec: str = ".3g") -> str:
    return "n/a" if v is None else format(v, spec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--J", type=int, default=7)
    ap.add_argument("--L", type=int, default=4)
    ap.add_argument("--dn", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-pywph", action="store_true")
    ap.add_argument("--out", default="results/benchmark_wph.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x = load_texture("gravel", downsample=2)[None]  # (1, 256, 256), standardised
    g = torch.Generator().manual_seed(args.seed)
    y0 = float(x.mean()) + float(x.std()) * torch.randn(
        1, *x.shape[-2:], generator=g, dtype=torch.float64
    )
    rows, notes = [], []
    if not args.skip_pywph:
        try:
            rows.append(run_pywph(x, y0, args))
        except ImportError:
            notes.append("PyWPH is not installed (pip install pywph): its row is missing.")
        except Exception as exc:  # report, do not hide, a PyWPH failure
            notes.append(f"PyWPH failed: {type(exc).__name__}: {str(exc)[:200]}")
    rows.append(run_ours(x, y0, args))
    env = environment(device=args.device)
    hw = describe(env)
    la = Path("/proc/loadavg")
    load = la.read_text().split()[0] if la.exists() else "?"
    lines = [
        f"One 256 x 256 field (scikit-image gravel, standardised), J = {args.J}, L = {args.L}, "
        f"dn = {args.dn}, PyWPH's default moment classes, at most {args.iters} L-BFGS "
        f"iterations from the same white noise. Hardware: {hw}; device {args.device}; "
        f"{args.threads} torch threads; machine load average {load} at the end (the benchmark's "
        f"own threads count in it). `python scripts/benchmark_wph.py --iters {args.iters} "
        f"--threads {args.threads}` reproduces it.",
        "",
        "| code | moments | s / evaluation | s / iteration | evaluations | iterations "
        "| loss: initial -> final | iters (s) to 1e-2 x initial | iters (s) to 1e-3 x initial |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['code']} | {r['n_moments']} | {_fmt(r['seconds_per_evaluation'])} | "
            f"{_fmt(r['seconds_per_iteration'])} | {r['evaluations']} | {r['iterations']} | "
            f"{_fmt(r['initial_loss'])} -> {_fmt(r['final_loss'])} | "
            f"{_fmt(r['iters_to_0.01'], 'd')} ({_fmt(r['seconds_to_0.01'])}) | "
            f"{_fmt(r['iters_to_0.001'], 'd')} ({_fmt(r['seconds_to_0.001'])}) |"
        )
    lines += [
        "",
        "Losses are each code's own (PyWPH: sum over its normalised coefficients; scatterlab: "
        "mean), so only their relative decrease is compared. PyWPH's optimiser is scipy's "
        "L-BFGS-B (float64 driver, float32 moments); ours torch.optim.LBFGS.",
    ]
    lines += [f"- {n}" for n in notes]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"rows": rows, "env": env}, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
