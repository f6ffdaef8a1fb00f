"""Faults that lose nothing and checkpoints that cannot run code (issue: reliability).

Each fault is injected for real: a crafted pickle, a process killed inside a checkpoint write,
a full disk (ENOSPC from the write), a truncated JPEG, two runs in one directory, a divergent
ISTA.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from scatterlab.errors import CheckpointError, ConfigError, DataError, DivergedError
from scatterlab.utils import load_checkpoint
from tests.conftest import ROOT, read_metrics, run_cli
from tests.test_faults import _one_thread  # noqa: F401 - autouse: one thread per run

# test_faults' tiny network, 3 epochs
TINY = ["model.widths=[8,16]", "trainer.max_epochs=3", "logger=csv", "callbacks.progress_bar=null"]


class _RunsCode:
    """Unpickling this calls `touch MARKER`: what a crafted checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]


@pytest.mark.parametrize("script", ["eval.py", "train.py"])
def test_crafted_pickle_checkpoint_is_refused_and_runs_nothing(script: str, tmp_path: Path):
    marker = tmp_path / "PWNED"
    ckpt = tmp_path / "crafted.ckpt"
    torch.save({"state_dict": {}, "epoch": 0, "payload": _RunsCode(marker)}, ckpt)
    args = [f"ckpt_path={ckpt}"] + (
        [f"hydra.run.dir={tmp_path / 'run'}"] if script == "train.py" else []
    )
    proc = run_cli(script, *args, *(TINY if script == "train.py" else []), check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    (line,) = _error_lines(proc)
    assert "would run code when loaded" in line and "refused" in line and str(ckpt) in line
    assert not marker.exists(), "the crafted checkpoint ran its command"
    assert not (tmp_path / "run").exists(), "a refused run left its run directory behind"


def test_crafted_config_target_in_checkpoint_is_refused(quickstart_run: Path, tmp_path: Path):
    # plain values only (passes weights_only), but its stored config would build os.system
    ckpt = load_checkpoint(quickstart_run / "checkpoints" / "last.ckpt")
    marker = tmp_path / "PWNED"
    ckpt["scatterlab_config"]["module"] = {"_target_": "os.system", "command": f"touch {marker}"}
    crafted = tmp_path / "crafted.ckpt"
    torch.save(ckpt, crafted)
    proc = run_cli("eval.py", f"ckpt_path={crafted}", check=False)
    assert proc.returncode == 2
    (line,) = _error_lines(proc)
    assert "would build 'os.system' (module._target_): refused" in line
    assert not marker.exists()


def _fault_run(fault: str, nth: int, marker: Path, run_dir: Path) -> subprocess.Popen:
    cmd = [sys.executable, str(ROOT / "tests" / "fault_inject.py"), fault, str(nth), str(marker)]
    cmd += [*TINY, f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not path.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert path.exists(), f"the fault never fired: {proc.communicate()[1][-3000:]}"


def test_kill_inside_a_checkpoint_write_keeps_the_previous_one(tmp_path: Path) -> None:
    run_dir, marker = tmp_path / "run", tmp_path / "fired"
    # epoch 0 writes its best and last checkpoints (writes 1, 2); write 3 is epoch 1's
    proc = _fault_run("hang", 3, marker, run_dir)
    try:
        _wait_for(marker, proc)
        # a second run in the same directory meanwhile: refused, the first one's dir kept
        other = run_cli("train.py", *TINY, f"hydra.run.dir={run_dir}", check=False)
        assert other.returncode == 2
        (line,) = _error_lines(other)
        assert f"the run directory {run_dir} is in use by another run (pid {proc.pid}" in line
        assert (run_dir / ".hydra").is_dir()
        proc.kill()  # SIGKILL, in the middle of the write
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    ckpts = sorted((run_dir / "checkpoints").glob("*.ckpt"))
    assert ckpts, "no checkpoint at all"
    for p in ckpts:  # every checkpoint there is whole
        assert load_checkpoint(p)["epoch"] == 0, p
    # the half-written temporary file is not taken for a checkpoint, and resuming works
    run_cli("train.py", *TINY, f"hydra.run.dir={run_dir}", "ckpt_path=last")
    assert read_metrics(run_dir)["last_epoch"] == 2


def test_disk_full_while_saving_is_one_line_and_keeps_the_previous_checkpoint(tmp_path: Path):
    run_dir, marker = tmp_path / "run", tmp_path / "fired"
    proc = _fault_run("enospc", 3, marker, run_dir)
    _, stderr = proc.communicate(timeout=600)
    assert marker.exists() and proc.returncode == 2, stderr[-3000:]
    (line,) = [ln for ln in stderr.splitlines() if ln.startswith("error:")]
    assert "the disk is full; the previous checkpoint is intact" in line
    assert "Traceback" not in stderr
    assert load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["epoch"] == 0
    assert not list((run_dir / "checkpoints").glob(".*.tmp")), "a temporary file was left"


def _image_folder(root: Path, n: int = 3) -> list[Path]:
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    files = []
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                pixels = torch.randint(0, 255, (8, 8, 3), generator=g, dtype=torch.uint8)
                path = root / split / cls / f"{i}.jpg"
                Image.fromarray(pixels.numpy()).save(path)
                files.append(path)
    return files


def test_corrupt_image_is_named_or_skipped_with_a_count(tmp_path: Path) -> None:
    from scatterlab.data import ImageFolderDataModule

    files = _image_folder(tmp_path / "folder")
    bad = files[1]
    bad.write_bytes(bad.read_bytes()[:40])  # truncated, as after an interrupted copy
    kwargs = {"root": str(tmp_path / "folder"), "image_size": 8, "num_classes": 2}
    kwargs |= {"batch_size": 2, "crop_padding": 0, "flip": False}
    with pytest.raises(DataError, match=f"image {bad} is corrupt or truncated"):
        ImageFolderDataModule(**kwargs).setup("fit")
    dm = ImageFolderDataModule(**kwargs, skip_corrupt=True)
    dm.setup("fit")
    images, labels = dm.load()["train"]
    assert images.shape[0] == labels.shape[0] == 5  # 6 train images, 1 skipped
    assert labels.tolist() == [0, 0, 1, 1, 1]  # the skipped one was class a's


def test_divergent_istc_says_which_setting_to_change() -> None:
    from scatterlab.models.sparse_scattering import ISTC, lipschitz_step

    torch.manual_seed(0)
    # the case: coherent dictionary d = 32, K = 96, lambda* = 0.05, 50 iterations
    istc = ISTC(32, 96, n_iterations=50, lambda_star=0.05, lambda_star_min=0.05)
    x = F.normalize(torch.randn(64, 32), dim=1)
    with pytest.raises(DivergedError, match=r"ISTC diverged.*set model.step=0\.1"):
        istc.encode(x)
    istc.step = lipschitz_step(istc.dictionary())  # the advised step converges
    z = istc.encode(x)
    assert torch.isfinite(z).all() and (z.abs().sum(1) <= x.pow(2).sum(1) / (2 * 0.05)).all()
    # the paper's 12 iterations at step 1 still run (they train with it)
    assert torch.isfinite(ISTC(32, 96, n_iterations=12).encode(x)).all()


def test_refused_run_leaves_no_run_directory(tmp_path: Path) -> None:
    # refused inside the run (a missing data set), after Hydra created the directory
    run_dir = tmp_path / "run"
    proc = run_cli(
        "train.py",
        "data=imagefolder",
        f"data.root={tmp_path / 'nowhere'}",
        f"hydra.run.dir={run_dir}",
        check=False,
    )
    assert proc.returncode == 2 and len(_error_lines(proc)) == 1
    assert "is not an image folder" in proc.stderr
    assert not run_dir.exists()


def test_console_of_a_run_ends_with_where_its_results_are(quickstart_run: Path) -> None:
    log = (quickstart_run / "train.log").read_text()
    assert "GPU available" in log, "Lightning's start-up lines belong in train.log"
    console = (quickstart_run / "console.txt").read_text()
    assert f"Results in {quickstart_run}/" in console
    assert f"python eval.py ckpt_path={quickstart_run}/checkpoints/last.ckpt" in console
    assert "wandb sync " in console
    for chatter in ("GPU available", "💡", "Seed set to", "wandb: "):
        assert chatter not in console, chatter
    proc = run_cli("eval.py", f"ckpt_path={quickstart_run / 'checkpoints' / 'last.ckpt'}")
    assert proc.stdout.rstrip().splitlines()[-1].startswith("Done: test/acc ")
    assert "Metrics in " in proc.stdout
    for chatter in ("GPU available", "💡", "wandb:"):
        assert chatter not in proc.stdout + proc.stderr, chatter


def test_bad_checkpoint_errors_are_checkpoint_errors(tmp_path: Path) -> None:
    path = tmp_path / "x.ckpt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(path)


STUDIES = sorted(p.stem for p in (ROOT / "configs" / "study").glob("*.yaml"))


@pytest.mark.parametrize("study", STUDIES)
def test_every_study_lists_killed_jobs_with_a_rerun_command(study: str, tmp_path: Path) -> None:
    """A sweep whose jobs were killed before they wrote anything: the report lists each one
    as missing, with a rerun command that composes as it is written."""
    import shlex

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from scatterlab.overrides import check_overrides
    from scatterlab.report import MISSING, collect

    GlobalHydra.instance().clear()
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=[f"study={study}"], return_hydra_config=True)
    GlobalHydra.instance().clear()
    OmegaConf.set_struct(cfg, False)
    cfg.hydra.overrides.task = [f"study={study}"]  # what Hydra writes for `-m study=NAME`
    (tmp_path / "multirun.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=False))
    jobs, _ = collect([tmp_path])
    assert len(jobs) >= 2 and all(j.status == MISSING for j in jobs)
    for job in jobs[:3]:
        words = shlex.split(job.rerun())
        assert words[:2] == ["python", "train.py"] and f"study={study}" in words
        assert words[-1] == f"hydra.run.dir={tmp_path / str(job.num)}"
        try:  # composes as written (a GPU study's rerun is refused only for this machine)
            check_overrides(str(ROOT / "configs"), "train", words[2:-1])
        except ConfigError as e:
            assert "has no CUDA GPU" in str(e), e
