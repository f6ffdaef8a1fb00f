"""The theory experiments as train.py runs (train=false, data=null): configs, modules, files."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_method, instantiate

from scatterlab.config_check import validate_config
from scatterlab.errors import ConfigError
from scatterlab.modules.theory import (
    JacobianSpectrumModule,
    MeanFieldSimulationModule,
    PhaseDiagramModule,
)
from scatterlab.theory import MeanField, trainable_depth
from tests.conftest import ROOT, read_metrics, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")


def composed(*overrides: str):
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


@pytest.mark.parametrize(
    "experiment, target",
    [
        ("meanfield_phase_diagram", PhaseDiagramModule),
        ("meanfield_vs_simulation", MeanFieldSimulationModule),
        ("jacobian_spectrum", JacobianSpectrumModule),
    ],
)
def test_experiment_configs_build_their_module(experiment, target):
    cfg = composed(f"experiment={experiment}")
    validate_config(cfg)
    assert cfg.train is False and cfg.data is None
    assert isinstance(instantiate(cfg.module), target)


def test_study_config_composes():
    cfg = composed("study=trainability_depth")
    validate_config(cfg)
    assert cfg.model.activation == "tanh" and cfg.model.width >= 128
    assert cfg.module._target_.endswith("TrainabilityModule")
    assert "model.depth" in cfg.hydra.sweeper.params
    # the report's heat map draws the theory line from the study's plot node
    plot = cfg.study.plot
    assert plot.kind == "heatmap" and plot.value == "train_acc_final"
    assert get_method(plot.curve._target_) is trainable_depth
    assert plot.curve.sigma_b2 == pytest.approx(cfg.model.sigma_b**2, abs=1e-4)


def test_trainable_depth_is_six_xi_c_of_the_variance():
    sw = np.array([1.0, 1.5, 2.0])  # standard deviations, as model.sigma_w
    expect = [6 * float(MeanField("tanh").xi_c(s**2, 0.05)) for s in sw]
    assert trainable_depth(sw, 0.05) == pytest.approx(expect, rel=1e-12)
    assert expect[0] == pytest.approx(21.76, abs=0.01)  # ordered: xi_c(1, 0.05) = 3.63
    # on the critical line (sigma_w^2 = 1.76) xi_c diverges: clipped for a plotted line
    crit = trainable_depth(np.array([1.3266]), 0.05, max_depth=500)
    assert crit.tolist() == [500.0] and trainable_depth(1.3266, 0.05) > 1e4
    assert trainable_depth(1.0, 0.05, factor=1.0) == pytest.approx(expect[0] / 6, rel=1e-12)


def test_phase_diagram_module_writes_results(tmp_path):
    mod = PhaseDiagramModule(grid=(12, 10), output_dir=str(tmp_path), device="cpu")
    mod.on_test_epoch_end()
    m = mod.final_metrics()
    assert m["critical_sw2/sb2=0.05"] == pytest.approx(1.761, abs=1.5e-3)
    assert m["critical_sw2/sb2=0"] == pytest.approx(1.0, abs=1e-6)
    res = json.loads((tmp_path / "meanfield_phase_diagram.json").read_text())
    assert len(res["xi_c"]) == 12 and len(res["xi_c"][0]) == 10
    assert (tmp_path / "meanfield_phase_diagram_xi_c.png").stat().st_size > 10_000
    # the critical line starts at (1, 0) and has chi_1 = 1 all along
    line = res["critical_line"]
    assert line["sw2"][0] == pytest.approx(1.0, abs=1e-4) and line["sb2"][0] < 1e-5


def test_simulation_module_deviation_shrinks_with_width(tmp_path):
    mod = MeanFieldSimulationModule(
        widths=[20, 400],
        seeds=3,
        depth=4,
        circle_width=100,
        circle_depth=4,
        n_angles=32,
        pca_layers=[1, 4],
        output_dir=str(tmp_path),
        device="cpu",
    )
    mod.on_test_epoch_end()
    m = mod.final_metrics()
    assert m["chi1/critical"] == pytest.approx(1.0, abs=1e-6)
    assert m["chi1/ordered"] < 1 < m["chi1/chaotic"]
    res = json.loads((tmp_path / "meanfield_vs_simulation.json").read_text())
    for phase in ("ordered", "critical", "chaotic"):
        dq = res["deviation"][phase]["q"]
        assert dq[1] < dq[0]  # 20x the width: the deviation falls (by ~ sqrt(20) ~ 4.5)
    for name in ("trajectories", "deviation", "curvature", "circles"):
        assert (tmp_path / f"meanfield_vs_simulation_{name}.png").exists()


def test_jacobian_module_table(tmp_path):
    mod = JacobianSpectrumModule(
        phis=["linear", "relu"],
        weights=["orthogonal"],
        depths=[2, 4],
        width=40,
        seeds=1,
        output_dir=str(tmp_path),
        device="cpu",
    )
    mod.on_test_epoch_end()
    m = mod.final_metrics()
    assert m["var_theory/relu_orthogonal_L4"] == pytest.approx(4.0)
    assert m["var_measured/linear_orthogonal_L4"] == pytest.approx(0.0, abs=1e-12)
    assert (tmp_path / "jacobian_spectrum_densities.png").exists()


def test_bad_module_settings_are_config_errors():
    with pytest.raises(ConfigError, match="not pointwise"):
        PhaseDiagramModule(phi="softmax")
    with pytest.raises(ConfigError, match="depth"):
        MeanFieldSimulationModule(depth=0)
    with pytest.raises(ConfigError, match="unknown"):
        JacobianSpectrumModule(phis=["gelu"])


@pytest.mark.slow
def test_train_py_runs_the_phase_diagram(tmp_path):
    """The convention end to end: train.py, train=false, data=null, files in the run dir."""
    run_cli(
        "train.py",
        "experiment=meanfield_phase_diagram",
        "module.grid=[8,8]",
        f"hydra.run.dir={tmp_path}",
        "logger=csv",
    )
    m = read_metrics(tmp_path)
    assert m["critical_sw2/sb2=0.1"] == pytest.approx(1.986, abs=1.5e-3)
    assert m["env"]["device"] == "cpu" and math.isfinite(m["compute_time_s"])
    assert (tmp_path / "meanfield_phase_diagram.json").exists()
    bad = run_cli(
        "train.py",
        "experiment=meanfield_phase_diagram",
        "module.phi=softmax",
        f"hydra.run.dir={tmp_path / 'bad'}",
        check=False,
    )
    assert bad.returncode == 2
    err = [ln for ln in bad.stderr.splitlines() if "softmax" in ln]
    assert len(err) == 1 and "not pointwise" in err[0]
