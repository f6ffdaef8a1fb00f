"""One run per run directory: a lock that the kernel drops when the run ends, however it ends."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Any

from scatterlab.errors import ConfigError

LOCK_NAME = ".lock"


def lock_run_dir(run_dir: str | Path) -> Any | None:
    """Hold `run_dir/.lock` for this process's lifetime; a second run there is refused.

    The kernel drops the lock when the process ends, however it ends (kill -9 included), so a
    requeued or resumed run takes it over. Processes that Lightning starts for the other DDP
    ranks share their rank 0's lock. Returns the open lock file (keep a reference).
    """
    ranks = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")  # DDP, and srun's tasks
    if any(os.environ.get(name, "0") not in ("", "0") for name in ranks):
        return None
    path = Path(run_dir) / LOCK_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a+")  # noqa: SIM115 - held open for the lifetime of the run
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        owner = f.read().strip()
        f.close()
        raise ConfigError(
            f"the run directory {run_dir} is in use by another run ({owner or 'another process'})"
            ": wait for it to end, or give this run another hydra.run.dir"
        ) from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {os.uname().nodename}\n")
    f.flush()
    return f


def in_use(run_dir: str | Path, by_others: bool = False) -> bool:
    """Whether a live process holds `run_dir`'s lock (by_others: another one than this)."""
    path = Path(run_dir) / LOCK_NAME
    if not path.exists():
        return False
    if by_others and path.read_text().startswith(f"pid {os.getpid()} "):
        return False
    with open(path) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False
