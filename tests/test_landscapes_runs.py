"""The landscapes experiments' modules at toy sizes: they compute, write JSON + PNG, and give
finite metrics (also under Lightning's inference mode, which the Hessians must leave)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from scatterlab.errors import ConfigError
from scatterlab.modules.landscapes import (
    FreeProbabilityModule,
    HessianSpectrumModule,
    JacobianDensityModule,
    SpinGlassModule,
)


def _check(module, tmp_path, name: str) -> dict:
    with torch.inference_mode():  # as in trainer.test
        module.on_test_epoch_end()
    metrics = module.final_metrics()
    assert metrics and all(math.isfinite(v) for v in metrics.values()), metrics
    assert json.loads((tmp_path / f"{name}.json").read_text())["metrics"]
    assert list(tmp_path.glob(f"{name}_*.png"))
    return metrics


def test_free_probability_module(tmp_path):
    m = _check(
        FreeProbabilityModule(n=60, ratios=[0.5, 2.0], seeds=1, output_dir=str(tmp_path)),
        tmp_path,
        "rmt_free_probability",
    )
    assert m["ks/wigner"] < 0.2


def test_jacobian_density_module(tmp_path):
    mod = JacobianDensityModule(
        phis=["relu", "linear"],
        depths=[2],
        width=40,
        seeds=1,
        output_dir=str(tmp_path),
        device="cpu",
    )
    m = _check(mod, tmp_path, "jacobian_density")
    assert m["ks/linear_orthogonal_L2"] == 0.0


def test_hessian_spectrum_module(tmp_path):
    mod = HessianSpectrumModule(
        hidden=[2],
        samples=30,
        train_steps=3,
        lanczos_steps=10,
        probes=2,
        hutchinson_samples=4,
        top_k=2,
        large_hidden=[8],
        large_steps=3,
        large_probes=1,
        output_dir=str(tmp_path),
    )
    m = _check(mod, tmp_path, "hessian_spectrum")
    assert m["init/lambda_max_lanczos"] == pytest.approx(m["init/lambda_max_exact"], rel=1e-6)
    with pytest.raises(ConfigError, match="parameters"):
        HessianSpectrumModule(hidden=[64, 64])


def test_spin_glass_module(tmp_path):
    mod = SpinGlassModule(
        sizes=[6, 8], restarts=4, steps=50, index_points=2, output_dir=str(tmp_path)
    )
    m = _check(mod, tmp_path, "spin_glass")
    assert m["E_0"] == pytest.approx(1.657, abs=5e-4)
    with pytest.raises(ConfigError, match="couplings"):
        SpinGlassModule(p=6, sizes=[400])
