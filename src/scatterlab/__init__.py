"""scatterlab: experiments on the mathematics of deep networks."""

import os
from pathlib import Path

__version__ = "0.1.0"

# Repo root (the checkout holding configs/): configs and outputs are resolved from it.
ROOT = Path(__file__).resolve().parents[2]
os.environ.setdefault("SCATTERLAB_ROOT", str(ROOT))
