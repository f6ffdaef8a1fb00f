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
    [("quickstart_wsgm", WSGM), ("phi4_wsgm", WSGM), ("phi4_sgm", SGM), ("cifar_wsgm", WSGM)],
)
def test_experiment_configs_instantiate(experiment: str, cls: type, tmp_path: Path) -> None:
    cfg = _compose([f"experiment={experiment}", "logger=csv"], tmp_path)
    assert cfg.callbacks.model_checkpoint.monitor == "val/loss"
    assert cfg.callbacks.model_checkpoint.mode == "min"
    model = instantiate(cfg.model)
    assert isinstance(model, cls)
    module = instantiate(cfg.module)
    assert module.net is not None
    if experiment != "cifar_wsgm":  # CIFAR needs its files; only check its model here
        assert instantiate(cfg.data).size == model.size


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
        "val/loss",
        "num_params",
    ):
        assert key in saved, key
    assert saved["spectrum_error"] == pytest.approx(metrics["spectrum_error"])
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
    module.net.diffusion.loss = lambda net, x0, cond=None: (  # record, then compute as usual
        seen.append((x0.shape[0], x0.shape[-1])) or loss(net, x0, cond)
    )
    module.net.fit_stats(torch.randn(64, 1, 16, 16))
    module.training_step(torch.randn(64, 1, 16, 16), 0)
    # coarsest 4x4 low-pass: 512 / 16 = 32 images; finest (8x8) details given their 8x8
    # low-pass: 512 / 64 = 8; coarser 4x4 details: 32
    assert seen == [(32, 4), (8, 8), (32, 4)]
    sgm = ["experiment=phi4_sgm", "logger=csv", "module.pixels_per_scale=512"]
    cfg = _compose(sgm, tmp_path)
    with pytest.raises(Exception, match="pixels_per_scale") as info:
        instantiate(cfg.module)
    assert isinstance(info.value.__cause__ or info.value, ConfigError)
