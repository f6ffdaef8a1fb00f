"""WSGM through the generic train.py: configs compose, a tiny run writes its outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import open_dict

from scatterlab import ROOT
from scatterlab.errors import ConfigError
from scatterlab.wsgm import SGM, WSGM

pytestmark = pytest.mark.usefixtures("one_thread")


TINY = [
    "logger=csv",
    "data.size=16",
    "data.n_train=128",
    "data.n_val=32",
    "data.n_test=64",
    "data.n_chains=32",
    "data.n_therm=10",
    "data.batch_size=32",
    "data.progress=false",
    "model.net.base_channels=8",
    "trainer.max_epochs=2",
    "module.n_samples=16",
    "module.sample_steps=4",
    "module.stats_samples=128",
]


def _compose(overrides: list[str], tmp_path: Path):
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", return_hydra_config=True, overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
        cfg.paths.cache_dir = str(tmp_path / "cache")
        cfg.hydra.runtime.output_dir = str(tmp_path)
    HydraConfig().set_config(cfg)
    return cfg


@pytest.mark.parametrize(
    "experiment,cls",
    [
        ("quickstart_wsgm", WSGM),
        ("quickstart_sgm", SGM),
        ("phi4_wsgm", WSGM),
        ("phi4_sgm", SGM),
        ("cifar_wsgm", WSGM),
    ],
)
def test_experiment_configs_instantiate(experiment: str, cls: type, tmp_path: Path) -> None:
    cfg = _compose([f"experiment={experiment}", "logger=csv"], tmp_path)
    if experiment.startswith("quickstart"):  # tests the final weights (last.ckpt)
        assert cfg.callbacks.model_checkpoint is None
        assert cfg.callbacks.last_checkpoint.filename == "last"
    else:
        assert cfg.callbacks.model_checkpoint.monitor == "val/loss"
        assert cfg.callbacks.model_checkpoint.mode == "min"
    model = instantiate(cfg.model)
    assert isinstance(model, cls)
    module = instantiate(cfg.module)
    assert module.net is not None
    if experiment != "cifar_wsgm":  # CIFAR needs its files; only check its model here
        assert instantiate(cfg.data).size == model.size


@pytest.mark.parametrize("experiment", ["quickstart_wsgm", "wsgm_steps", "wph_phi4", "quickstart"])
def test_hparams_reload_with_weights_only(experiment: str, tmp_path: Path) -> None:
    """Lightning reloads checkpoints with torch.load(weights_only=True): the saved hparams must
    hold plain Python values (a config list stays an OmegaConf ListConfig otherwise)."""
    cfg = _compose([f"experiment={experiment}", "logger=csv"], tmp_path)
    module = instantiate(cfg.module)
    torch.save({"hyper_parameters": dict(module.hparams)}, tmp_path / "h.ckpt")
    loaded = torch.load(tmp_path / "h.ckpt", weights_only=True)["hyper_parameters"]
    assert loaded.keys() == dict(module.hparams).keys()


def test_tiny_quickstart_writes_metrics_and_samples(tmp_path: Path) -> None:
    from scatterlab.train import train

    cfg = _compose(["experiment=quickstart_wsgm", *TINY], tmp_path)
    metrics = train(cfg)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    for key in (
        "test/spectrum_error",
        "spectrum_error",
        "hist_distance",
        "energy_per_site",
        "energy_per_site_data",
        "abs_m_w1",
        "seconds_per_sample",
        "val/loss",
        "num_params",
    ):
        assert key in saved, key
    assert saved["spectrum_error"] == pytest.approx(metrics["spectrum_error"])
    e, e_data = saved["energy_per_site"], saved["energy_per_site_data"]
    assert saved["energy_error"] == pytest.approx(abs(e - e_data) / e_data)
    samples = torch.load(tmp_path / "samples.pt")
    assert samples.shape == (16, 1, 16, 16)
    assert (tmp_path / "samples.png").stat().st_size > 0
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()


def test_bad_wsgm_config_is_a_config_error(tmp_path: Path) -> None:
    cfg = _compose(["experiment=quickstart_wsgm", "logger=csv", "model.levels=5"], tmp_path)
    with pytest.raises(Exception) as info:
        instantiate(cfg.model)
    assert isinstance(info.value.__cause__ or info.value, ConfigError)
    assert "not divisible by 2^J" in str(info.value.__cause__ or info.value)
    cfg = _compose(["experiment=quickstart_wsgm", "logger=csv", "model.wavelet=db99x"], tmp_path)
    with pytest.raises(Exception) as info:
        instantiate(cfg.model)
    assert isinstance(info.value.__cause__ or info.value, ConfigError)


def test_pixels_per_scale_gives_coarse_scales_more_images(tmp_path: Path) -> None:
    """module.pixels_per_scale: every scale trains on about the same number of pixels."""
    overrides = ["experiment=quickstart_wsgm", "logger=csv", "model.levels=2", "data.size=16"]
    cfg = _compose([*overrides, "module.pixels_per_scale=512"], tmp_path)
    module = instantiate(cfg.module)
    seen = []  # (images, resolution) each scale's diffusion loss was given
    loss = module.net.diffusion.loss
    module.net.diffusion.loss = lambda net, x0, cond=None, **kw: (  # record, then compute
        seen.append((x0.shape[0], x0.shape[-1])) or loss(net, x0, cond, **kw)
    )
    module.net.fit_stats(torch.randn(64, 1, 16, 16))
    module.training_step(torch.randn(64, 1, 16, 16), 0)
    # coarsest 4x4 low-pass: 512 / 16 = 32 images; finest (8x8) details given their 8x8
    # low-pass: 512 / 64 = 8; coarser 4x4 details: 32
    assert seen == [(32, 4), (8, 8), (32, 4)]
    # SGM: its single 16x16 scale trains on 512 / 256 = 2 images
    sgm = ["experiment=phi4_sgm", "logger=csv", "data.size=16", "module.pixels_per_scale=512"]
    module = instantiate(_compose(sgm, tmp_path).module)
    seen.clear()
    loss = module.net.diffusion.loss
    module.net.diffusion.loss = lambda net, x0, cond=None, **kw: (
        seen.append((x0.shape[0], x0.shape[-1])) or loss(net, x0, cond, **kw)
    )
    module.net.fit_stats(torch.randn(64, 1, 16, 16))
    module.training_step(torch.randn(64, 1, 16, 16), 0)
    assert seen == [(2, 16)]


@pytest.mark.parametrize("model", ["wsgm", "sgm"])
@pytest.mark.parametrize("size,levels", [(16, 1), (32, 2), (64, 3)])
def test_steps_study_job_configs(model: str, size: int, levels: int, tmp_path: Path) -> None:
    """experiment=wsgm_steps: one setting for every L, coarsest scale / bottleneck 8x8."""
    cfg = _compose(["experiment=wsgm_steps", f"model={model}", f"data.size={size}"], tmp_path)
    net = instantiate(cfg.model)
    if model == "wsgm":
        assert isinstance(net, WSGM) and net.levels == levels
        assert net.nets[0].inp.in_channels == 1 and len(net.nets) == levels + 1
    else:
        assert isinstance(net, SGM) and net.net.n_down == levels  # 8x8 bottleneck
    module = instantiate(cfg.module)
    assert list(module.hparams.eval_steps) == [2, 4, 8, 16, 32, 64, 128]
    with pytest.raises(ConfigError, match="coarsest"):
        WSGM(size=size, coarsest=12)


def test_eval_steps_is_checked(tmp_path: Path) -> None:
    for bad in ("[]", "[0,4]"):
        cfg = _compose(["experiment=quickstart_wsgm", f"module.eval_steps={bad}"], tmp_path)
        with pytest.raises(Exception, match="eval_steps") as info:
            instantiate(cfg.module)
        assert isinstance(info.value.__cause__ or info.value, ConfigError)


def test_oracle_study_job_metrics_per_step_count(tmp_path: Path) -> None:
    """train=false job with exact scores: per-N metrics; the error falls with N to near the
    floor of exact samples (Gaussian field, L = 16, WSGM J = 1)."""
    from scatterlab.train import train

    overrides = [
        "experiment=wsgm_gaussian_oracle",
        "logger=csv",
        "data.n_train=256",
        "data.n_test=256",
        "module.n_reference=256",
        "module.eval_steps=[2,32]",
        "module.eval_pixels=65536",
        "module.n_samples=16",
        "callbacks.progress_bar=null",
    ]
    metrics = train(_compose(overrides, tmp_path))
    assert metrics["eval_samples"] == 256
    e2, e32 = metrics["steps/N=2/spectrum_error"], metrics["steps/N=32/spectrum_error"]
    assert e2 > 0.5 and e32 < 0.08 and e32 < 3 * metrics["floor/spectrum_error"] + 0.02
    assert metrics["steps/N=2/hist_distance"] > metrics["steps/N=32/hist_distance"]
    # Gaussian field: the energy is the mass-term one; N = 32 gets it within a few percent
    assert metrics["steps/N=32/energy_error"] < 0.05 < metrics["steps/N=2/energy_error"]
    assert (tmp_path / "samples.png").exists()


def test_comparison_figure_curves_and_file(tmp_path: Path) -> None:
    """samples.png's lower row: densities integrate to the mass inside the bins, spectra are
    the metric's; the file is the 2 x 2 figure."""
    import matplotlib.image as mpimg

    from scatterlab.wsgm.metrics import radial_power_spectrum
    from scatterlab.wsgm.plots import comparison_figure, figure_curves

    g = torch.Generator().manual_seed(0)
    data = torch.randn(64, 1, 16, 16, generator=g)
    c = figure_curves(2 * data, data, bins=50)
    width = float(c["edges"][1] - c["edges"][0])
    assert float(c["hist_data"].sum()) * width == pytest.approx(0.999, abs=2e-3)
    inside = ((2 * data >= c["edges"][0]) & (2 * data <= c["edges"][-1])).double().mean()
    assert float(c["hist_samples"].sum()) * width == pytest.approx(float(inside), abs=1e-9)
    assert torch.allclose(c["spectrum_samples"], 4 * radial_power_spectrum(data))
    img = mpimg.imread(comparison_figure(data, data, tmp_path / "same.png", title="x"))
    assert img.shape[:2] == (765, 855)  # 9.5 x 8.5 inches at 90 dpi
    assert (img[..., :3] < 0.5).any() and (img[..., :3] > 0.9).any()


def test_training_fields_of_labelled_image_splits(tmp_path: Path) -> None:
    """Image data modules keep (images, labels) splits: the figure's training fields come from
    the loader then (a tuple split crashed every cifar_wsgm run at its test stage)."""
    from types import SimpleNamespace

    cfg = _compose(["experiment=quickstart_wsgm", *TINY], tmp_path)
    module = instantiate(cfg.module)
    x = torch.randn(8, 1, 16, 16)
    loader = [(x[:4], torch.zeros(4)), (x[4:], torch.zeros(4))]
    dm = SimpleNamespace(
        splits={"train": (x, torch.zeros(8))},
        train_dataloader=lambda: loader,
        on_after_batch_transfer=lambda batch, i: batch,
    )
    module._trainer = SimpleNamespace(datamodule=dm)  # what Lightning's trainer exposes here
    got = module._training_fields(6)
    assert torch.equal(got, x[:6])
