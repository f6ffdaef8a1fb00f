"""A config fuzzer: every option of every experiment, tried with hostile values.

For each experiment the config is composed once; then for every option that a target (or
train.yaml's TOP_LEVEL) declares, boundary and hostile values are put in its place and the
validation pass (`scatterlab.config_check.validate_config`, what runs before any work) judges
them: a one-line error naming the key, or the value is accepted. Accepted values must work: a
sample of them runs end to end and must give finite metrics with `status: ok`. And every
numeric option must have a declared range (no number is let through unchecked).
"""

from __future__ import annotations

import copy
import math
import random
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from scatterlab.config_check import leaves, validate_config
from scatterlab.errors import ConfigError
from tests.conftest import ROOT, read_metrics, run_cli

EXPERIMENTS = sorted(p.stem for p in (ROOT / "configs" / "experiment").glob("*.yaml"))
NOT_A_CHOICE = "not_a_choice"
COUNTS: dict[str, int] = {}  # printed at the end of the session (conftest.py)


def resolved(experiment: str) -> dict[str, Any]:
    GlobalHydra.instance().clear()
    overrides = [f"experiment={experiment}"]
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
        if cfg.trainer.get("accelerator") in ("gpu", "cuda"):  # a GPU recipe, fuzzed on the CPU
            cfg = compose("train", overrides=[*overrides, "trainer=cpu"], return_hydra_config=True)
    OmegaConf.set_readonly(cfg.hydra, False)
    cfg.hydra.runtime.output_dir = "/tmp/scatterlab-fuzz"  # read by ${hydra:...}
    HydraConfig.instance().set_config(cfg)
    return {
        k: OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(cfg[k]) else cfg[k]
        for k in cfg
        if k != "hydra"
    }


def _numeric(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def hostile(value: Any, spec: Any) -> list[Any]:
    """Boundary and hostile values for an option whose current value is `value`."""
    if isinstance(value, bool):
        return ["maybe", 2]
    if _numeric(value):
        huge = 2**40 if isinstance(value, int) else 1e12
        return [0, -1, 1, math.nan, math.inf, -math.inf, huge, "abc", [value]]
    if isinstance(value, list) and value and all(_numeric(v) for v in value):
        return [[], [*value[:-1], -1], [*value[:-1], 0], [*value[:-1], math.nan], ["abc"]]
    if isinstance(value, str) and isinstance(spec, dict) and "literal" in spec:
        return [NOT_A_CHOICE, 3]
    return []


def _set(d: dict[str, Any], key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    for p in parents:
        d = d[p]
    d[leaf] = value


def has_range(spec: Any) -> bool:
    """Whether `spec` bounds a number (a Range, a Literal, or a union/list made of them)."""
    if not isinstance(spec, dict):
        return spec in ("none", "bool", "str", "dict")
    if "range" in spec or "literal" in spec:
        return True
    if "union" in spec:
        return all(has_range(s) for s in spec["union"])
    if "list" in spec:
        return has_range(spec["list"])
    return False


def fuzz() -> tuple[list[tuple], list[tuple], list[str]]:
    """(rejected, accepted, unranged): each case (experiment, key, value, message)."""
    rejected, accepted, unranged, seen = [], [], [], set()
    for experiment in EXPERIMENTS:
        base = resolved(experiment)
        validate_config(base)  # the experiment itself is valid
        for key, value, spec in leaves(base):
            if "[" in key:
                continue  # a target nested in a list: its own keys are fuzzed where it is defined
            numeric = _numeric(value) or (isinstance(value, list) and any(map(_numeric, value)))
            if numeric and not has_range(spec):
                unranged.append(f"{experiment}: {key}")
            for bad in hostile(value, spec):
                # the same option of the same target behaves alike in every experiment: once
                case = (key, repr(bad), _target_of(base, key))
                if case in seen and key.split(".")[0] in ("trainer", "logger", "callbacks"):
                    continue
                seen.add(case)
                cfg = copy.deepcopy(base)
                _set(cfg, key, bad)
                try:
                    validate_config(cfg)
                except ConfigError as e:
                    rejected.append((experiment, key, bad, str(e)))
                else:
                    accepted.append((experiment, key, bad, ""))
    return rejected, accepted, unranged


def _target_of(cfg: dict[str, Any], key: str) -> str:
    node: Any = cfg
    for p in key.split(".")[:-1]:
        node = node[p]
    return str(node.get("_target_", "")) if isinstance(node, dict) else ""


@pytest.fixture(scope="module")
def fuzzed() -> tuple[list[tuple], list[tuple], list[str]]:
    rejected, accepted, unranged = fuzz()
    COUNTS.update(
        experiments=len(EXPERIMENTS),
        options=len({(e, k) for e, k, *_ in rejected + accepted}),
        tried=len(rejected) + len(accepted),
        rejected=len(rejected),
        accepted=len(accepted),
    )
    return rejected, accepted, unranged


def test_every_numeric_option_has_a_declared_range(fuzzed) -> None:
    _, _, unranged = fuzzed
    assert not unranged, "numeric options without a declared range:\n" + "\n".join(unranged)


def test_every_rejection_is_one_line_naming_the_key(fuzzed) -> None:
    rejected, _, _ = fuzzed
    assert rejected
    for experiment, key, bad, message in rejected:
        assert "\n" not in message, (experiment, key, bad, message)
        leaf = key.rsplit(".", 1)[-1]
        assert leaf in message, (experiment, key, bad, message)


def test_non_finite_and_wrongly_typed_values_are_always_rejected(fuzzed) -> None:
    _, accepted, _ = fuzzed
    for experiment, key, bad, _ in accepted:
        is_nan = isinstance(bad, float) and not math.isfinite(bad)
        in_list = isinstance(bad, list) and any(
            isinstance(v, float) and not math.isfinite(v) for v in bad
        )
        assert not (is_nan or in_list), f"{experiment}: {key}={bad} accepted"
        assert bad not in ("abc", "maybe", NOT_A_CHOICE), f"{experiment}: {key}={bad!r} accepted"


# Accepted values run end to end on the quickstart (seconds each): a fixed sample of them.
E2E = ["trainer.max_epochs=1", "logger=csv", "callbacks.progress_bar=null"]
E2E_SAMPLE = 5


def _override(key: str, value: Any) -> str:
    if isinstance(value, list):
        return f"{key}=[{','.join(map(str, value))}]"
    return f"{key}={value}"


def test_a_sample_of_accepted_values_runs_end_to_end(fuzzed, tmp_path: Path) -> None:
    _, accepted, _ = fuzzed
    cases = [
        (key, bad)
        for experiment, key, bad, _ in accepted
        if experiment == "quickstart"
        and not key.startswith(("trainer.", "logger.", "callbacks.", "hydra", "module.net."))
        and key not in ("seed", "data.seed")  # any seed works; not worth a run
        and not (isinstance(bad, int | float) and abs(bad) >= 1e12)  # huge: valid, not quick
    ]
    assert cases
    for i, (key, bad) in enumerate(random.Random(0).sample(cases, min(E2E_SAMPLE, len(cases)))):
        run_dir = tmp_path / str(i)
        proc = run_cli("train.py", *E2E, _override(key, bad), f"hydra.run.dir={run_dir}")
        metrics = read_metrics(run_dir)
        assert metrics["status"] == "ok", (key, bad)
        numbers = [v for v in metrics.values() if isinstance(v, float)]
        assert all(math.isfinite(v) for v in numbers), (key, bad, metrics)
        assert "error:" not in proc.stderr
