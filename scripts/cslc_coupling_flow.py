"""The fitted CSLC couplings per scale (how the phi^4-family energy flows with scale), issue 25.

Reads the phi4_cslc results (``results/multiscale_cslc_L*.json``) and writes
``results/multiscale_cslc_flow.md``: per scale the couplings (kinetic, x^2, x^4) of the energy
of the field x_{j-1} (j = 1 the finest conditional, "coarsest" the unconditional x_J), as
fitted, and in block-mean units: the orthonormal Haar low-pass is x_j = 2^j x (block mean over
2^j x 2^j), so E written in the block mean m has couplings 4^j theta_kin, 4^j theta_2 and
16^j theta_4 (the lattice spacing is not rescaled).

    python scripts/cslc_coupling_flow.py results/multiscale_cslc_L32.json \
        results/multiscale_cslc_L64.json results/multiscale_cslc_L128.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", default="results/multiscale_cslc_flow.md")
    args = ap.parse_args()
    md = [
        "**Fitted CSLC couplings per scale: the flow of the phi^4-family energy (beta = 0.68)**",
        "",
        "`python scripts/cslc_coupling_flow.py " + " ".join(str(p) for p in args.runs) + "`. "
        "Score matching of E = theta_kin sum_edges (dx)^2 / 2 + theta_2 sum x^2 + theta_4 "
        "sum x^4 for the field x_{j-1} at each scale (conditional on x_j; the coarsest field "
        "unconditional), Haar. Block-mean units: the same energy written in the block mean "
        "m = x_{j-1} / 2^(j-1) (couplings times 4^(j-1), 4^(j-1), 16^(j-1)). The finest row is "
        "phi^4's own (beta, -2, 1); the coarser rows are an ansatz (three of the renormalised "
        "energy's couplings, no truth to compare with).",
        "",
        "| L | scale | field | kinetic | quadratic | quartic | kinetic (block mean) | "
        "quadratic (block mean) | quartic (block mean) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for path in args.runs:
        res = json.loads(path.read_text())
        names, theta, se = res["scales"], res["theta"], res["se"]
        levels = len(names) - 1
        size = int(path.stem.split("_L")[-1]) if "_L" in path.stem else None
        for name, t, s in zip(names, theta, se, strict=True):
            jm1 = levels if name == "coarsest" else int(name[5:]) - 1  # x_{j-1}
            n = f"{size >> jm1} x {size >> jm1}" if size else "?"
            k = 4**jm1
            md.append(
                f"| {size} | {name} | x_{jm1} ({n}) | {t[0]:.3f} +- {s[0]:.3f} | "
                f"{t[1]:.3f} +- {s[1]:.3f} | {t[2]:.4f} +- {s[2]:.4f} | {k * t[0]:.2f} | "
                f"{k * t[1]:.2f} | {k * k * t[2]:.2f} |"
            )
    md += hessian_table(args.runs)
    Path(args.out).write_text("\n".join(md) + "\n")
    print("\n".join(md))


def hessian_table(runs: list[Path]) -> list[str]:
    """Smallest Hessian eigenvalues of the fitted energies per scale (the runs' "hessians",
    ``CSLCModule.fitted_hessians``): min / median / max over the fields (share positive)."""
    rows = []
    for path in runs:
        res = json.loads(path.read_text())
        size = int(path.stem.split("_L")[-1]) if "_L" in path.stem else None
        levels = len(res["scales"]) - 1
        for name, h in res.get("hessians", {}).items():
            jm1 = levels if name == "coarsest" else int(name[5:]) - 1
            n = f"{size >> jm1} x {size >> jm1}" if size else "?"
            cells = []
            for kind in ("unconditional", "conditional"):
                v = sorted(h.get(kind) or [])
                pos = sum(e > 0 for e in v) / len(v) if v else 0
                med = v[len(v) // 2] if v else 0
                cells.append(f"{v[0]:.3f} / {med:.3f} / {v[-1]:.3f} ({pos:.0%})" if v else "n/a")
            count = len(h.get("unconditional") or [])
            rows.append(
                f"| {size} | {name} | x_{jm1} ({n}) | {count} | " + " | ".join(cells) + " |"
            )
    if not rows:
        return []
    return [
        "",
        "Smallest Hessian eigenvalue of the fitted energies on training fields of each scale "
        "(module.hessian_fields): min / median / max (share positive definite). "
        '"unconditional": the fitted energy of x_{j-1}; "conditional": its detail block, the '
        "Hessian of E(xbar_j | x_j) (the coarsest: the unconditional energy of x_J only). "
        "Fields above 32 x 32 are skipped (dense eigensolves); the finest scale is phi^4's own "
        "energy (experiment phi4_log_concavity for the exact Hessians).",
        "",
        "| L | scale | field | fields | unconditional | conditional |",
        "|---|---|---|---|---|---|",
        *rows,
    ]


if __name__ == "__main__":
    main()
