"""Runs train.py with a fault injected into checkpoint writes (used by tests/test_reliability.py).

    python tests/fault_inject.py FAULT N MARKER [train.py overrides ...]

FAULT is `hang` (the N-th checkpoint written to disk gets half its bytes, then the process
waits to be killed) or `enospc` (the N-th write fails with "No space left on device"). MARKER
is a file created when the fault fires.
"""

import errno
import io
import os
import sys
import time
from pathlib import Path

import torch

fault, nth, marker, *overrides = sys.argv[1:]
real_save = torch.save
count = 0


def faulty_save(obj, f, *args, **kwargs):
    global count
    on_disk = isinstance(f, str | os.PathLike) or hasattr(f, "fileno")
    if on_disk:
        count += 1
    if not on_disk or count != int(nth):
        return real_save(obj, f, *args, **kwargs)
    Path(marker).touch()
    if fault == "enospc":
        raise OSError(errno.ENOSPC, "No space left on device")
    buf = io.BytesIO()
    real_save(obj, buf, *args, **kwargs)
    data = buf.getvalue()
    if hasattr(f, "write"):
        f.write(data[: len(data) // 2])
        f.flush()
    else:
        Path(f).write_bytes(data[: len(data) // 2])
    time.sleep(600)  # killed here, in the middle of the write


torch.save = faulty_save
sys.argv = ["train.py", *overrides]
from scatterlab.cli import train  # noqa: E402

train()
