"""On a real one-node SLURM cluster (scripts/slurm_cluster.sh): sweeps, DDP, preemption.

Skipped, with the reason, where the cluster cannot be installed or started.
"""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, read_metrics, run_cli

pytestmark = pytest.mark.slurm

EPOCHS = 4
TINY = [
    "model.widths=[8,16]",
    "trainer.deterministic=true",
    f"trainer.max_epochs={EPOCHS}",
    "callbacks.progress_bar=null",
    "hydra/launcher=slurm",
    # the test cluster has 2 CPUs: 1 per task, and a short time limit
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.timeout_min=10",
]
# DDP (2 processes, global batch split in two, per-process batch norm, DistributedSampler
# order) is not bitwise equal to one process; on the 270 test digits it stays within this.
DDP_TOLERANCE = 0.03


@pytest.fixture(scope="module", autouse=True)
def cluster() -> None:
    script = ROOT / "scripts" / "slurm_cluster.sh"
    proc = subprocess.run([str(script)], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        reason = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:]
        pytest.skip(f"no SLURM cluster: {reason[0] if reason else 'slurm_cluster.sh failed'}")


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-job sweep (seeds 42 and 43) through hydra/launcher=slurm, as a SLURM job array."""
    sweep_dir = tmp_path_factory.mktemp("sweep")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        run_cli("train.py", "-m", *TINY, "logger=csv", "seed=42,43", f"hydra.sweep.dir={sweep_dir}")
    return sweep_dir


def test_sweep_of_two_slurm_jobs_writes_both_metrics(sweep: Path) -> None:
    metrics = [read_metrics(sweep / str(i)) for i in (0, 1)]
    assert all(m["last_epoch"] == EPOCHS - 1 and m["test/acc"] > 0.8 for m in metrics)
    assert metrics[0]["test/loss"] != metrics[1]["test/loss"]  # two seeds, two runs
    script = next((sweep / ".submitit").glob("*/*_submission.sh")).read_text()
    assert "#SBATCH --array=0-1" in script and "#SBATCH --ntasks-per-node=1" in script


def test_ddp_two_tasks_matches_single_process(sweep: Path, tmp_path: Path) -> None:
    run_cli("train.py", "-m", *TINY, "logger=csv", "trainer=ddp_cpu", f"hydra.sweep.dir={tmp_path}")
    script = next((tmp_path / ".submitit").glob("*/*_submission.sh")).read_text()
    assert "#SBATCH --ntasks-per-node=2" in script  # tasks_per_node follows trainer.devices
    log = (tmp_path / "0" / "train.log").read_text()  # Lightning's start-up lines go there
    assert "MEMBER: 2/2" in log  # Lightning saw both SLURM tasks as DDP ranks
    ddp, single = read_metrics(tmp_path / "0"), read_metrics(sweep / "0")
    assert ddp["last_epoch"] == single["last_epoch"] == EPOCHS - 1
    for key in ("test/acc", "val/acc_best"):
        assert abs(ddp[key] - single[key]) <= DDP_TOLERANCE, (key, ddp[key], single[key])


def _job_state(job: str) -> str:
    out = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
    return " ".join(re.findall(r"(?:JobState|Restarts)=\S+", out))


def test_preempted_job_requeues_and_resumes(sweep: Path, tmp_path: Path) -> None:
    """USR2 (submitit's preemption signal) mid-run: requeue, resume in the same run dir and
    wandb run, and finish with the same metrics as the uninterrupted job 0 of the sweep."""
    run_dir = tmp_path / "0"
    last = run_dir / "checkpoints" / "last.ckpt"
    cmd = [sys.executable, str(ROOT / "train.py"), "-m", *TINY, "seed=42", "logger=default"]
    cmd.append(f"hydra.sweep.dir={tmp_path}")
    out = open(tmp_path / "launcher.log", "w")  # noqa: SIM115 - closed below
    launcher = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=os.environ)
    try:
        deadline = time.time() + 240
        while not last.exists() and launcher.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert last.exists(), (tmp_path / "launcher.log").read_text()[-3000:]
        job = max(p.name for p in (tmp_path / ".submitit").iterdir())  # the SLURM job id
        subprocess.run(["scancel", "--signal=USR2", job], check=True)
        while "Restarts=1" not in _job_state(job) and time.time() < deadline:
            time.sleep(0.5)
        # SLURM holds a requeued job for ~2 minutes (its BeginTime): release it now
        while "PENDING" not in _job_state(job) and time.time() < deadline:
            time.sleep(0.5)
        subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)
        launcher.wait(timeout=max(1, deadline + 120 - time.time()))
    finally:
        if launcher.poll() is None:
            launcher.kill()
        out.close()
    assert launcher.returncode == 0, (tmp_path / "launcher.log").read_text()[-3000:]

    log = (run_dir / "train.log").read_text()
    assert "SIGUSR2 received" in log and "Requeued SLURM job: resuming" in log
    resumed, reference = read_metrics(run_dir), read_metrics(sweep / "0")
    for key in ("test/acc", "test/loss", "val/acc_best", "last_epoch", "best_epoch"):
        assert resumed[key] == pytest.approx(reference[key], rel=1e-6, abs=1e-7), key
    # the epoch count continued (the CSV log holds the epochs of the last attempt)
    with open(run_dir / "csv" / "metrics.csv") as f:
        epochs = sorted({int(r["epoch"]) for r in csv.DictReader(f) if r.get("val/acc")})
    assert epochs and epochs[-1] == EPOCHS - 1 and epochs == list(range(epochs[0], EPOCHS))
    assert epochs[0] > 0, "the requeued job started again from epoch 0"
    # one wandb run, continued: both attempts wrote to the run id kept in the run dir
    run_id = (run_dir / ".wandb_id").read_text().strip()
    attempts = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(attempts) == 2 and all(p.name.endswith(run_id) for p in attempts)
