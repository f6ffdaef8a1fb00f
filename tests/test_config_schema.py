"""Config validation (every group, checked against its target's signature) and launcher configs."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, read_write

import scatterlab.cluster  # noqa: F401 - registers the sl_* resolvers of the launcher configs
from scatterlab.config_check import validate_config
from scatterlab.errors import ConfigError
from tests.conftest import ROOT

EXPERIMENTS = sorted(p.stem for p in (ROOT / "configs" / "experiment").glob("*.yaml"))


def composed(*overrides: str) -> DictConfig:
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)  # for ${hydra:...} interpolations
    return cfg


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_passes_validation(experiment: str) -> None:
    validate_config(composed(f"experiment={experiment}"), machine=False)  # GPU ones too


@pytest.mark.parametrize(
    "override, message",
    [
        ("+data.batchsize=3", "data.batchsize: unknown key for scatterlab.data.DigitsDataModule"),
        ("+model.widht=2", "model.widht: unknown key"),
        ("+module.optimizer.momentun=0.9", "module.optimizer.momentun: unknown key"),
        ("+trainer.max_epoch=3", "(did you mean max_epochs?)"),
        ("+callbacks.model_checkpoint.save_lst=true", "callbacks.model_checkpoint.save_lst"),
        ("+logger.csv.nme=x", "logger.csv.nme: unknown key"),
        ("data.batch_size=big", "data.batch_size='big' must be of type int"),
        ("trainer.max_epochs=ten", "trainer.max_epochs='ten' must be of type"),
        ("module.optimizer.lr=fast", "module.optimizer.lr='fast' must be of type"),
        ("trainer.deterministic=maybe", "trainer.deterministic='maybe'"),
        ("seed=abc", "seed='abc' must be of type int"),
        ("train=3", "train=3 must be of type bool"),
    ],
)
def test_wrong_key_or_type_is_named(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        validate_config(composed(override))
    assert message in str(e.value)


def test_slurm_launcher_follows_the_trainer() -> None:
    launcher = composed("hydra/launcher=slurm", "trainer=ddp_cpu").hydra.launcher
    assert (launcher.tasks_per_node, launcher.nodes, launcher.gpus_per_node) == (2, 1, None)
    launcher = composed(
        "hydra/launcher=slurm", "trainer=gpu", "trainer.devices=4", "trainer.num_nodes=2"
    ).hydra.launcher
    assert (launcher.tasks_per_node, launcher.nodes, launcher.gpus_per_node) == (4, 2, 4)
    assert launcher.max_num_timeout > 0  # requeue on time limit: train.py resumes requeued jobs
    local = composed("hydra/launcher=local").hydra.launcher
    assert local.tasks_per_node == 1 and local.gpus_per_node is None


def test_requeued_slurm_job_resumes_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    assert scatterlab.cluster.requested_ckpt_path(None) is None
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert scatterlab.cluster.requested_ckpt_path(None) == "auto"
    assert scatterlab.cluster.requested_ckpt_path("/a/b.ckpt") == "/a/b.ckpt"


def test_wandb_group_is_the_sweep(tmp_path: Path) -> None:
    cfg = composed(f"hydra.sweep.dir={tmp_path / 'sweep_x'}")
    assert scatterlab.cluster.sweep_group() is None  # a single run: no group
    with read_write(cfg.hydra):
        cfg.hydra.mode = "MULTIRUN"
    HydraConfig.instance().set_config(cfg)
    assert scatterlab.cluster.sweep_group() == "sweep_x"
