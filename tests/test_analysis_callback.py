"""callbacks=analysis on real quickstart runs (in-process): analysis.json, plots, logged
scalars, metrics.json, and the one-line user errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from scatterlab import ROOT
from scatterlab.errors import ConfigError
from scatterlab.train import train

LAYERS = ["blocks.0.proj:in", "blocks.0", "blocks.1.proj:in", "blocks.1"]
TINY = [
    "callbacks=analysis",
    "logger=csv",
    "model.widths=[16,32]",
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=4",
    "+trainer.limit_val_batches=1",
    "callbacks.analysis.images=64",
    "callbacks.analysis.keep=64",
    "test=false",
]


def run_train(tmp_path: Path, *overrides: str) -> dict:
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", return_hydra_config=True, overrides=[*TINY, *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
        cfg.hydra.runtime.output_dir = str(tmp_path)
    HydraConfig().set_config(cfg)
    return train(cfg)


def test_callback_on_quickstart_writes_every_layer(tmp_path: Path, one_thread) -> None:
    """A tiny quickstart (2 blocks, 4 batches) analysed before training and after epoch 1."""
    metrics = run_train(tmp_path)
    doc = json.loads((tmp_path / "analysis.json").read_text())
    assert doc["layers"] == LAYERS
    assert [h["epoch"] for h in doc["history"]] == [0, 1]
    for h in doc["history"]:
        assert list(h["layers"]) == LAYERS
        for name, v in h["layers"].items():
            assert v["within"] > 0 and v["between"] > 0, name
            assert 0 <= v["ncm_acc"] <= 1 and 0 <= v["probe_acc"] <= 1
            assert 0 <= v["ixt_bin"] <= 6 + 1e-9  # log2(64 kept images)
        assert h["images"] == {"fit": 64, "eval": 64, "kept": 64}
        assert 0 <= h["classifier"]["nc4"] <= 1 and h["classifier"]["nc1"] > 0
        assert len(h["cka_linear"]["matrix"]) == len(LAYERS)
    for png in ("analysis_layers.png", "analysis_collapse.png", "infoplane_bin.png"):
        assert (tmp_path / png).stat().st_size > 1000
    # scalars reach the loggers (CSV), and the last analysis metrics.json
    rows = list(csv.DictReader((tmp_path / "csv" / "metrics.csv").open()))
    logged = {k for r in rows for k, v in r.items() if v}
    assert {f"analysis/{n}/ratio" for n in LAYERS} <= logged
    last = doc["history"][-1]["layers"]["blocks.1"]["ratio"]
    assert metrics["analysis/blocks.1/ratio"] == pytest.approx(last, rel=1e-6)
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["analysis/blocks.1/ratio"] == pytest.approx(last, rel=1e-6)


def test_unknown_layer_fails_before_training(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        run_train(tmp_path, "callbacks.analysis.layers=[blocks.0,blocks.9]")
    msg = str(e.value)
    assert "blocks.9" in msg and "did you mean" in msg and "\n" not in msg
    assert not (tmp_path / "analysis.json").exists()
    assert not list((tmp_path / "checkpoints").glob("*.ckpt"))  # nothing trained
