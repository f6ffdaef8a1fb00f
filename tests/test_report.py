"""scatterlab-report on real multiruns: a 2 x 2 study of the quickstart, a half-finished copy of
it, a run without a study, and the same study as a SLURM job array (mark `slurm`)."""

from __future__ import annotations

import json
import math
import shlex
import shutil
import statistics
import subprocess
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from scatterlab.report import (
    aggregate,
    collect,
    expected_overrides,
    heatmap_grid,
    main,
    power_law,
    report,
)
from tests.conftest import ROOT, read_metrics, run_cli

# The quickstart study at a tiny size: 2 widths x 2 seeds, one epoch of small networks.
WIDTHS, SEEDS = ("0.25", "0.5"), ("1", "2")
STUDY = "study=quickstart_width"
TINY = [
    f"model.width={','.join(WIDTHS)}",
    f"seed={','.join(SEEDS)}",
    "trainer.max_epochs=1",
    "model.widths=[8,16]",
    "callbacks.progress_bar=null",
]


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`train.py -m study=quickstart_width` (4 jobs, default launcher) into a fresh sweep dir."""
    sweep_dir = tmp_path_factory.mktemp("sweep")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        run_cli("train.py", "-m", STUDY, *TINY, f"hydra.sweep.dir={sweep_dir}")
    return sweep_dir


def _job_dirs(sweep: Path) -> dict[tuple[str, str], Path]:
    """(width, seed) -> the job's run dir, from each job's own overrides."""
    out = {}
    for d in sorted(p for p in sweep.iterdir() if (p / ".hydra").is_dir()):
        ov = dict(
            o.split("=", 1) for o in yaml.safe_load((d / ".hydra" / "overrides.yaml").read_text())
        )
        out[(ov["model.width"], ov["seed"])] = d
    return out


def test_report_means_and_stds_are_those_of_the_metrics_files(sweep: Path) -> None:
    assert main([str(sweep)]) == 0  # the layout comes from the study stored in the sweep
    data = json.loads((sweep / "report.json").read_text())
    dirs = _job_dirs(sweep)
    assert set(dirs) == {(w, s) for w in WIDTHS for s in SEEDS}
    rows = {r["values"]["model.width"]: r for r in data["rows"]}
    assert sorted(rows) == [0.25, 0.5]
    for w in WIDTHS:
        accs = [read_metrics(dirs[(w, s)])["test/acc"] for s in SEEDS]
        m = rows[float(w)]["metrics"]["test/acc"]
        assert m["n"] == 2 and rows[float(w)]["n"] == 2
        assert m["mean"] == pytest.approx(statistics.fmean(accs), abs=1e-12)
        assert m["std"] == pytest.approx(statistics.stdev(accs), abs=1e-12)
        # and the table shows them, in percent with one decimal
        md = (sweep / "report.md").read_text()
        assert f"| {w} | {100 * m['mean']:.1f} ± {100 * m['std']:.1f} |" in md
    # two widths, two networks of different sizes; the seeds share it
    params = {w: rows[float(w)]["metrics"]["num_params"] for w in WIDTHS}
    assert params["0.25"]["std"] == 0 and params["0.25"]["mean"] < params["0.5"]["mean"]
    assert (sweep / "report.png").stat().st_size > 10_000
    assert "Hardware: " in md and "cores" in md  # from the jobs' env, not guessed
    assert "did not finish" not in md


def test_half_finished_sweep_lists_failed_and_missing_jobs(sweep: Path, tmp_path: Path) -> None:
    broken = tmp_path / "sweep"
    shutil.copytree(sweep, broken)
    dirs = _job_dirs(broken)
    crashed, gone = dirs[("0.5", "1")], dirs[("0.5", "2")]
    (crashed / "metrics.json").unlink()  # a job that died before writing its metrics
    shutil.rmtree(gone)  # a job that never started
    diverged = dirs[("0.25", "2")]
    m = read_metrics(diverged)
    (diverged / "metrics.json").write_text(
        json.dumps({**m, "status": "diverged", "diverged_step": 7})
    )
    data = report([broken])
    jobs = {(j["overrides"][0], j["overrides"][1]): j for j in data["jobs"]}
    assert len(jobs) == 4
    bad = {k: j for k, j in jobs.items() if j["status"] != "ok"}
    assert {k: j["status"] for k, j in bad.items()} == {
        ("model.width=0.5", "seed=1"): "failed",
        ("model.width=0.5", "seed=2"): "missing",
        ("model.width=0.25", "seed=2"): "diverged",
    }
    assert bad[("model.width=0.5", "seed=1")]["logs"] == [str(crashed / "train.log")]
    assert bad[("model.width=0.5", "seed=2")]["dir"] == str(gone)  # numbered as the sweep did
    md = (broken / "report.md").read_text()
    assert "3 of 4 jobs did not finish" in md and "diverged at step 7" in md
    for j in bad.values():
        assert f"rerun: `{j['rerun']}`" in md and j["rerun"].endswith(f"hydra.run.dir={j['dir']}")
    # the one finished job is still reported, alone
    rows = {r["values"]["model.width"]: r for r in data["rows"]}
    only = read_metrics(dirs[("0.25", "1")])["test/acc"]
    assert rows[0.25]["metrics"]["test/acc"]["mean"] == pytest.approx(only)
    assert rows[0.25]["metrics"]["test/acc"]["std"] is None and rows[0.25]["n"] == 1
    assert rows[0.5]["n"] == 0 and rows[0.5]["metrics"]["test/acc"]["mean"] is None

    # the printed command composes exactly the crashed job's config, into its own run dir
    rerun = shlex.split(bad[("model.width=0.5", "seed=1")]["rerun"])
    assert rerun[:2] == ["python", "train.py"] and rerun[-1] == f"hydra.run.dir={crashed}"
    saved = yaml.safe_load((crashed / ".hydra" / "config.yaml").read_text())
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "configs")):
        cfg = compose("train", overrides=rerun[2:-1])
    assert OmegaConf.to_container(cfg) == saved


def test_expected_jobs_follow_the_basic_sweeper(sweep: Path) -> None:
    jobs = expected_overrides(sweep / "multirun.yaml")
    # the study's sweep, replaced by the command line's values, in Hydra's job order
    assert [j[:2] for j in jobs] == [
        [f"model.width={w}", f"seed={s}"] for w in WIDTHS for s in SEEDS
    ]
    assert all(STUDY in j for j in jobs)


def test_plain_table_without_study_and_errors(sweep: Path, tmp_path: Path, capsys) -> None:
    run = _job_dirs(sweep)[("0.25", "1")]
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    data = report([copy], study_name=None)
    assert data["study"] is not None  # the run still carries its study node
    cfg = copy / ".hydra" / "config.yaml"
    cfg.write_text(cfg.read_text().replace("study:", "unused_study:", 1))
    data = report([copy])
    assert data["study"] is None and len(data["jobs"]) == 1
    md = (copy / "report.md").read_text()
    acc = read_metrics(copy)["test/acc"]
    assert f"{acc:.4g}" in md and "test/acc" in md and "| ok |" in md
    capsys.readouterr()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(empty)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and str(empty) in err[0]
    assert main([str(copy), "--study", "nope"]) == 2
    assert "studies: " in capsys.readouterr().err


def test_power_law_recovers_the_exponent() -> None:
    xs = [0.125, 0.25, 0.5, 1.0]
    assert power_law(xs, [3.0 * x**-0.6 for x in xs]) == pytest.approx((-0.6, 3.0), abs=1e-12)


def test_study_files_compose() -> None:
    """Every study picks its experiment and holds a study node with rows and metrics."""
    names = sorted(p.stem for p in (ROOT / "configs" / "study").glob("*.yaml"))
    assert "quickstart_width" in names
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "configs")):
        for name in names:
            cfg = compose("train", overrides=[f"study={name}"], return_hydra_config=True)
            assert cfg.study.metrics and cfg.hydra.sweeper.params, name


@pytest.mark.slurm
def test_study_as_a_slurm_job_array(tmp_path: Path) -> None:
    script = ROOT / "scripts" / "slurm_cluster.sh"
    proc = subprocess.run([str(script)], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        pytest.skip(f"no SLURM cluster: {(proc.stderr or proc.stdout).strip()[-200:]}")
    run_cli(
        "train.py", "-m", STUDY, "model.width=0.25", "seed=1,2", *TINY[2:],
        "hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=10",
        f"hydra.sweep.dir={tmp_path}",
    )  # fmt: skip
    script_text = next((tmp_path / ".submitit").glob("*/*_submission.sh")).read_text()
    assert "#SBATCH --array=0-1" in script_text
    data = report([tmp_path])
    assert [j["status"] for j in data["jobs"]] == ["ok", "ok"]
    # each job's SLURM stderr is found beside its train.log (what a failed job would list)
    for i, j in enumerate(data["jobs"]):
        assert any(p.endswith(f"_{i}_0_log.err") for p in j["logs"]), j["logs"]
    (row,) = data["rows"]
    accs = [read_metrics(tmp_path / str(i))["test/acc"] for i in (0, 1)]
    assert row["n"] == 2 and row["metrics"]["test/acc"]["mean"] == pytest.approx(
        statistics.fmean(accs)
    )


def _fake_job(d: Path, overrides: list[str], study: dict, metrics: dict) -> None:
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (d / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"study": study, "seed": 0}))
    (d / "metrics.json").write_text(json.dumps({**metrics, "status": "ok"}))


def test_globs_offsets_published_values_and_fits(tmp_path: Path) -> None:
    """Written jobs (no training): glob columns with {name} labels, offset/scale (an error in %
    from an accuracy), published values matched by row, and the fitted exponent exact."""
    study = {
        "title": "fake",
        "rows": ["model.width"],
        "metrics": [
            {
                "key": "test/acc",
                "label": "error (%)",
                "offset": 100,
                "scale": -100,
                "format": ".1f",
            },
            {"key": "err/*", "label": "e {name}", "format": ".4f"},
        ],
        "published": {"label": "paper", "values": [{"match": {"model.width": 1}, "test/acc": 7.7}]},
        "fits": [{"x": "model.width", "key": "err/*", "published": {"a": -0.5}}],
    }
    for i, (w, s) in enumerate([(0.5, 1), (0.5, 2), (1, 1), (1, 2), (2, 1)]):
        acc = 0.9 + 0.01 * s
        m = {"test/acc": acc, "err/a": 3 * w**-0.5, "err/b": 2 * w**-0.25 * (1 + 0.1 * s)}
        _fake_job(tmp_path / str(i), [f"model.width={w}", f"seed={s}"], study, m)
    data = report([tmp_path])
    rows = {r["values"]["model.width"]: r for r in data["rows"]}
    assert [c["label"] for c in data["columns"]] == ["error (%)", "e a", "e b"]
    assert rows[1]["published"] == {"test/acc": 7.7} and rows[0.5]["published"] == {}
    md = (tmp_path / "report.md").read_text()
    # 100 - 100 * mean(0.91, 0.92) = 8.5, its std 100 * stdev = 0.7; published beside it
    assert "| 1 | 8.5 ± 0.7 | 7.7 |" in md and "| 2 | 9.0 | n/a |" in md
    fits = {f["key"]: f for f in data["fits"]}
    assert fits["err/a"]["alpha"] == pytest.approx(-0.5, abs=1e-12)
    assert fits["err/a"]["published"] == -0.5 and fits["err/b"]["published"] is None
    assert -0.3 < fits["err/b"]["alpha"] < -0.2
    assert data["hardware"] == [] and "not recorded" in md


def test_two_row_keys_fit_and_plot_per_value_of_the_other(tmp_path: Path) -> None:
    """rows [kind, size]: one power-law fit (and one plotted line) per kind."""
    study = {
        "rows": ["model.kind", "data.size"],
        "seed": None,
        "metrics": [{"key": "err"}],
        "fits": [{"x": "data.size", "key": "err"}],
        "plot": {"x": "data.size", "y": ["err"], "xscale": "log", "yscale": "log"},
    }
    alphas = {"wsgm": 0.0, "sgm": 1.5}
    for i, (kind, size) in enumerate((k, s) for k in alphas for s in (16, 32, 64)):
        m = {"err": 0.1 * size ** alphas[kind]}
        _fake_job(tmp_path / str(i), [f"model.kind={kind}", f"data.size={size}"], study, m)
    data = report([tmp_path])
    fits = {f["group"]: f["alpha"] for f in data["fits"]}
    assert fits == pytest.approx({"model.kind=wsgm": 0.0, "model.kind=sgm": 1.5}, abs=1e-12)
    assert len(data["rows"]) == 6 and (tmp_path / "report.png").stat().st_size > 10_000


def test_tables_split_the_columns_with_the_same_rows(tmp_path: Path, capsys) -> None:
    """study.tables: one table per group of metric globs, every table with every row."""
    study = {
        "rows": ["data.size"],
        "seed": None,
        "metrics": [{"key": "steps/*/err", "label": "err {name}"}, {"key": "params"}],
        "tables": [
            {"title": "errors", "metrics": ["steps/*"]},
            {"title": "size", "metrics": ["params"]},
        ],
    }
    for i, size in enumerate((16, 32)):
        m = {"steps/N=2/err": 0.5 / size, "steps/N=4/err": 0.25 / size, "params": 10 * size}
        _fake_job(tmp_path / str(i), [f"data.size={size}"], study, m)
    report([tmp_path])
    md = (tmp_path / "report.md").read_text()
    assert "errors:\n\n| data.size | err N=2 | err N=4 | n |" in md
    assert "size:\n\n| data.size | params | n |" in md
    assert "| 32 | 0.01562 | 0.007812 | 1 |" in md and "| 32 | 320 | 1 |" in md
    study["tables"] = [{"title": "no metrics"}]
    for i in (0, 1):
        (tmp_path / str(i) / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"study": study}))
    assert main([str(tmp_path)]) == 2
    assert "study.tables entry" in capsys.readouterr().err


def test_a_setting_of_some_rows_is_named_not_averaged(tmp_path: Path) -> None:
    """Two sweep dirs, one with model.width=0.125 for its experiments: the width is listed with
    the rows it applies to, not reported as a key averaged over."""
    study = {"rows": ["experiment"], "metrics": [{"key": "acc"}]}
    _fake_job(tmp_path / "a" / "0", ["experiment=a", "model.width=0.125"], study, {"acc": 0.5})
    _fake_job(tmp_path / "b" / "0", ["experiment=b"], study, {"acc": 0.7})
    data = report([tmp_path / "a", tmp_path / "b"])
    md = (tmp_path / "a" / "report.md").read_text()
    assert "Only some rows: `model.width=0.125` (a)." in md
    assert "Mean ± sample std" not in md and [r["n"] for r in data["rows"]] == [1, 1]


HEAT_STUDY = {
    "title": "fake heat map",
    "rows": ["model.sigma_w", "model.depth"],
    "metrics": [{"key": "acc", "label": "accuracy (%)", "scale": 100, "format": ".1f"}],
    "plot": {
        "kind": "heatmap",
        "x": "model.sigma_w",
        "y": "model.depth",
        "value": "acc",
        "curve": {
            "_target_": "scatterlab.theory.trainability.trainable_depth",
            "sigma_b2": 0.05,
            "max_depth": 100,
        },
        "curve_label": "L = 6 xi_c",
    },
}


def _fake_heat_jobs(root: Path, study: dict) -> None:
    """3 sigma_w x 2 depths x 2 seeds, less one cell that never ran (2, 20) and one job (4, 10,
    seed 2) without the metric: that cell is the other seed's value alone."""
    i = 0
    for sw in (1.0, 2.0, 4.0):
        for depth in (10, 20):
            for seed in (1, 2):
                if (sw, depth) == (2.0, 20):
                    continue
                m = {"acc": 0.1 * sw + 0.01 * depth + 0.003 * seed}
                if (sw, depth, seed) == (4.0, 10, 2):
                    m = {"other": 1.0}
                ov = [f"model.sigma_w={sw}", f"model.depth={depth}", f"seed={seed}"]
                _fake_job(root / str(i), ov, study, m)
                i += 1


def test_heatmap_grid_is_the_mean_of_the_metrics_files_and_is_drawn(tmp_path: Path) -> None:
    _fake_heat_jobs(tmp_path, HEAT_STUDY)
    # the expected cells, straight from the files
    cells: dict[tuple[float, int], list[float]] = {}
    for d in tmp_path.iterdir():
        ov = dict(o.split("=") for o in yaml.safe_load((d / ".hydra/overrides.yaml").read_text()))
        m = read_metrics(d)
        if "acc" in m:
            cells.setdefault((float(ov["model.sigma_w"]), int(ov["model.depth"])), []).append(
                m["acc"]
            )
    jobs, swept = collect([tmp_path])
    grid = heatmap_grid(aggregate(jobs, swept, HEAT_STUDY), HEAT_STUDY["plot"])
    assert grid["xs"] == [1.0, 2.0, 4.0] and grid["ys"] == [10, 20]
    for i, depth in enumerate(grid["ys"]):
        for j, sw in enumerate(grid["xs"]):
            vals = cells.get((sw, depth))
            if vals is None:
                assert math.isnan(grid["mean"][i][j]) and grid["n"][i][j] == 0
            else:
                assert grid["mean"][i][j] == pytest.approx(statistics.fmean(vals), abs=1e-12)
                assert grid["n"][i][j] == len(vals)
    assert grid["n"][0][2] == 1  # (4, 10): one of its two jobs has the metric

    data = report([tmp_path])
    assert (tmp_path / "report.png").stat().st_size > 10_000
    assert data["heatmap"]["mean"][1][1] is None  # the blank cell, JSON-safe
    assert data["heatmap"]["mean"][0] == pytest.approx(grid["mean"][0], abs=1e-12)
    md = (tmp_path / "report.md").read_text()
    # the grid as a table in the shown units: 100 * mean, .1f; depth 20 row has a blank cell
    row = [_fmt_pct(v) for v in grid["mean"][1]]
    assert f"| 20 | {row[0]} | n/a | {row[2]} |" in md


def _fmt_pct(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{100 * v:.1f}"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"value": None}, "kind heatmap needs `value: KEY`"),
        ({"value": "test/acc"}, "value 'test/acc' is not one of the study's metrics (acc)"),
        ({"x": "model.width"}, "needs `x`, a row key (model.sigma_w, model.depth)"),
        ({"y": None}, "needs `y`, a row key"),
        ({"kind": "contour"}, "kind 'contour' unknown"),
        ({"curve": {"_target_": "scatterlab.theory.nope"}}, "curve._target_ 'scatterlab.theory"),
    ],
)
def test_heatmap_spec_errors_are_one_line(tmp_path: Path, capsys, change, message) -> None:
    plot = {k: v for k, v in {**HEAT_STUDY["plot"], **change}.items() if v is not None}
    _fake_heat_jobs(tmp_path, {**HEAT_STUDY, "plot": plot})
    capsys.readouterr()
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: study.plot: "), err
    assert message in err, err
    assert not (tmp_path / "report.md").exists()  # checked before anything is written
