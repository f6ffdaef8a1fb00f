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
    HessianIndexModule,
    HessianSpectrumModule,
    JacobianDensityModule,
    LossSurfaceDigitsModule,
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


def test_hessian_callback_on_a_tiny_quickstart(tmp_path, one_thread):
    """callbacks=hessian: SLQ at the start and the end of a 2-batch quickstart, in-process."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from scatterlab import ROOT
    from scatterlab.train import train

    overrides = [
        "callbacks=hessian",
        "logger=csv",
        "model.widths=[8,16]",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=2",
        "+trainer.limit_val_batches=1",
        "callbacks.hessian.images=32",
        "callbacks.hessian.lanczos_steps=6",
        "callbacks.hessian.probes=1",
        "test=false",
    ]
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", return_hydra_config=True, overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
        cfg.hydra.runtime.output_dir = str(tmp_path)
    HydraConfig().set_config(cfg)
    metrics = train(cfg)
    doc = json.loads((tmp_path / "hessian_spectrum.json").read_text())
    assert [h["stage"] for h in doc["history"]] == ["start", "end"]
    assert all(h["hessian/hvps"] == 6 for h in doc["history"])
    assert math.isfinite(metrics["hessian/lambda_max"]) and metrics["hessian/lambda_max"] > 0
    assert (tmp_path / "hessian_spectrum.png").stat().st_size > 1000


def test_loss_surface_digits_module(tmp_path):
    mod = LossSurfaceDigitsModule(
        widths=[4, 16], restarts=4, steps=20, batch_size=32, output_dir=str(tmp_path)
    )
    m = _check(mod, tmp_path, "loss_surface_digits")
    assert -1 <= m["width=4/pearson_train_test"] <= 1
    assert (
        m["width=16/test_loss_mean"] < math.log(10) + 0.5
    )  # it learned something or is near chance


def test_hessian_index_module(tmp_path):
    mod = HessianIndexModule(
        inputs=2,
        hidden=3,
        outputs=1,
        samples=40,
        trajectories=4,
        gd_steps=200,
        snapshots=4,
        random_starts=16,
        iters=60,
        spectra=2,
        output_dir=str(tmp_path),
    )
    m = _check(mod, tmp_path, "hessian_index")
    assert m["converged"] >= 8 and m["distinct"] >= 4
    assert m["fit/eps_c"] > 0 and m["fit/rmse"] >= 0 and 0.1 <= m["fit/k"] <= 5
    with pytest.raises(ConfigError, match="snapshots"):
        HessianIndexModule(gd_steps=3, snapshots=4)


@pytest.mark.parametrize(
    ("overrides", "word"),
    [
        (["experiment=spin_glass_complexity", "module.p=1"], "module.p"),  # p < 2
        (["experiment=spin_glass_complexity", "module.sizes=[1]"], "module.sizes"),  # N < 2
        (["experiment=rmt_free_probability", "module.ratios=[-1.0]"], "module.ratios"),
        (["experiment=rmt_free_probability", "module.ratios=[0]"], "module.ratios"),
        (["experiment=hessian_index", "module.hidden=0"], "module.hidden"),  # no hidden unit
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(overrides, word):
    from tests.conftest import run_cli

    proc = run_cli("train.py", *overrides, timeout=300, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(err) == 1 and word in err[0], err
