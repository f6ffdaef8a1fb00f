"""Glue shared by the entry points: error reporting, instantiation, checkpoints, metrics."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import pickle
import re
import sys
import uuid
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from omegaconf import DictConfig

from scatterlab.errors import CheckpointError
from scatterlab.ranges import NonNegativeInt

log = logging.getLogger("scatterlab")


def progress_bar(refresh_rate: NonNegativeInt = 1, log_refresh_rate: NonNegativeInt = 50):
    """Rich progress bar in a terminal; in logs (SLURM, CI, nohup) tqdm lines every
    `log_refresh_rate` batches, since Rich prints nothing until the end there."""
    from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar

    if sys.stdout.isatty():
        return RichProgressBar(refresh_rate=refresh_rate)
    return TQDMProgressBar(refresh_rate=log_refresh_rate)


def instantiate_all(cfg: DictConfig | None, **kwargs: Any) -> list[Any]:
    """Instantiate every entry of a group like `callbacks` or `logger` that has a _target_."""
    if not cfg:
        return []
    return [
        instantiate(c, **kwargs)
        for c in cfg.values()
        if isinstance(c, DictConfig) and "_target_" in c
    ]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file beside it, then renames it into place.

    A kill during the write leaves the previous checkpoint of that name intact (the rename is
    atomic on one file system; Lightning's own writer stages the file in /tmp, which may be
    another file system, and then copies it). A full disk is one clear error, with the
    previous checkpoint intact and no temporary file left behind.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as e:
            with contextlib.suppress(OSError):
                tmp.unlink()
            full = e.errno in (errno.ENOSPC, errno.EDQUOT)
            why = "the disk is full" if full else (e.strerror or str(e))
            raise CheckpointError(
                f"cannot write checkpoint {path}: {why}; the previous checkpoint is intact. "
                f"{'Free space on the disk of ' + str(path.parent) if full else 'Fix this'}, "
                "then resume with ckpt_path=last in the same hydra.run.dir"
            ) from None
        with contextlib.suppress(OSError):  # the rename itself durable too
            fd = os.open(path.parent, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """torch.load with one clear error for a missing, truncated or corrupt file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist: check ckpt_path")
    try:
        ckpt = safe_load(path)
    except CheckpointError:
        raise
    except Exception as e:
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated ({type(e).__name__}): delete it and "
            "resume from another one (ckpt_path=PATH), or start afresh (ckpt_path=null)"
        ) from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{path} is not a Lightning checkpoint (no state_dict)")
    return ckpt


def safe_load(path: str | Path, what: str = "checkpoint") -> Any:
    """torch.load that cannot run code: tensors and plain Python values only.

    A pickle that names any other global (a crafted file that would call `os.system` when
    unpickled, say) is refused with a CheckpointError before that global is touched.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # a global outside torch's allow-list; any other refusal is a corrupt file
        found = re.search(r"GLOBAL (\S+)|[Uu]nsupported global:? (?:GLOBAL )?([\w.]+)", str(e))
        if not found:
            raise
        name = next((g for g in found.groups() if g), "")
        raise CheckpointError(
            f"{what} {path} holds a Python object that would run code when loaded"
            f"{f' ({name})' if name else ''}: refused. scatterlab reads only tensors and plain "
            "values; use a checkpoint written by scatterlab's train.py, from a source you trust"
        ) from None


# What a config stored inside a checkpoint may build: a crafted `scatterlab_config` whose
# `_target_` is `os.system` would otherwise run code through Hydra's instantiate.
SAFE_TARGETS = ("scatterlab.", "torch.optim.", "torch.nn.")
BUILT_FROM_CHECKPOINT = ("model", "module", "data")  # what eval.py and rainbow rebuild


def stored_config(ckpt: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """The run config a train.py checkpoint stores, refused if the parts that are rebuilt from
    it (model, module, data) would build anything but scatterlab's own classes and torch's
    layers and optimizers."""
    cfg = ckpt.get("scatterlab_config")
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path} was not written by scatterlab's train.py (no config)")

    def walk(node: Any, key: str) -> None:
        if isinstance(node, dict):
            target = node.get("_target_")
            if target is not None and not str(target).startswith(SAFE_TARGETS):
                raise CheckpointError(
                    f"checkpoint {path} stores a config that would build {target!r} ({key}."
                    f"_target_): refused, only {', '.join(t + '*' for t in SAFE_TARGETS)} are "
                    "built from a checkpoint; use a checkpoint written by scatterlab's train.py"
                )
            for k, v in node.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{key}[{i}]")

    for group in BUILT_FROM_CHECKPOINT:
        walk(cfg.get(group), group)
    return cfg


def resolve_ckpt_path(ckpt_path: str | None, output_dir: str | Path) -> str | None:
    """`last`: this run dir's checkpoints/last.ckpt (must exist); `auto`: it if present."""
    last = Path(output_dir) / "checkpoints" / "last.ckpt"
    if ckpt_path in (None, "", "null"):
        return None
    if ckpt_path == "auto":
        ckpt_path = str(last) if last.exists() else None
    elif ckpt_path == "last":
        if not last.exists():
            raise CheckpointError(
                f"ckpt_path=last but {last} does not exist: resume in the run directory of the "
                "interrupted run with hydra.run.dir=THAT_DIR, or give ckpt_path=PATH"
            )
        ckpt_path = str(last)
    if ckpt_path is not None:
        try:
            load_checkpoint(ckpt_path)  # fail early and clearly, before any training starts
        except CheckpointError as e:
            if ckpt_path != str(last) or not last.exists():
                raise  # a path the user chose: no silent substitute
            from scatterlab.cluster import fallback_checkpoint

            previous = fallback_checkpoint(last, load_checkpoint)
            if previous is None:
                raise CheckpointError(f"{e}; no other good checkpoint in {last.parent}") from None
            log.warning(f"{e}. Resuming from the previous good checkpoint {previous} instead.")
            ckpt_path = previous
    return ckpt_path


def wandb_run_id(output_dir: str | Path) -> str:
    """The wandb run id of this run dir, created once, so a resumed run logs to the same run."""
    path = Path(output_dir) / ".wandb_id"
    if path.exists():
        return path.read_text().strip()
    run_id = uuid.uuid4().hex[:12]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(run_id)
    return run_id


def to_float_dict(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        v = v.item() if isinstance(v, torch.Tensor) and v.numel() == 1 else v
        if isinstance(v, int | float) and not isinstance(v, bool):
            out[k] = float(v) if not isinstance(v, int) else v
    return {k: v for k, v in sorted(out.items()) if not (isinstance(v, float) and math.isnan(v))}


def write_metrics(
    metrics: dict[str, Any],
    output_dir: str | Path,
    env: dict[str, Any] | None = None,
    status: str = "ok",
    **extra: Any,
) -> Path:
    """Write a run's metrics.json: the flat numeric metrics, plus `status` ("ok", "diverged"),
    `env` (the hardware and software, scatterlab.env.environment()) and any `extra` entries."""
    path = Path(output_dir) / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {**to_float_dict(metrics), "status": status, **extra}
    if env is not None:
        out["env"] = env
    path.write_text(json.dumps(out, indent=2) + "\n")
    return path
