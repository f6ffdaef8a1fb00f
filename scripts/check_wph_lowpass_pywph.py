"""Check the WPH low-pass (L) class against PyWPH 1.1.3, moment by moment (issue 25).

Fields with a non-zero mean (exp of a Gaussian field, 64 x 64) and without one; PyWPH with
``norm=None`` (each map centred on its own spatial mean) and ``norm="auto"`` fitted on the
same single field; scatterlab ``WPHOp`` with ``lowpass_centering="pywph"`` (the default) and
``"modulus"`` (the old model). Prints the largest relative difference of the L moments.

PyWPH is not a dependency: ``pip install pywph==1.1.3`` (and psutil) in a throwaway place,
then ``PYTHONPATH=... python scripts/check_wph_lowpass_pywph.py``.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from scatterlab.wph import CLASSES, WPHOp
from scatterlab.wsgm.phi4 import gaussian_spectrum


def fields(size: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(size, size, generator=g, dtype=torch.float64)
    gauss = torch.fft.ifft2(torch.fft.fft2(w) * gaussian_spectrum(size, 0.5, 0.2).sqrt()).real
    gauss = gauss / gauss.std()
    return {"exp(gaussian) (mean {:.2f})": torch.exp(gauss), "gaussian (mean {:.2f})": gauss}


def main() -> None:
    import pywph as pw

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--J", type=int, default=4)
    ap.add_argument("--json", default=None, help="write the table as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    size, J = args.size, args.J
    cid = CLASSES.index("L")
    pop = pw.WPHOp(size, size, J, L=4, dn=0, device="cpu", precision="double")
    pop.load_model(["L"])
    rows = []
    for name, x in fields(size, 0).items():
        name = name.format(float(x.mean()))
        for norm in (None, "auto"):
            pop.clear_normalization()
            wph = pop.apply(x.numpy(), norm=norm, pbc=True, ret_wph_obj=True)
            pc, pidx = wph.get_coeffs("L")
            ref = {
                (int(r[0]), int(r[1]), int(r[2])): complex(c) for c, r in zip(pc, pidx, strict=True)
            }
            for mode in ("pywph", "modulus"):
                op = WPHOp(
                    size, J=J, L=4, dn=0, classes=["L"], lowpass_centering=mode, dtype=torch.float64
                )
                if norm == "auto":
                    op.fit_normalization(x[None])
                m = op(x[None], normalized=norm == "auto")[0]
                ours = {
                    (int(r[1]), int(r[3]), int(r[6])): complex(v)
                    for r, v in zip(op.indices.tolist(), m.tolist(), strict=True)
                    if r[0] == cid
                }
                assert set(ours) == set(ref), (sorted(ours), sorted(ref))
                rel = max(abs(ours[k] - ref[k]) / max(abs(ref[k]), 1e-300) for k in ref)
                rows.append(
                    {
                        "field": name,
                        "pywph_norm": str(norm),
                        "lowpass_centering": mode,
                        "n_moments": len(ref),
                        "max_rel_diff": rel,
                    }
                )
                print(
                    f"{name:28s} norm={str(norm):5s} {mode:8s} {len(ref)} L moments, "
                    f"max relative difference {rel:.2e}"
                )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "size": size,
                    "J": J,
                    "pywph": getattr(pw, "__version__", "1.1.3"),
                    "numpy": np.__version__,
                    "torch": torch.__version__,
                    "rows": rows,
                },
                f,
                indent=1,
            )


if __name__ == "__main__":
    main()
