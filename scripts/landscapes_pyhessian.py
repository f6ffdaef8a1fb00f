"""PyHessian's stochastic Lanczos density beside scatterlab.landscapes.hessian.slq on the same
model (the hessian_spectrum experiment's larger MLP on 256 digits): seconds and Hessian-vector
products of each, and whether PyHessian runs at all.

PyHessian is not a dependency of the project. Install it outside the project's environment:
    pip download --no-deps pyhessian -d /tmp/pyh
    pip install --no-deps --target /tmp/pyh/site /tmp/pyh/PyHessian-0.1-py3-none-any.whl
    PYTHONPATH=/tmp/pyh/site OMP_NUM_THREADS=1 python scripts/landscapes_pyhessian.py \
        --out results/landscapes_pyhessian
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from scatterlab.landscapes import hessian as hs
from scatterlab.modules.landscapes import _digits, _mlp


def _ours(model: nn.Module, x, y, steps: int, probes: int) -> dict:
    op = hs.HessianOperator(model, nn.functional.cross_entropy, (x, y))
    t0 = time.perf_counter()
    nodes, weights = hs.slq(op, steps, probes, seed=0)
    dt = time.perf_counter() - t0
    return {
        "seconds": dt,
        "hvps": op.hvps,
        "lambda_max": float(nodes[torch.isfinite(nodes)].max()),
        "trace_slq": hs.slq_trace(nodes, weights, op.dim),
    }


def _pyhessian(model: nn.Module, x, y, steps: int, probes: int, shim: bool) -> dict:
    import sys

    import pyhessian
    from pyhessian import utils as pu

    ph = sys.modules["pyhessian.hessian"]  # the module (the package exports the class hessian)

    count = {"hvps": 0}
    orig = pu.hessian_vector_product

    def counted(*a, **k):
        count["hvps"] += 1
        return orig(*a, **k)

    ph.hessian_vector_product = counted
    if shim:  # torch.eig (removed in torch 2.0) replaced by eigh: T is symmetric tridiagonal

        def eig(t, eigenvectors=True):
            w, v = torch.linalg.eigh(t)
            return torch.stack([w, torch.zeros_like(w)], 1), v

        torch.eig = eig
    comp = ph.hessian(model, nn.functional.cross_entropy, data=(x, y), cuda=False)
    t0 = time.perf_counter()
    eigs, weights = comp.density(iter=steps, n_v=probes)
    dt = time.perf_counter() - t0
    ev = np.concatenate([np.asarray(e, dtype=float) for e in eigs])
    w = np.concatenate([np.asarray(e, dtype=float) for e in weights])
    dim = sum(p.numel() for p in model.parameters())
    return {
        "version": getattr(pyhessian, "__version__", "0.1"),
        "seconds": dt,
        "hvps": count["hvps"],
        "lambda_max": float(ev.max()),
        "trace_slq": float(dim * (w * ev).sum() / probes),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--hidden", type=int, nargs="+", default=[256, 256])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--probes", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    torch.set_num_threads(1)
    # float32: PyHessian builds its Lanczos vectors with torch.zeros (float32) whatever the model
    x, y = _digits(256, torch.float32)
    model = _mlp([64, *a.hidden, 10], "tanh", 0).float()
    dim = sum(p.numel() for p in model.parameters())
    res: dict = {"params": dim, "steps": a.steps, "probes": a.probes}
    res["ours"] = _ours(model, x, y, a.steps, a.probes)
    try:
        res["pyhessian_as_released"] = _pyhessian(model, x, y, a.steps, a.probes, shim=False)
    except Exception as e:  # the point: record how it fails
        res["pyhessian_as_released"] = {
            "error": f"{type(e).__name__}: {str(e).strip().splitlines()[0]}",
            "where": "pyhessian/hessian.py, density(): torch.eig(T, eigenvectors=True)",
        }
    res["pyhessian_with_eigh_shim"] = _pyhessian(model, x, y, a.steps, a.probes, shim=True)
    res["hardware"] = f"{platform.processor() or 'CPU'}, torch {torch.__version__}, 1 thread"
    o, p, s = res["ours"], res["pyhessian_with_eigh_shim"], res["pyhessian_as_released"]
    md = [
        "**PyHessian 0.1 beside scatterlab's SLQ (same model, same Lanczos size)**",
        "",
        f"MLP 64-{'-'.join(map(str, a.hidden))}-10 tanh, {dim} parameters, cross-entropy on "
        f"256 digits, float32, {a.steps} Lanczos steps x {a.probes} probes, 1 thread.",
        "",
        f"PyHessian as released: `{s.get('error', 'ran')}`"
        + (f" (in `{s['where']}`)" if "where" in s else ""),
        "",
        "| | seconds | Hessian-vector products | largest Ritz value | trace (SLQ) |",
        "|---|---|---|---|---|",
        f"| scatterlab `slq` | {o['seconds']:.3g} | {o['hvps']} | {o['lambda_max']:.4g} | "
        f"{o['trace_slq']:.4g} |",
        f"| PyHessian `density` (torch.eig shimmed by eigh) | {p['seconds']:.3g} | {p['hvps']} | "
        f"{p['lambda_max']:.4g} | {p['trace_slq']:.4g} |",
    ]
    a.out.with_suffix(".md").write_text("\n".join(md) + "\n")
    a.out.with_suffix(".json").write_text(json.dumps(res, indent=1))
    print("\n".join(md))


if __name__ == "__main__":
    main()
