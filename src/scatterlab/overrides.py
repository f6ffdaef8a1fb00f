"""Command-line overrides checked before Hydra runs, so that mistakes get one line.

Hydra reports an unknown config option (`experiment=does_not_exist`) or key (`model.widht=2`)
in several lines with exit code 1. `check_overrides` composes the config once with the same
overrides (the first value of each sweep) and turns those failures into one ConfigError line
that names the closest valid choices.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import re
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf import OmegaConf

from scatterlab.errors import ConfigError

_PLAIN_FLAGS = {"-m", "--multirun"}


def check_overrides(config_dir: str, config_name: str, argv: list[str] | None = None) -> None:
    """Raise ConfigError when the overrides of `argv` (default sys.argv[1:]) do not compose."""
    args = sys.argv[1:] if argv is None else argv
    if any(a.startswith("-") and a not in _PLAIN_FLAGS for a in args):
        return  # --cfg, --help, -cn, ...: Hydra's own modes, left to Hydra
    overrides = [a for a in args if a not in _PLAIN_FLAGS]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException as e:
        raise ConfigError(f"cannot parse the overrides: {str(e).splitlines()[0]}") from None
    # each value of each sweep is checked once, the other keys at their first value (not every
    # combination: a bad key or value is bad in every job it is part of)
    values = [v for v in (_values(o, raw) for o, raw in zip(parsed, overrides, strict=True)) if v]
    first = [v[0] for v in values]
    jobs = [first]
    for i, vs in enumerate(values):
        jobs += [[*first[:i], v, *first[i + 1 :]] for v in vs[1:]]
    multirun = len(args) > len(overrides)
    for job in jobs[:MAX_CHECKED_JOBS]:
        _check_job(config_dir, config_name, job, multirun)
    if len(args) > len(overrides):  # -m: Hydra first composes the fixed overrides alone
        _check_base(config_dir, config_name, parsed, overrides)


def _check_base(config_dir: str, config_name: str, parsed: list, overrides: list[str]) -> None:
    """A multirun's base config (its overrides without the swept ones) must compose too."""
    swept = [raw for o, raw in zip(parsed, overrides, strict=True) if o.is_sweep_override()]
    if not swept:
        return
    fixed = [raw for o, raw in zip(parsed, overrides, strict=True) if not o.is_sweep_override()]
    try:
        _compose(config_dir, config_name, fixed)
    except ConfigCompositionException as e:
        m = re.search(r"Could not override '([^']+)'", f"{e}\n{e.__cause__}")
        what = f"{m.group(1)} is not a key of" if m else "cannot compose"
        raise ConfigError(
            f"{what} this multirun's base config (the fixed overrides alone, without "
            f"{' '.join(swept)}), which Hydra composes before the sweep: set it in the swept "
            f"config files, or make it a one-value sweep ({m.group(1) if m else 'key'}=choice(...))"
        ) from None


MAX_CHECKED_JOBS = 64  # a larger sweep has its remaining values checked by each job itself


def _values(override, raw: str) -> list[str]:
    """The overrides one job would get for each value of `override` ([] if not enumerable)."""
    if not override.is_sweep_override():
        return [raw]
    key = override.get_key_element()
    try:
        return [f"{key}={v}" for v in override.sweep_string_iterator()]
    except Exception:  # interval() and other sweeper-only syntax: left to the sweeper
        return []


def _check_job(config_dir: str, config_name: str, overrides: list[str], multirun: bool) -> None:
    try:
        cfg = _compose(config_dir, config_name, overrides)
    except MissingConfigException as e:
        raise ConfigError(_missing_option(str(e), Path(config_dir))) from None
    except ConfigCompositionException as e:
        message = f"{e}\n{e.__cause__}" if e.__cause__ else str(e)
        raise ConfigError(_bad_override(message, config_dir, config_name, overrides)) from None
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    run_dir = None
    with contextlib.suppress(Exception):  # an interpolation only the job resolves: Hydra's
        run_dir = Path(str(OmegaConf.select(cfg, key)))
    if run_dir is not None:
        _check_writable(run_dir, key)
    if config_name == "train":
        _check_values(cfg)


def _check_writable(path: Path, key: str) -> None:
    """The run (or sweep) directory can be created: probed now, so Hydra does not fail later."""
    missing = []
    probe = path
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    try:
        if not probe.is_dir():
            raise NotADirectoryError(f"{probe} is not a directory")
        for p in reversed(missing):
            p.mkdir()
        if not os.access(path, os.W_OK):
            raise PermissionError("not writable")
    except OSError as e:
        raise ConfigError(
            f"{key}={path} cannot be created or written ({e.strerror or e}): choose another "
            f"directory, e.g. {key}=outputs/my_run"
        ) from None
    finally:
        for p in missing:  # created only to probe; Hydra creates it when the run starts
            with contextlib.suppress(OSError):
                p.rmdir()


def _check_values(cfg) -> None:
    """Types and ranges of the composed config, before Hydra launches any job of a sweep."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf.errors import InterpolationResolutionError

    from scatterlab.config_check import validate_config

    OmegaConf.set_readonly(cfg.hydra, False)
    cfg.hydra.runtime.output_dir = cfg.hydra.run.dir  # read by ${hydra:...} interpolations
    HydraConfig.instance().set_config(cfg)
    # a value only known inside the job (InterpolationResolutionError): its own check covers it
    with contextlib.suppress(InterpolationResolutionError):
        validate_config(cfg)


def _first_value(override, raw: str) -> str:
    if not override.is_sweep_override():
        return raw
    value = next(iter(override.sweep_string_iterator()))
    return f"{override.get_key_element()}={value}"


def _compose(config_dir: str, config_name: str, overrides: list[str]):
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
            return compose(config_name, overrides=overrides, return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()


def _missing_option(message: str, config_dir: Path) -> str:
    m = re.search(r"Could not find '([^']+)'", message)
    if not m:
        return message.splitlines()[0]
    group, _, name = m.group(1).rpartition("/")
    folder = config_dir / group
    options = sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []
    if not group or not options:
        return message.splitlines()[0]
    close = difflib.get_close_matches(name, options, n=3, cutoff=0.5)
    hint = f" (did you mean {' or '.join(close)}?)" if close else ""
    return f"unknown {group} '{name}'{hint}; the {group} options are: {', '.join(options)}"


def _bad_override(message: str, config_dir: str, config_name: str, overrides: list[str]) -> str:
    m = re.search(r"Could not override '([^']+)'", message)
    if not m or "not in struct" not in message:
        lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
        return " ".join(lines[:2])
    key = m.group(1)
    parent, _, leaf = key.rpartition(".")
    rest = [o for o in overrides if not o.lstrip("~+").startswith(f"{key}=")]
    hint = ""
    try:
        cfg = _compose(config_dir, config_name, rest)
        above, _, name = parent.rpartition(".")
        holder = OmegaConf.select(cfg, above) if above else cfg
        if name and OmegaConf.is_dict(holder) and OmegaConf.is_interpolation(holder, name):
            source = str(holder._get_node(name)._value())  # e.g. ${model}
            if source.startswith("${") and source.endswith("}"):
                return f"{parent} is {source}: set {source[2:-1]}.{leaf} instead of {key}"
        node = OmegaConf.select(cfg, parent) if parent else cfg
        keys = [str(k) for k in node] if OmegaConf.is_dict(node) else []
        close = difflib.get_close_matches(leaf, keys, n=1)
        if close:
            hint = f" (did you mean {parent + '.' if parent else ''}{close[0]}?)"
        elif keys:
            hint = f"; its keys are: {', '.join(keys)}"
    except Exception:  # the other overrides fail too: report this one alone
        pass
    where = f"a key of {parent}" if parent else "a top-level key"
    return f"{key} is not {where}{hint}; to add a new key write +{key}=..."
