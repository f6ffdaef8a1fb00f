"""module/optimizer=adam (the information-plane codes' Adam, lr 4e-4) and its config errors."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from scatterlab import ROOT
from scatterlab.errors import ConfigError
from scatterlab.overrides import check_overrides

CONFIGS = str(ROOT / "configs")


def _optimizer(*overrides: str) -> torch.optim.Optimizer:
    GlobalHydra.instance().clear()
    with initialize_config_dir(CONFIGS, version_base="1.3"):
        cfg = compose("train", overrides=list(overrides))
    module = instantiate(cfg.module)
    opt = module.configure_optimizers()
    return opt["optimizer"] if isinstance(opt, dict) else opt


def test_adam_is_built_with_its_lr_and_sgd_stays_the_default() -> None:
    opt = _optimizer("experiment=infoplane_digits", "module/optimizer=adam")
    assert type(opt) is torch.optim.Adam
    # infoplane_digits sets lr 0.1 for its SGD: a command-line lr wins over both
    opt = _optimizer(
        "experiment=infoplane_digits", "module/optimizer=adam", "module.optimizer.lr=4e-4"
    )
    assert type(opt) is torch.optim.Adam
    assert all(g["lr"] == pytest.approx(4e-4) for g in opt.param_groups)
    assert all(g["weight_decay"] == 0 for g in opt.param_groups)
    sgd = _optimizer("experiment=infoplane_digits")
    assert type(sgd) is torch.optim.SGD
    assert sgd.param_groups[0]["lr"] == 0.1 and sgd.param_groups[0]["momentum"] == 0.9


def test_wrong_optimizer_keys_give_one_line() -> None:
    check_overrides(CONFIGS, "train", ["experiment=infoplane_digits", "module/optimizer=adam"])
    with pytest.raises(ConfigError, match="unknown module/optimizer 'adma'.*adam, sgd"):
        check_overrides(CONFIGS, "train", ["module/optimizer=adma"])
    with pytest.raises(ConfigError, match="module.optimizer.momentum is not a key"):
        check_overrides(CONFIGS, "train", ["module/optimizer=adam", "module.optimizer.momentum=1"])
    # an experiment that sets SGD's momentum cannot silently hand it to Adam
    with pytest.raises(ConfigError, match="module.optimizer.momentum: unknown key for torch.optim"):
        check_overrides(CONFIGS, "train", ["experiment=neural_collapse", "module/optimizer=adam"])
