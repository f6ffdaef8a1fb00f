"""User errors before anything runs (one line, exit 2), the NaN guard, env record, Optuna search."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from scatterlab.errors import ConfigError
from scatterlab.overrides import check_overrides
from tests.conftest import ROOT, read_metrics, run_cli

CONFIGS = str(ROOT / "configs")
TINY = ["model.widths=[8,16]", "logger=csv", "callbacks.progress_bar=null"]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["experiment=does_not_exist"], "unknown experiment 'does_not_exist'; the experiment"),
        (["experiment=cifar_scatering"], "(did you mean cifar_scattering"),
        (["model.widht=2"], "model.widht is not a key of model (did you mean model.width?)"),
        (["trainer.max_epoch=2"], "(did you mean trainer.max_epochs?)"),
        (["data.batch_size=0"], "data.batch_size=0 is out of range: it must be >= 2"),
        (["data.val_fraction=2"], "data.val_fraction=2 is out of range: it must be >= 0 and < 1"),
        (["data.val_fraction=-0.5"], "data.val_fraction=-0.5 is out of range: it must be >= 0"),
        (["trainer.max_epochs=-5"], "trainer.max_epochs=-5 is out of range: it must be >= -1"),
        (["module.optimizer.lr=nan"], "module.optimizer.lr=nan is not a finite number"),
        # a sweep: every value is checked, not only the first job's
        (["-m", "model.width=0.5,1", "data.batch_size=8,-2"], "data.batch_size=-2 is out of"),
        (["-m", "experiment=quickstart,nope"], "unknown experiment 'nope'"),
        (["study=nope"], "unknown study 'nope'"),
        # a fixed key that only the swept experiments have: Hydra's base config lacks it
        (
            [
                "-m",
                "study=phi4_models",
                "experiment=quickstart_wsgm,phi4_sgm",
                "model.variance=small",
            ],
            "model.variance is not a key of this multirun's base config",
        ),
    ],
)
def test_bad_option_is_one_clear_error(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        check_overrides(CONFIGS, "train", overrides)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_valid_sweep_passes() -> None:
    check_overrides(CONFIGS, "train", ["-m", "model.width=0.5,1", "seed=1,2"])
    # the advised fix of the base-config error: a one-value sweep
    one = ["-m", "study=phi4_models", "experiment=quickstart_wsgm,phi4_sgm"]
    check_overrides(CONFIGS, "train", [*one, "model.variance=choice(small)"])


def test_cli_errors_are_one_line_exit_2(tmp_path: Path) -> None:
    for overrides in (["experiment=does_not_exist"], ["-m", "model.widht=1,2"]):
        proc = run_cli("train.py", *overrides, f"hydra.sweep.dir={tmp_path}", check=False)
        assert proc.returncode == 2, proc.stderr[-2000:]
        lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert not any(tmp_path.iterdir()), "a job ran although the sweep was invalid"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_gpu_experiment_on_cpu_says_add_trainer_cpu(tmp_path: Path) -> None:
    proc = run_cli(
        "train.py", "experiment=cifar_scattering", f"hydra.run.dir={tmp_path}", check=False
    )
    assert proc.returncode == 2
    assert "add trainer=cpu" in proc.stderr and "Traceback" not in proc.stderr


def test_diverging_run_stops_at_first_nan(tmp_path: Path) -> None:
    proc = run_cli(
        "train.py",
        *TINY,
        "module.optimizer.lr=1e12",
        "trainer.max_epochs=3",
        f"hydra.run.dir={tmp_path}",
        check=False,
    )
    assert proc.returncode == 3, proc.stderr[-2000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "the run diverged" in errors[0] and "at step " in errors[0]
    m = read_metrics(tmp_path)
    assert m["status"] == "diverged"
    assert 0 < m["diverged_step"] < 20  # the first bad step, not after three epochs
    assert f"at step {m['diverged_step']} " in errors[0]


def test_metrics_record_env_and_optuna_reports_best(tmp_path: Path) -> None:
    run_cli(
        "train.py",
        *TINY,
        "hparams_search=quickstart_optuna",
        "hydra.sweeper.n_trials=3",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=4",
        f"hydra.sweep.dir={tmp_path}",
    )
    trials = [read_metrics(tmp_path / str(i)) for i in range(3)]
    env = trials[0]["env"]
    assert env["device"] == "cpu" and env["torch"] == torch.__version__ and env["cpu_cores"] >= 1
    assert env["precision"] == "32-true" and trials[0]["status"] == "ok"
    best = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(max(t["val/acc_best"] for t in trials))
    assert set(best["best_params"]) == {"module.optimizer.lr", "model.width"}
