"""Shared fixtures: run the entry points in subprocesses, compose configs in-process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Keep every test off the network, quiet, and on the CPU.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HYDRA_FULL_ERROR", "0")


def run_cli(script: str, *overrides: str, timeout: int = 1200, check: bool = True):
    """Run `python <script> overrides...` from the repo root; returns the CompletedProcess."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / script), *overrides],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{script} {' '.join(overrides)} exited {proc.returncode}\n"
            f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-4000:]}"
        )
    return proc


def read_metrics(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "metrics.json").read_text())


@pytest.fixture
def one_thread():
    """Small tensors on a shared 2-core machine: one intra-op thread is faster (restored after)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def quickstart_run(tmp_path_factory) -> Path:
    """The README's main job (experiment=quickstart), run once for the whole session."""
    run_dir = tmp_path_factory.mktemp("quickstart")
    proc = run_cli("train.py", f"hydra.run.dir={run_dir}")
    (run_dir / "console.txt").write_text(proc.stdout + proc.stderr)  # what the user read
    return run_dir


def pytest_terminal_summary(terminalreporter) -> None:
    """The config fuzzer's counts (tests/test_config_fuzz.py), when it ran."""
    fuzz = sys.modules.get("tests.test_config_fuzz")
    counts = getattr(fuzz, "COUNTS", None)
    if counts:
        terminalreporter.write_line(
            f"config fuzzer: {counts['experiments']} experiments, {counts['options']} options, "
            f"{counts['tried']} values tried: {counts['rejected']} rejected with one line, "
            f"{counts['accepted']} accepted"
        )
