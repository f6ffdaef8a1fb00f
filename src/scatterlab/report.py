"""The study report: `scatterlab-report DIR... [--study NAME] [--out results/NAME]`.

Reads every job of one or more multirun (or run) directories of train.py, groups the jobs by the
swept keys, gives mean, std and n over seeds with the study's published values beside them, and
writes report.md, report.json and report.png into the (first) sweep directory. The format of a
study is in docs/studies.md.

A half-finished sweep is reported too: jobs without metrics.json, diverged jobs and jobs of the
sweep that never started are listed with their log path and the command that reruns them.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import re
import shlex
import statistics
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from scatterlab.env import describe
from scatterlab.errors import ConfigError

OK = "ok"
MISSING = "missing"  # a job of the sweep without a run dir: never started
FAILED = "failed"  # a run dir without metrics.json: crashed, killed or still running
# The plain table (no study) keeps only these metrics when a job has more than PLAIN_MAX.
PLAIN_MAX = 10
PLAIN_KEEP = ("test/*", "val/*_best", "num_params", "wall_time_s")
HEATMAP = "heatmap"  # plot.kind of a colour grid; without `kind`: lines (numeric x) or bars


@dataclass
class Job:
    """One job of a sweep (or one run): where it is, what it was given, what it wrote."""

    dir: Path | None  # the run dir; None when it never started and the dir is unknown
    overrides: list[str]  # its task overrides, as on the command line
    status: str = OK  # ok | failed | missing | what metrics.json says (diverged)
    metrics: dict[str, float] = field(default_factory=dict)  # numeric final metrics
    env: dict[str, Any] | None = None
    study: dict[str, Any] | None = None  # the `study` node of its .hydra/config.yaml
    config: dict[str, Any] | None = None
    message: str = ""
    logs: list[Path] = field(default_factory=list)
    num: int | None = None  # hydra.job.num in its sweep

    @property
    def values(self) -> dict[str, str]:
        """Override key -> value string (the last one wins, as in Hydra)."""
        out = {}
        for o in self.overrides:
            key, _, value = o.partition("=")
            out[key.lstrip("+~")] = value
        return out

    def value(self, key: str) -> str | None:
        """The job's value of `key`: its override, else its composed config's value."""
        if key in self.values:
            return self.values[key]
        node: Any = self.config
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return json.dumps(node) if isinstance(node, list | dict) else str(node)

    def rerun(self) -> str:
        """The command that runs this job again, into its own run dir (from the repo root)."""
        args = ["python", "train.py", *self.overrides]
        if self.dir is not None:
            args.append(f"hydra.run.dir={self.dir}")
        return shlex.join(args)


def parse_value(text: str | None) -> Any:
    """An override value as YAML reads it (`1` -> 1, `0.5` -> 0.5), else the string."""
    if text is None:
        return None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def _numeric(metrics: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


def _last_error_line(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        if "error" in line.lower() or "Traceback" in line:
            return line.strip()[:300]
    return ""


def read_job(run_dir: Path, sweep_dir: Path | None = None, num: int | None = None) -> Job:
    """The job in `run_dir` (a train.py run directory)."""
    hydra_dir = run_dir / ".hydra"
    overrides = _read_yaml(hydra_dir / "overrides.yaml") or []
    config = _read_yaml(hydra_dir / "config.yaml") or {}
    hydra_cfg = (_read_yaml(hydra_dir / "hydra.yaml") or {}).get("hydra", {})
    if num is None:
        num = (hydra_cfg.get("job") or {}).get("num")
    name = (hydra_cfg.get("job") or {}).get("name") or "train"
    job = Job(dir=run_dir, overrides=[str(o) for o in overrides], num=num, config=config)
    job.study = config.get("study") if isinstance(config, dict) else None
    job.logs = [run_dir / f"{name}.log"] + _submitit_logs(sweep_dir, num)
    path = run_dir / "metrics.json"
    if not path.exists():
        job.status = FAILED
        found = next((m for m in map(_last_error_line, job.logs) if m), "")
        # a crash, a kill, or a job still running: the log tells which
        job.message = f"no metrics.json{': ' + found if found else ' (failed, or still running)'}"
        return job
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        job.status, job.message = FAILED, f"unreadable metrics.json ({e})"
        return job
    job.metrics = _numeric(raw)
    job.env = raw.get("env") if isinstance(raw.get("env"), dict) else None
    job.status = str(raw.get("status") or OK)
    if job.status != OK:
        step = raw.get("diverged_step")
        parts = [f"at step {step:g}"] if isinstance(step, int | float) else []
        if raw.get("last_good_checkpoint"):
            parts.append(f"last good checkpoint {raw['last_good_checkpoint']}")
        job.message = "; ".join(parts)
    return job


def _submitit_logs(sweep_dir: Path | None, num: int | None) -> list[Path]:
    """The stderr of job `num` of a SLURM job array (submitit: .submitit/<array>_<num>/)."""
    if sweep_dir is None or num is None:
        return []
    return sorted((sweep_dir / ".submitit").glob(f"*_{num}/*_{num}_*_log.err"))


def expected_overrides(multirun_yaml: Path) -> list[list[str]] | None:
    """The task overrides of every job of the sweep, in job order (Hydra's basic sweeper).

    None when the sweep used another sweeper (Optuna: its jobs are only known once run).
    """
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    hydra_cfg = (_read_yaml(multirun_yaml) or {}).get("hydra") or {}
    sweeper = hydra_cfg.get("sweeper") or {}
    if not str(sweeper.get("_target_", "")).endswith("BasicSweeper"):
        return None
    params = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]
    task = list((hydra_cfg.get("overrides") or {}).get("task") or [])
    parsed = OverridesParser.create().parse_overrides(params + task)
    return BasicSweeper.split_arguments(parsed, None)[0]


def collect(dirs: list[Path]) -> tuple[list[Job], list[str]]:
    """Every job under `dirs` and the keys that vary between jobs (the swept keys)."""
    jobs: list[Job] = []
    swept: dict[str, None] = {}
    for d in dirs:
        if not d.is_dir():
            raise ConfigError(f"{d}: no such directory; give run or multirun dirs of train.py")
        sweeps = sorted(p.parent for p in d.rglob("multirun.yaml"))
        runs = sorted(p.parent.parent for p in d.rglob(".hydra/overrides.yaml"))
        if (d / ".hydra").is_dir() and d not in runs:
            runs.append(d)
        if not runs and not sweeps:
            raise ConfigError(
                f"{d}: no runs here (no .hydra/ or multirun.yaml below it); give the run or "
                "multirun directory that train.py printed"
            )
        seen: set[Path] = set()
        for sweep in sweeps:
            own = [r for r in runs if r.parent == sweep]
            found = {r: read_job(r, sweep) for r in own}
            seen.update(own)
            expected = expected_overrides(sweep / "multirun.yaml")
            if expected is None:
                jobs.extend(found.values())
                continue
            for key, n in _counts(expected).items():
                if n > 1:
                    swept[key] = None
            by_dir = {j.dir: j for j in found.values()}
            for num, ov in enumerate(expected):
                job = by_dir.pop(sweep / str(num), None)
                if job is None:
                    job = next((j for j in by_dir.values() if set(j.overrides) == set(ov)), None)
                    if job is not None:
                        by_dir.pop(job.dir)
                if job is None:  # never started: what the sweep would have run, where
                    job = Job(dir=sweep / str(num), overrides=list(ov), status=MISSING, num=num)
                    job.logs = _submitit_logs(sweep, num)
                    job.message = "(not started, or its run dir was deleted)"
                jobs.append(job)
            jobs.extend(by_dir.values())  # jobs the sweep's config no longer names
        jobs.extend(read_job(r) for r in runs if r not in seen)
    if not jobs:
        raise ConfigError(f"no runs in {' '.join(map(str, dirs))}")
    # keys that differ between the jobs found (several sweeps, or runs without multirun.yaml)
    keys = {k: None for j in jobs for k in j.values}
    for key in keys:
        if len({j.values.get(key) for j in jobs}) > 1:
            swept[key] = None
    return jobs, list(swept)


def _counts(expected: list[list[str]]) -> dict[str, int]:
    values: dict[str, set[str]] = {}
    for ov in expected:
        for o in ov:
            key, _, value = o.partition("=")
            values.setdefault(key.lstrip("+~"), set()).add(value)
    return {k: len(v) for k, v in values.items()}


def load_study(name: str, root: Path | None = None) -> dict[str, Any]:
    """The `study` node of configs/study/NAME.yaml."""
    from scatterlab import ROOT

    path = (root or ROOT) / "configs" / "study" / f"{name}.yaml"
    if not path.exists():
        names = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ConfigError(f"no study {name!r} ({path}); studies: {', '.join(names) or 'none'}")
    study = (_read_yaml(path) or {}).get("study")
    if not isinstance(study, dict):
        raise ConfigError(f"{path} has no `study:` node (see docs/studies.md)")
    return study


# --- tables ------------------------------------------------------------------------------------


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else None)


def _natural(key: str) -> list[Any]:
    """Sort key comparing the digit runs of a string as numbers."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", key)]


def _metric_columns(study: dict[str, Any], jobs: list[Job]) -> list[dict[str, Any]]:
    """The study's metric specs with globs expanded against the jobs' metric keys."""
    keys = list(dict.fromkeys(k for j in jobs for k in j.metrics))
    out = []
    for spec in study.get("metrics") or []:
        spec = {"key": spec} if isinstance(spec, str) else dict(spec)
        pattern = str(spec["key"])
        if "*" in pattern:  # numbers in order: N=2, N=4, ..., N=128 (not N=128, N=16, ...)
            matches = sorted((k for k in keys if fnmatch.fnmatchcase(k, pattern)), key=_natural)
        else:
            matches = [pattern]
        prefix, _, suffix = pattern.partition("*")
        for key in matches:
            name = key[len(prefix) : len(key) - len(suffix)] if "*" in pattern else key
            label = str(spec.get("label") or key).replace("{name}", name)
            out.append({**spec, "key": key, "label": label, "name": name})
    return out


def _shown(value: float, spec: dict[str, Any], std: bool = False) -> float:
    """offset + scale * value (a std: |scale| * std)."""
    scale = float(spec.get("scale", 1))
    return abs(scale) * value if std else float(spec.get("offset", 0)) + scale * value


def _fmt(value: float | None, spec: dict[str, Any], std: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    value = _shown(value, spec, std)
    fmt = str(spec.get("format", ".4g"))
    if "." not in fmt and float(value).is_integer():
        value = int(value)  # a count (num_params) with format ","
    return format(value, fmt)


def _sort_key(values: list[Any]) -> Any:
    return tuple((0, v, "") if isinstance(v, int | float) else (1, 0, str(v)) for v in values)


def aggregate(jobs: list[Job], swept: list[str], study: dict[str, Any]) -> dict[str, Any]:
    """Rows grouped by study.rows with mean/std/n over the seeds, published values, fits."""
    seed = study.get("seed", "seed")
    rows_keys = list(study.get("rows") or [k for k in swept if k != seed])
    columns = _metric_columns(study, [j for j in jobs if j.status == OK])
    groups: dict[tuple[str | None, ...], list[Job]] = {}
    for job in jobs:
        groups.setdefault(tuple(job.value(k) for k in rows_keys), []).append(job)
    published = study.get("published") or {}
    entries = published.get("values") or []
    rows = []
    for key, members in groups.items():
        parsed = [parse_value(v) for v in key]
        ok = [j for j in members if j.status == OK]
        row: dict[str, Any] = {
            "values": dict(zip(rows_keys, parsed, strict=True)),
            "n": len(ok),
            "jobs": len(members),
            "metrics": {},
        }
        for col in columns:
            vals = [j.metrics[col["key"]] for j in ok if col["key"] in j.metrics]
            vals = [v for v in vals if math.isfinite(v)]
            mean, std = _mean_std(vals)
            row["metrics"][col["key"]] = {"mean": mean, "std": std, "n": len(vals), "values": vals}
        match = next(
            (
                e
                for e in entries
                if all(
                    k in row["values"] and parse_value(str(v)) == row["values"][k]
                    for k, v in (e.get("match") or {}).items()
                )
            ),
            None,
        )
        row["published"] = {k: v for k, v in (match or {}).items() if k != "match"}
        rows.append(row)
    rows.sort(key=lambda r: _sort_key(list(r["values"].values())))
    others = [k for k in swept if k not in rows_keys and k != seed]
    # a key set differently across jobs but constant within every row is not averaged over:
    # it is that row's setting (e.g. model.width=0.125 for some experiments only)
    varies = [k for k in others if any(len({j.value(k) for j in m}) > 1 for m in groups.values())]
    return {
        "rows_keys": rows_keys,
        "seed": seed,
        "averaged_over": [k for k in swept if k == seed] + varies,
        "row_settings": [k for k in others if k not in varies],
        "columns": columns,
        "rows": rows,
        "published_label": published.get("label", "published"),
        "fits": _fits(study, rows, columns, rows_keys),
    }


def power_law(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """(alpha, c) of the least-squares fit log y = alpha log x + log c (positive xs, ys)."""
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    var = sum((a - mx) ** 2 for a in lx)
    alpha = sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True)) / var
    return alpha, math.exp(my - alpha * mx)


def _series(rows: list[dict], rows_keys: list[str], x: str) -> list[tuple[str, list[dict]]]:
    """The rows split by their values of the row keys other than x: (label suffix, rows)."""
    others = [k for k in rows_keys if k != x]
    groups: dict[str, list[dict]] = {}
    for r in rows:
        suffix = ", ".join(f"{k}={_show(r['values'].get(k))}" for k in others)
        groups.setdefault(suffix, []).append(r)
    return list(groups.items())


def _fits(
    study: dict[str, Any], rows: list[dict], columns: list[dict], rows_keys: list[str]
) -> list[dict[str, Any]]:
    """Power-law fits of each matching metric against x, one per value of the other row keys."""
    out = []
    for spec in study.get("fits") or []:
        pattern, x = str(spec["key"]), spec["x"]
        published = spec.get("published") or {}
        for col in columns:
            if not fnmatch.fnmatchcase(col["key"], pattern):
                continue
            for suffix, series in _series(rows, rows_keys, x):
                pts = [
                    (r["values"].get(x), r["metrics"][col["key"]]["mean"])
                    for r in series
                    if isinstance(r["values"].get(x), int | float)
                ]
                pts = [(a, b) for a, b in pts if b is not None and a > 0 and b > 0]
                if len({a for a, _ in pts}) < 2:
                    continue
                alpha, c = power_law([a for a, _ in pts], [b for _, b in pts])
                out.append(
                    {
                        "key": col["key"],
                        "label": col["label"] + (f" ({suffix})" if suffix else ""),
                        "group": suffix,
                        "x": x,
                        "alpha": alpha,
                        "c": c,
                        "published": published.get(col["key"], published.get(col["name"])),
                    }
                )
    return out


# --- output ------------------------------------------------------------------------------------


def hardware(jobs: list[Job]) -> list[str]:
    """Every distinct hardware line of the jobs (from metrics.json's env)."""
    return list(dict.fromkeys(describe(j.env) for j in jobs if j.env))


def _table(head: list[str], body: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *("| " + " | ".join(row) + " |" for row in body),
    ]


def render_study(agg: dict[str, Any], study: dict[str, Any], jobs: list[Job]) -> list[str]:
    lines: list[str] = []
    groups = study.get("tables") or [{"metrics": ["*"]}]
    for g in groups:  # study.tables: the columns split into several tables, same rows
        if not isinstance(g, dict) or not g.get("metrics"):
            raise ConfigError(
                f"study.tables entry {g!r} needs metrics: [keys or globs] (see docs/studies.md)"
            )
        cols = [
            c for c in agg["columns"] if any(fnmatch.fnmatchcase(c["key"], p) for p in g["metrics"])
        ]
        if g.get("title"):
            lines += [f"{g['title']}:", ""]
        lines += _study_table(agg, cols) + [""]
    lines.pop()
    if agg["averaged_over"]:
        lines += [
            "",
            f"Mean ± sample std over {', '.join(agg['averaged_over'])}; n: finished jobs.",
        ]
    return lines + _render_fits(agg)


def _study_table(agg: dict[str, Any], cols: list[dict[str, Any]]) -> list[str]:
    """One table: a line per row of the study, the given metric columns (and published)."""
    has_pub = {c["key"] for r in agg["rows"] for c in cols if c["key"] in r["published"]}
    head = list(agg["rows_keys"])
    for c in cols:
        head.append(c["label"])
        if c["key"] in has_pub:
            head.append(f"{c['label']}, {agg['published_label']}")
    head.append("n")
    body = []
    for r in agg["rows"]:
        line = [_show(r["values"][k]) for k in agg["rows_keys"]]
        for c in cols:
            m = r["metrics"][c["key"]]
            cell = _fmt(m["mean"], c)
            if m["std"] is not None and c.get("std", True):
                cell += f" ± {_fmt(m['std'], c, std=True)}"
            line.append(cell)
            if c["key"] in has_pub:
                pub = r["published"].get(c["key"])
                line.append("n/a" if pub is None else f"{pub:g}")
        line.append(f"{r['n']}" if r["n"] == r["jobs"] else f"{r['n']} of {r['jobs']}")
        body.append(line)
    return _table(head, body)


def _render_fits(agg: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    if agg["fits"]:
        lines += ["", "Power-law fits, metric ~ x^alpha over the rows:", ""]
        fit_rows = [
            [
                f["label"],
                f["x"],
                f"{f['alpha']:.2f}",
                "n/a" if f["published"] is None else str(f["published"]),
            ]
            for f in agg["fits"]
        ]
        lines += _table(["metric", "x", "alpha", "published alpha"], fit_rows)
    return lines


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return "n/a" if value is None else str(value)


def plain_columns(jobs: list[Job]) -> list[str]:
    keys = list(dict.fromkeys(k for j in jobs if j.status == OK for k in sorted(j.metrics)))
    if len(keys) > PLAIN_MAX:
        keys = [k for k in keys if any(fnmatch.fnmatchcase(k, p) for p in PLAIN_KEEP)]
    return keys


def render_plain(jobs: list[Job], swept: list[str]) -> list[str]:
    keys = plain_columns(jobs)
    body = []
    for j in jobs:
        shown = [o for o in j.overrides if o.partition("=")[0].lstrip("+~") in swept] or j.overrides
        body.append(
            [
                "" if j.num is None else str(j.num),
                f"`{' '.join(shown)}`" if shown else "(defaults)",
                j.status,
                *(f"{j.metrics[k]:.4g}" if k in j.metrics else "n/a" for k in keys),
            ]
        )
    return _table(["job", "overrides", "status", *keys], body)


def render_incomplete(jobs: list[Job]) -> list[str]:
    bad = [j for j in jobs if j.status != OK]
    if not bad:
        return []
    lines = [
        "",
        f"**{len(bad)} of {len(jobs)} jobs did not finish** (rerun each from the repository root):",
        "",
    ]
    for j in bad:
        logs = [str(p) for p in j.logs if p.exists()] or ["(no log)"]
        lines.append(
            f"- job {j.num if j.num is not None else '?'} ({j.status}"
            f"{' ' + j.message if j.status != FAILED and j.message else ''}"
            f"{': ' + j.message if j.status == FAILED and j.message else ''}); "
            f"log: {', '.join(logs)}; rerun: `{j.rerun()}`"
        )
    return lines


def _row_settings(agg: dict[str, Any], jobs: list[Job]) -> list[str]:
    """One line per override that some rows were given and others not (constant per row)."""
    out = []
    for key in agg["row_settings"]:
        given: dict[str, list[str]] = {}
        for j in jobs:
            o = next((o for o in j.overrides if o.partition("=")[0].lstrip("+~") == key), None)
            if o is not None:
                row = ", ".join(_show(parse_value(j.value(k))) for k in agg["rows_keys"])
                given.setdefault(o, []).append(row)
        for o, rows in given.items():
            out.append(f"Only some rows: `{o}` ({', '.join(dict.fromkeys(rows))}).")
    return out


def common_overrides(jobs: list[Job], swept: list[str]) -> list[str]:
    """The overrides every job was given, except the swept keys and the study itself."""
    if not jobs:
        return []
    first = [o for o in jobs[0].overrides if o.partition("=")[0].lstrip("+~") not in swept]
    first = [o for o in first if o.partition("=")[0].lstrip("+~") != "study"]
    return [o for o in first if all(o in j.overrides for j in jobs[1:])]


def report(
    dirs: list[Path],
    study_name: str | None = None,
    out: Path | None = None,
    note: str | None = None,
) -> dict[str, Any]:
    """Write report.{md,json,png} into the first dir (and OUT.{md,json,png}); returns the JSON."""
    jobs, swept = collect(dirs)
    study = load_study(study_name) if study_name else next((j.study for j in jobs if j.study), None)
    hw = hardware(jobs)
    lines = []
    if study:
        lines += [f"**{study.get('title') or study_name or 'Study'}**"]
        if study.get("note"):
            lines += ["", str(study["note"])]
    if note:
        lines += ["", note]
    lines += ["", f"Hardware: {'; '.join(hw) if hw else 'not recorded in metrics.json'}."]
    common = common_overrides(jobs, swept)
    if common:
        lines += [f"Every job: `{' '.join(common)}`."]
    lines += [""]
    payload: dict[str, Any] = {
        "study": study,
        "note": note,
        "hardware": hw,
        "swept": swept,
        "common_overrides": common,
    }
    if study:
        agg = aggregate(jobs, swept, study)
        check_plot(study.get("plot") or {}, agg)
        lines[-1:] = [*_row_settings(agg, jobs), ""]
        lines += render_study(agg, study, jobs)
        payload.update(rows=agg["rows"], fits=agg["fits"], columns=agg["columns"])
        if (study.get("plot") or {}).get("kind") == HEATMAP:
            grid = heatmap_grid(agg, study["plot"])
            col = _heatmap_column(study["plot"], agg["columns"])
            lines += render_heatmap(grid, col, agg["averaged_over"])
            payload["heatmap"] = {
                **grid,
                "mean": [[None if math.isnan(v) else v for v in r] for r in grid["mean"]],
            }
    else:
        agg = None
        lines += render_plain(jobs, swept)
    lines += render_incomplete(jobs)
    payload["jobs"] = [
        {
            "dir": str(j.dir) if j.dir else None,
            "num": j.num,
            "overrides": j.overrides,
            "status": j.status,
            "message": j.message,
            "logs": [str(p) for p in j.logs if p.exists()],
            "rerun": j.rerun() if j.status != OK else None,
            "metrics": j.metrics,
        }
        for j in jobs
    ]
    text = "\n".join(lines).strip("\n") + "\n"
    targets = [dirs[0] / "report"] + ([out] if out else [])
    for target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        Path(f"{target}.md").write_text(text)
        Path(f"{target}.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
        if agg is not None and agg["rows"]:
            plot(agg, study or {}, Path(f"{target}.png"))
    print(text, end="")
    written = [
        f"{t}.md, .json" + (", .png" if agg is not None and agg["rows"] else "") for t in targets
    ]
    print(f"\nReport written to {'; '.join(written)}", flush=True)
    return payload


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


def plot(agg: dict[str, Any], study: dict[str, Any], path: Path) -> None:
    """report.png: mean ± std of each plotted metric against the plot's x (a row key)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec = study.get("plot") or {}
    if spec.get("kind") == HEATMAP:
        plot_heatmap(agg, study, path)
        return
    x = spec.get("x") or (agg["rows_keys"][0] if agg["rows_keys"] else None)
    patterns = spec.get("y") or [c["key"] for c in agg["columns"][:1]]
    cols = [c for c in agg["columns"] if any(fnmatch.fnmatchcase(c["key"], p) for p in patterns)]
    if x is None or not cols:
        return
    rows = agg["rows"]
    numeric = all(isinstance(r["values"].get(x), int | float) for r in rows)
    fig, ax = plt.subplots(figsize=(6, 4))
    if numeric:  # one line per metric and per value of the other row keys
        for c in cols:
            for suffix, series in _series(rows, agg["rows_keys"], x):
                series = sorted(series, key=lambda r: r["values"][x])
                xs = [r["values"][x] for r in series]
                ys = [_shown(_nan(r["metrics"][c["key"]]["mean"]), c) for r in series]
                es = [_shown(r["metrics"][c["key"]]["std"] or 0.0, c, std=True) for r in series]
                pub = [r["published"].get(c["key"], math.nan) for r in series]
                fit = next(
                    (
                        f
                        for f in agg["fits"]
                        if f["key"] == c["key"] and f["x"] == x and f["group"] == suffix
                    ),
                    None,
                )
                label = c["label"] + (f", {suffix}" if suffix else "")
                label += f" (alpha {fit['alpha']:.2f})" if fit else ""
                bars = ax.errorbar(xs, ys, yerr=es, fmt="o-", capsize=3, label=label)
                if fit:  # the fitted power law, dotted, in the shown units
                    line = [_shown(fit["c"] * v ** fit["alpha"], c) for v in xs]
                    ax.plot(xs, line, ":", color=bars[0].get_color(), lw=0.8)
                if any(not math.isnan(p) for p in pub):
                    ax.plot(xs, pub, "x--", alpha=0.6, label=f"{label}, {agg['published_label']}")
        ticks = sorted({r["values"][x] for r in rows})
        ax.set_xscale(spec.get("xscale", "linear"))
        ax.set_xticks(ticks, [_show(v) for v in ticks])
        ax.minorticks_off()
    else:  # bars: one group per row, one bar per metric
        width = 0.8 / len(cols)
        for i, c in enumerate(cols):
            ys = [_shown(_nan(r["metrics"][c["key"]]["mean"]), c) for r in rows]
            es = [_shown(r["metrics"][c["key"]]["std"] or 0.0, c, std=True) for r in rows]
            pub = [r["published"].get(c["key"], math.nan) for r in rows]
            pos = [k + i * width for k in range(len(rows))]
            ax.bar(pos, ys, width, yerr=es, capsize=3, label=c["label"])
            if any(not math.isnan(p) for p in pub):
                ax.plot(pos, pub, "kx", label=f"{c['label']}, {agg['published_label']}")
        names = [", ".join(_show(v) for v in r["values"].values()) for r in rows]
        ax.set_xticks([k + 0.4 - width / 2 for k in range(len(rows))], names)
        plt.setp(ax.get_xticklabels(), rotation=20, ha="right", fontsize=8)
    ax.set_yscale(spec.get("yscale", "linear"))
    ax.set(xlabel=x, ylabel=spec.get("ylabel", cols[0]["label"] if len(cols) == 1 else ""))
    ax.set_title(textwrap.fill(str(study.get("title", "")), 70), fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --- heat map (plot.kind: heatmap) -------------------------------------------------------------


def _plot_error(message: str) -> ConfigError:
    return ConfigError(f"study.plot: {message} (see docs/studies.md)")


def _heatmap_column(spec: dict[str, Any], columns: list[dict[str, Any]]) -> dict[str, Any]:
    """The metric column named by plot.value (a key of study.metrics, or a glob of exactly one)."""
    value = spec.get("value")
    if not isinstance(value, str) or not value:
        raise _plot_error("kind heatmap needs `value: KEY`, one metric key of study.metrics")
    found = [c for c in columns if fnmatch.fnmatchcase(c["key"], value)]
    if len(found) != 1:
        keys = ", ".join(c["key"] for c in columns) or "none"
        what = "matches several" if found else "is not one"
        raise _plot_error(f"value {value!r} {what} of the study's metrics ({keys})")
    return found[0]


def check_plot(spec: dict[str, Any], agg: dict[str, Any]) -> None:
    """Raise one ConfigError line for a plot spec the report cannot draw (before any writing)."""
    kind = spec.get("kind")
    if kind is None:
        return
    if kind != HEATMAP:
        raise _plot_error(f"kind {kind!r} unknown: {HEATMAP}, or none for lines and bars")
    rows_keys = agg["rows_keys"]
    for axis in ("x", "y"):
        key = spec.get(axis)
        if key not in rows_keys:
            raise _plot_error(
                f"kind heatmap needs `{axis}`, a row key ({', '.join(rows_keys) or 'none'}); "
                f"got {key!r}"
            )
    if spec["x"] == spec["y"]:
        raise _plot_error(f"x and y are both {spec['x']!r}; give two different row keys")
    _heatmap_column(spec, agg["columns"])
    for key in rows_keys:
        values = {_show(r["values"].get(key)) for r in agg["rows"]}
        if key not in (spec["x"], spec["y"]) and len(values) > 1:
            raise _plot_error(
                f"a heat map is one grid over x and y, but row key {key!r} takes "
                f"{len(values)} values; drop it from study.rows or sweep it in another study"
            )
    curve = spec.get("curve")
    if curve is not None:
        if not isinstance(curve, dict) or not curve.get("_target_"):
            raise _plot_error("curve needs `_target_: dotted.path.to.function` (and its kwargs)")
        if not all(isinstance(r["values"].get(spec["x"]), int | float) for r in agg["rows"]):
            raise _plot_error(f"curve needs numeric x values; {spec['x']!r} has others")
        _curve_function(curve)


def _curve_function(curve: dict[str, Any]) -> Any:
    from hydra.utils import get_method

    try:
        return get_method(str(curve["_target_"]))
    except Exception as e:  # hydra wraps the import error: keep its first line
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise _plot_error(f"curve._target_ {curve['_target_']!r}: {first}") from None


def heatmap_grid(agg: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    """The heat map's cells: mean[i][j] = the mean over seeds of `spec.value` (raw metric units)
    at (x = xs[j], y = ys[i]); nan where no finished job has the metric.

    Returns {x, y, value, xs, ys, mean, n} (n: the values averaged per cell).
    """
    x, y = spec["x"], spec["y"]
    key = _heatmap_column(spec, agg["columns"])["key"]
    cells: dict[tuple[str, str], list[float]] = {}
    seen: dict[str, dict[str, Any]] = {"x": {}, "y": {}}
    for r in agg["rows"]:
        vx, vy = r["values"].get(x), r["values"].get(y)
        seen["x"][_show(vx)], seen["y"][_show(vy)] = vx, vy
        cells.setdefault((_show(vx), _show(vy)), []).extend(r["metrics"][key]["values"])
    xs = sorted(seen["x"].values(), key=lambda v: _sort_key([v]))
    ys = sorted(seen["y"].values(), key=lambda v: _sort_key([v]))
    mean, n = [], []
    for vy in ys:
        vals = [cells.get((_show(vx), _show(vy)), []) for vx in xs]
        mean.append([statistics.fmean(v) if v else math.nan for v in vals])
        n.append([len(v) for v in vals])
    return {"x": x, "y": y, "value": key, "xs": xs, "ys": ys, "mean": mean, "n": n}


def render_heatmap(
    grid: dict[str, Any], column: dict[str, Any], averaged: list[str] | None = None
) -> list[str]:
    """The heat map's grid as a table: one row per y, one column per x, in the shown units."""
    col = column
    head = [f"{grid['y']} \\ {grid['x']}", *(_show(v) for v in grid["xs"])]
    body = [
        [_show(vy), *(_fmt(m, col) for m in row)]
        for vy, row in zip(grid["ys"], grid["mean"], strict=True)
    ]
    over = f", mean over {', '.join(averaged)}" if averaged else ""
    return ["", f"Heat map (report.png): {col['label']}{over}.", "", *_table(head, body)]


def _edges(centres: list[float], scale: str) -> list[float]:
    """Cell edges around sorted centres: midpoints (geometric on a log axis), half a step out."""
    import numpy as np

    c = np.log(np.asarray(centres, float)) if scale == "log" else np.asarray(centres, float)
    if len(c) == 1:
        e = np.array([c[0] - 0.5, c[0] + 0.5]) if scale != "log" else c[0] + np.array([-0.3, 0.3])
    else:
        mid = (c[1:] + c[:-1]) / 2
        e = np.concatenate([[c[0] - (mid[0] - c[0])], mid, [c[-1] + (c[-1] - mid[-1])]])
    if scale == "log":
        return list(np.exp(e))
    if c[0] >= 0 and e[0] < 0:  # a non-negative quantity (a depth) keeps a non-negative axis
        e[0] = 0.0
    return list(e)


def plot_heatmap(agg: dict[str, Any], study: dict[str, Any], path: Path) -> None:
    """report.png for plot.kind heatmap: the value's mean per (x, y) cell, annotated, with the
    optional curve y = f(x, **kwargs) over it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.patheffects as pe
    import matplotlib.pyplot as plt
    import numpy as np

    spec = study["plot"]
    col = _heatmap_column(spec, agg["columns"])
    grid = heatmap_grid(agg, spec)
    xscale, yscale = spec.get("xscale", "linear"), spec.get("yscale", "linear")
    pos = {}
    for axis, scale in (("x", xscale), ("y", yscale)):
        values = grid[f"{axis}s"]
        numeric = all(isinstance(v, int | float) for v in values)
        centres = [float(v) for v in values] if numeric else list(range(len(values)))
        pos[axis] = (centres, _edges(centres, scale if numeric else "linear"), numeric)
    shown = np.array([[_shown(v, col) for v in row] for row in grid["mean"]], dtype=float)
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    mesh = ax.pcolormesh(
        pos["x"][1],
        pos["y"][1],
        np.ma.masked_invalid(shown),  # NaN cells stay blank
        cmap=spec.get("cmap", "viridis"),
        vmin=spec.get("vmin"),
        vmax=spec.get("vmax"),
    )
    fig.colorbar(mesh, ax=ax, label=col["label"])
    for i, py in enumerate(pos["y"][0]):
        for j, px in enumerate(pos["x"][0]):
            if math.isnan(shown[i, j]):
                continue
            r, g, b, _ = mesh.cmap(mesh.norm(shown[i, j]))
            dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5
            text = _fmt(grid["mean"][i][j], col)
            ax.text(px, py, text, ha="center", va="center", fontsize=8, color="w" if dark else "k")
    for axis, scale in (("x", xscale), ("y", yscale)):
        centres, edges, numeric = pos[axis]
        getattr(ax, f"set_{axis}scale")(scale if numeric else "linear")
        getattr(ax, f"set_{axis}lim")(edges[0], edges[-1])
        getattr(ax, f"set_{axis}ticks")(centres, [_show(v) for v in grid[f"{axis}s"]])
    ax.minorticks_off()
    curve = spec.get("curve")
    if curve:
        kwargs = {k: v for k, v in curve.items() if k != "_target_"}
        lo, hi = pos["x"][1][0], pos["x"][1][-1]
        xs = np.geomspace(lo, hi, 200) if xscale == "log" else np.linspace(lo, hi, 200)
        ys = np.asarray(_curve_function(curve)(xs, **kwargs), dtype=float)
        ok = np.isfinite(ys)
        label = spec.get("curve_label") or str(curve["_target_"]).rsplit(".", 1)[-1]
        ax.plot(
            xs[ok],
            ys[ok],
            "w-",
            lw=2,
            label=label,
            path_effects=[pe.Stroke(linewidth=3.5, foreground="k"), pe.Normal()],
        )
        ax.legend(fontsize=7, loc="upper right")
    ax.set(xlabel=grid["x"], ylabel=grid["y"])
    ax.set_title(textwrap.fill(str(study.get("title", "")), 70), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="scatterlab-report",
        description="Aggregate the jobs of train.py multiruns into report.{md,json,png}.",
    )
    p.add_argument("dirs", nargs="+", type=Path, help="multirun or run directories")
    p.add_argument("--study", help="layout from configs/study/STUDY.yaml (default: the stored one)")
    p.add_argument("--out", type=Path, help="also write OUT.md, OUT.json, OUT.png")
    p.add_argument("--note", help='a line under the title, e.g. "Reduced CPU run: 2 epochs"')
    args = p.parse_args(argv)
    try:
        report(args.dirs, args.study, args.out, args.note)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
