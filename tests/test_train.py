"""End to end through Hydra: the quickstart, eval, resume, multirun, wandb, and bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from scatterlab import ROOT
from scatterlab.train import train
from tests.conftest import read_metrics, run_cli
from tests.wandb_records import summary as wandb_summary


def test_quickstart_fast_dev_run(tmp_path: Path) -> None:
    """The default config composes and runs one batch of each loop in-process."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", return_hydra_config=True, overrides=["logger=csv"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
        cfg.hydra.runtime.output_dir = str(tmp_path)
        cfg.trainer.fast_dev_run = True
    HydraConfig().set_config(cfg)
    metrics = train(cfg)
    assert 0.0 <= metrics["test/acc"] <= 1.0
    assert metrics["num_params"] == read_metrics(tmp_path)["num_params"] > 0


def test_quickstart_accuracy(quickstart_run: Path) -> None:
    """The README's promise: >= 95% test accuracy on the embedded digits."""
    m = read_metrics(quickstart_run)
    assert m["test/acc"] >= 0.95
    assert m["last_epoch"] == 7 and 0 <= m["best_epoch"] <= 7
    assert {"val/acc_best", "wall_time_s", "num_params", "test/loss"} <= m.keys()
    assert (quickstart_run / "checkpoints" / "last.ckpt").exists()


def test_eval_reproduces_test_accuracy(quickstart_run: Path, tmp_path: Path) -> None:
    best = next((quickstart_run / "checkpoints").glob("epoch_*.ckpt"))
    run_cli("eval.py", f"ckpt_path={best}", f"hydra.run.dir={tmp_path}")
    assert read_metrics(tmp_path)["test/acc"] == read_metrics(quickstart_run)["test/acc"]


def test_train_false_tests_the_given_checkpoint(quickstart_run: Path, tmp_path: Path) -> None:
    """train=false ckpt_path=PATH tests PATH's weights, not a freshly initialised net."""
    best = next((quickstart_run / "checkpoints").glob("epoch_*.ckpt"))
    run_cli("train.py", "train=false", f"ckpt_path={best}", f"hydra.run.dir={tmp_path}")
    assert read_metrics(tmp_path)["test/acc"] == read_metrics(quickstart_run)["test/acc"]


def test_offline_wandb_run_holds_metrics(quickstart_run: Path) -> None:
    runs = list((quickstart_run / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    summary = wandb_summary(next(runs[0].glob("run-*.wandb")))
    metrics = read_metrics(quickstart_run)
    assert summary["test/acc"] == pytest.approx(metrics["test/acc"])
    assert summary["num_params"] == metrics["num_params"]
    run_id = (quickstart_run / ".wandb_id").read_text().strip()
    assert runs[0].name.endswith(run_id)


def test_resume_from_last_continues_epochs(quickstart_run: Path, tmp_path: Path) -> None:
    """ckpt_path=last in a copy of the run dir trains epochs 8-9, not 0-9."""
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(quickstart_run, run_dir)
    run_cli("train.py", f"hydra.run.dir={run_dir}", "ckpt_path=last", "trainer.max_epochs=10")
    m = read_metrics(run_dir)
    assert m["last_epoch"] == 9
    # exactly two more epochs of optimizer steps, none repeated
    steps_before = torch.load(quickstart_run / "checkpoints" / "last.ckpt", weights_only=False)
    steps_after = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert steps_after["global_step"] * 8 == steps_before["global_step"] * 10
    assert steps_after["epoch"] == 9
    assert m["test/acc"] >= 0.95
    # the resumed run logs into the same wandb run
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 2
    ids = {p.name.split("-")[-1] for p in (run_dir / "wandb").glob("offline-run-*")}
    assert len(ids) == 1


def test_multirun_from_cli(tmp_path: Path) -> None:
    run_cli(
        "train.py",
        "-m",
        "model.width=0.5,1.0",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=3",
        "logger=csv",
        f"hydra.sweep.dir={tmp_path}",
    )
    params = [read_metrics(tmp_path / str(i))["num_params"] for i in (0, 1)]
    assert params[0] < params[1]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["experiment=does_not_exist"], "unknown experiment 'does_not_exist'"),
        (["model.widht=2"], "model.widht"),
        (["model.width=abc"], "model.width='abc' must be of type float"),
        (["model.nonlinearity=sigmoid"], "model.nonlinearity='sigmoid' is not one of the choices"),
        (["data=imagefolder"], "data.root has no value"),
    ],
)
def test_bad_config_fails_clearly(overrides: list[str], message: str, tmp_path: Path) -> None:
    proc = run_cli("train.py", *overrides, f"hydra.run.dir={tmp_path}", "logger=csv", check=False)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_data_offline_fails_clearly(tmp_path: Path) -> None:
    proc = run_cli(
        "train.py",
        "data=cifar10",
        f"data.root={tmp_path / 'nothing'}",
        "data.download=false",
        f"hydra.run.dir={tmp_path / 'run'}",
        check=False,
    )
    assert proc.returncode == 2
    assert f"data.root={tmp_path / 'nothing'}" in proc.stderr
    assert "Traceback" not in proc.stderr
    # one line on the console, and no empty run directory left behind
    console = proc.stdout + proc.stderr
    assert console.count("data.download=false") == 1
    assert not (tmp_path / "run").exists()


def test_corrupt_checkpoint_fails_clearly(quickstart_run: Path, tmp_path: Path) -> None:
    good = (quickstart_run / "checkpoints" / "last.ckpt").read_bytes()
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(good[: len(good) // 2])
    proc = run_cli("eval.py", f"ckpt_path={bad}", f"hydra.run.dir={tmp_path / 'e'}", check=False)
    assert proc.returncode == 2
    assert "corrupt or truncated" in proc.stderr
    assert proc.stderr.count("\n") <= 3
