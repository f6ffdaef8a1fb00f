"""Running on a cluster: SLURM requeue on preemption, resume, checkpoint fallback, wandb groups.

How a preempted or timed-out SLURM job continues (hydra/launcher=slurm):
1. SLURM sends USR2 (submitit's preemption signal; `signal_delay_s` before the time limit).
2. PreemptionHandler stops training at the next batch boundary and hands over to submitit,
   which requeues the job (`scontrol requeue`) and exits.
3. The requeued job runs the same Hydra job again: same sweep dir and subdir (submitit pickles
   the composed config), so the same run dir. `requested_ckpt_path` turns `ckpt_path=null` into
   `auto` for requeued jobs, so training resumes from checkpoints/last.ckpt, and the wandb run
   id kept in the run dir (utils.wandb_run_id) continues the same wandb run.
The resume point is the checkpoint of the last completed epoch: the partial epoch is trained
again from its start. This keeps a resumed deterministic run equal to an uninterrupted one
(data order and augmentation are functions of seed, epoch and step; a mid-epoch checkpoint
would replay the wrong batches, as the data loaders cannot skip to a position).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback as HydraCallback
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf

from scatterlab.errors import CheckpointError

log = logging.getLogger("scatterlab")


def _gpus_per_node(accelerator: str, devices: Any) -> int | None:
    """GPUs to request per node: trainer.devices on GPU trainers, none on CPU ones."""
    if str(accelerator) in ("gpu", "cuda", "auto") and isinstance(devices, int) and devices > 0:
        return devices
    return None


OmegaConf.register_new_resolver("sl_gpus_per_node", _gpus_per_node, replace=True)


def preempt_signal() -> signal.Signals:
    """The signal SLURM sends before preemption / time limit (submitit's, USR2 by default)."""
    return signal.Signals[f"SIG{os.environ.get('SUBMITIT_PREEMPT_SIGNAL', 'USR2')}"]


def is_requeued_slurm_job() -> bool:
    return int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0


def requested_ckpt_path(ckpt_path: str | None) -> str | None:
    """`ckpt_path` as given, except that a requeued SLURM job resumes (`auto`) by default."""
    if ckpt_path in (None, "", "null") and is_requeued_slurm_job():
        log.info("Requeued SLURM job: resuming from checkpoints/last.ckpt if present")
        return "auto"
    return ckpt_path


def sweep_group() -> str | None:
    """wandb group of a multirun job: the sweep dir's name (one group per sweep)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    return Path(hc.sweep.dir).name if hc.mode == RunMode.MULTIRUN else None


def fallback_checkpoint(bad: Path, load: Any) -> str | None:
    """The newest other checkpoint next to `bad` that loads, or None.

    `load` is the loader that raised for `bad` (utils.load_checkpoint); candidates are tried
    newest first by modification time.
    """
    candidates = sorted(
        (p for p in bad.parent.glob("*.ckpt") if p.resolve() != bad.resolve()),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for path in candidates:
        try:
            load(path)
        except CheckpointError as e:
            log.warning(str(e))
            continue
        return str(path)
    return None


def _close_wandb() -> None:
    # The requeue SIGTERMs every process of the job step, wandb's service too: close the run
    # first, so its files are complete and nothing calls the dead service afterwards.
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish()


class PreemptionHandler(Callback):
    """Stop at a batch boundary on the cluster's preemption signal and requeue the job.

    Without it the signal lands anywhere, e.g. in the middle of a checkpoint write. The handler
    only records the signal; the hooks below act on it at the next batch or epoch boundary,
    then call the handler that was installed before (submitit's: requeue and exit), or, in a
    plain sbatch job, requeue with scontrol and exit.
    """

    def __init__(self) -> None:
        self._signum: int | None = None
        self._previous: Any = None
        self._installed: signal.Signals | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or self._installed is not None:
            return
        sig = preempt_signal()
        try:
            self._previous = signal.signal(sig, self._record)
        except ValueError:  # not the main thread (e.g. a notebook worker): leave signals alone
            return
        self._installed = sig

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._installed is not None:
            signal.signal(self._installed, self._previous)
            self._installed = None

    def _record(self, signum: int, frame: FrameType | None) -> None:
        self._signum = signum

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self._act(trainer)

    def on_validation_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self._act(trainer)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._act(trainer)

    def _act(self, trainer: L.Trainer) -> None:
        if self._signum is None:
            return
        signum, self._signum = self._signum, None
        log.warning(
            f"{signal.Signals(signum).name} received (preemption or time limit) at epoch "
            f"{trainer.current_epoch}, step {trainer.global_step}: requeueing; the job resumes "
            "from the last completed epoch's checkpoint in this run dir"
        )
        previous = self._previous
        self.teardown(trainer, trainer.lightning_module, "fit")
        _close_wandb()
        if callable(previous):
            previous(signum, None)  # submitit: checkpoint the job, scontrol requeue, exit
            return  # submitit returns on ranks > 0: the requeue stops them
        job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID")
        if not job:  # not a SLURM job: just stop, as after max_epochs
            trainer.should_stop = True
            return
        if os.environ.get("SLURM_ARRAY_TASK_ID"):
            job = f"{job}_{os.environ['SLURM_ARRAY_TASK_ID']}"
        if os.environ.get("SLURM_PROCID", "0") == "0":
            subprocess.run(["scontrol", "requeue", job], check=False)
        raise SystemExit(0)


class ReportFailedJobs(HydraCallback):
    """Hydra callback: a failed job of a sweep is reported in one line with its log path.

    The launcher runs the sweep's other jobs on; Hydra raises the first failure at the end.
    """

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        # where the sweep's jobs are, and the one command that aggregates them
        sweep = Path(config.hydra.sweep.dir)
        print(
            f"Sweep done: its jobs are in {sweep}/<job number>/. Aggregate them with:\n"
            f"  scatterlab-report {sweep}",
            flush=True,
        )

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if job_return.status != JobStatus.FAILED:
            return
        hc = job_return.hydra_cfg.hydra if job_return.hydra_cfg else config.hydra
        logs = [str(Path(hc.runtime.output_dir) / f"{hc.job.name}.log")]
        if os.environ.get("SUBMITIT_EXECUTOR"):
            import submitit

            logs.append(str(submitit.JobEnvironment().paths.stderr))
        error = job_return._return_value
        message = (
            f"job {hc.job.num} ({' '.join(job_return.overrides or [])}) failed: "
            f"{type(error).__name__}: {error}. Log: {', '.join(logs)}"
        )
        log.error(message)
        print(f"error: {message}", file=sys.stderr, flush=True)
