"""Console entry points (`train.py`, `eval.py`, `scatterlab-train`, `scatterlab-eval`).

The options are composed and checked here, before torch and Lightning are imported (seconds),
so that a mistake is reported in about a second, and before Hydra creates a run directory, so
that a refused run leaves none behind.
"""

from __future__ import annotations

import os

from scatterlab import ROOT
from scatterlab.console import user_errors
from scatterlab.overrides import check_overrides

CONFIG_DIR = str(ROOT / "configs")


def train() -> None:
    """`python train.py experiment=NAME [key=value ...]` (Hydra; `--help` lists the options)."""
    with user_errors():
        check_overrides(CONFIG_DIR, "train")
    os.environ.setdefault("WANDB_SILENT", "true")  # its banner and footer: see console.py
    from scatterlab.train import _main

    _main()


def evaluate() -> None:
    """`python eval.py ckpt_path=PATH [data=... data.root=...]`."""
    with user_errors():
        check_overrides(CONFIG_DIR, "eval")
    from scatterlab.eval import _main

    _main()
