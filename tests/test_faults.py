"""Faults: kill -9 mid-epoch then resume, corrupt checkpoints, a sweep with a crashing job.

All runs use a tiny deterministic network on the digits (a few seconds of training each).
"""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from scatterlab.errors import CheckpointError
from scatterlab.utils import resolve_ckpt_path
from tests.conftest import ROOT, read_metrics, run_cli

EPOCHS = 4
TINY = [
    "model.widths=[8,16]",
    "trainer.deterministic=true",
    f"trainer.max_epochs={EPOCHS}",
    "logger=csv",
    "callbacks.progress_bar=null",
]
# metrics that must be identical between an interrupted-and-resumed and an uninterrupted run
SAME = [
    "test/acc",
    "test/loss",
    "val/acc_best",
    "val/loss",
    "train/loss",
    "best_epoch",
    "last_epoch",
]


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    # Same thread count in every run (bitwise equal results) and a light load on shared cores.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run, the yardstick of the resumed ones."""
    run_dir = tmp_path_factory.mktemp("reference")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        run_cli("train.py", *TINY, f"hydra.run.dir={run_dir}")
    return run_dir


def val_epochs(run_dir: Path) -> list[int]:
    """Epochs with a val/acc row in the CSV log, in file order."""
    with open(run_dir / "csv" / "metrics.csv") as f:
        return [int(r["epoch"]) for r in csv.DictReader(f) if r.get("val/acc")]


def test_kill9_mid_epoch_then_resume_matches_uninterrupted(reference: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.ckpt"
    cmd = [sys.executable, str(ROOT / "train.py"), *TINY, f"hydra.run.dir={run_dir}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while not last.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # into epoch 1 (an epoch takes a few seconds)
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (run_dir / "metrics.json").exists()
    killed_at = torch.load(last, map_location="cpu", weights_only=False)["epoch"]
    assert killed_at < EPOCHS - 1

    run_cli("train.py", *TINY, f"hydra.run.dir={run_dir}", "ckpt_path=last")
    resumed, ref = read_metrics(run_dir), read_metrics(reference)
    for key in SAME:
        assert resumed[key] == pytest.approx(ref[key], rel=1e-6, abs=1e-7), key
    # the resumed run continues the epoch count (its CSV log holds the epochs it trained)
    assert val_epochs(run_dir) == list(range(killed_at + 1, EPOCHS))


def _corrupt(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])  # a truncated copy, as after a full disk


def test_corrupt_checkpoint_clear_error_and_fallback(reference: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    for ckpt in (reference / "checkpoints").glob("*.ckpt"):
        (run_dir / "checkpoints" / ckpt.name).write_bytes(ckpt.read_bytes())
    last = run_dir / "checkpoints" / "last.ckpt"
    _corrupt(last)
    (previous,) = [p for p in (run_dir / "checkpoints").glob("epoch_*.ckpt")]

    # a corrupt checkpoint the user names explicitly: a clear error, no substitute
    explicit = run_dir / "explicit.ckpt"
    explicit.write_bytes(last.read_bytes())
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        resolve_ckpt_path(str(explicit), run_dir)
    # resuming this run dir (last / auto): falls back to the previous good checkpoint
    assert resolve_ckpt_path("last", run_dir) == str(previous)
    assert resolve_ckpt_path("auto", run_dir) == str(previous)

    # end to end: the run resumes from it, finishes, and says why in its log
    proc = run_cli("train.py", *TINY, f"hydra.run.dir={run_dir}", "ckpt_path=last")
    assert "previous good checkpoint" in proc.stdout + proc.stderr
    assert read_metrics(run_dir)["last_epoch"] == EPOCHS - 1

    # no good checkpoint left: the error says so
    for p in (run_dir / "checkpoints").glob("*.ckpt"):
        _corrupt(p)
    with pytest.raises(CheckpointError, match="no other good checkpoint"):
        resolve_ckpt_path("last", run_dir)


def test_sweep_with_a_crashing_job_reports_it_and_finishes_the_others(tmp_path: Path) -> None:
    # job 0 diverges inside trainer.fit (its loss overflows to inf/NaN), job 1 is fine
    proc = run_cli(
        "train.py",
        "-m",
        *TINY,
        "trainer.max_epochs=1",
        "module.optimizer.lr=1e12,0.05",
        f"hydra.sweep.dir={tmp_path}",
        check=False,
    )
    assert proc.returncode != 0
    assert (tmp_path / "1" / "metrics.json").exists(), "the other job did not finish"
    assert read_metrics(tmp_path / "0")["status"] == "diverged"
    log = tmp_path / "0" / "train.log"
    assert "job 0 (" in proc.stderr and f"Log: {log}" in proc.stderr
    assert "the run diverged" in log.read_text()
