"""Config validation: every option of the composed config checked before anything is built.

The schema is the code itself, so there is no second copy of each config to keep in sync:

- every `_target_` node is checked against the signature of its target: a misspelt key, a value
  of the wrong type, a number outside the range its annotation declares (`scatterlab.ranges`:
  `width: PositiveInt`, `p: Fraction`, `widths: list[PositiveInt]`, each list element checked
  like a scalar), a non-finite number, a string outside a `Literal[...]` choice;
- a target's cross-key constraints are declared next to it, as a class attribute
  `CONFIG_CHECKS = (("batch_size <= n_samples", "lower data.batch_size"), ...)`: expressions
  over its parameters, checked here before the class is built;
- third-party targets (Lightning's Trainer and callbacks, torch optimizers), whose signatures
  carry types but no ranges, get them from EXTERNAL, by parameter name;
- scalar top-level keys of train.yaml are checked against TOP_LEVEL.

Importing the targets to read their signatures costs seconds (Lightning alone ~4 s), so the
signatures are cached (`~/.cache/scatterlab/config_schema.json`, keyed by the source files'
modification times): a mistake is reported in about a second, before anything is imported.
"""

from __future__ import annotations

import ast
import collections.abc as cabc
import contextlib
import dataclasses
import difflib
import functools
import inspect
import json
import math
import os
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

from omegaconf import DictConfig, OmegaConf

from scatterlab.errors import ConfigError
from scatterlab.ranges import (
    Fraction,
    NonNegative,
    NonNegativeInt,
    Positive,
    PositiveInt,
    Range,
    Seed,
)

# Scalar keys of the root config and their types (groups are checked through their targets).
TOP_LEVEL: dict[str, Any] = {
    "task_name": str,
    "tags": list[str],
    "train": bool,
    "test": bool,
    "ckpt_path": str | None,
    "seed": Seed | None,
    "optimized_metric": str | None,
    "study": dict | None,
}

# Ranges of third-party targets' parameters (Trainer, callbacks, optimizers, samplers), by name.
EXTERNAL: dict[str, Any] = {
    "max_epochs": Annotated[int, Range(ge=-1)],  # -1: no limit (Lightning)
    "min_epochs": NonNegativeInt,
    "max_steps": Annotated[int, Range(ge=-1)],
    "devices": PositiveInt | Annotated[list[NonNegativeInt], Range(ge=1)] | Literal["auto"],
    "num_nodes": PositiveInt,
    "log_every_n_steps": PositiveInt,
    "check_val_every_n_epoch": PositiveInt,
    "accumulate_grad_batches": PositiveInt,
    "num_sanity_val_steps": Annotated[int, Range(ge=-1)],
    "gradient_clip_val": NonNegative,
    "limit_train_batches": Positive,
    "limit_val_batches": NonNegative,
    "limit_test_batches": Positive,
    "val_check_interval": Positive,
    "save_top_k": Annotated[int, Range(ge=-1)],
    "every_n_epochs": NonNegativeInt,
    "lr": NonNegative,
    "weight_decay": NonNegative,
    "momentum": Fraction,
    "dampening": Fraction,
    "eps": Positive,
    "betas": Annotated[list[Annotated[float, Range(ge=0, lt=1)]], Range(ge=2, le=2)],
    "step_size": PositiveInt,
    "gamma": Positive,
    "milestones": list[PositiveInt],
    "T_max": PositiveInt,
    "eta_min": NonNegative,
    "n_startup_trials": NonNegativeInt,
    "seed": Seed,
    "refresh_rate": NonNegativeInt,
    "log_refresh_rate": PositiveInt,
}
_FRAMEWORK = "scatterlab."  # targets whose own annotations declare their ranges
_SCHEMA_VERSION = 4


def validate_config(cfg: DictConfig | dict[str, Any], machine: bool = True) -> None:
    """Raise ConfigError for the first unknown key, wrong type or out-of-range value in `cfg`
    (a composed config, or the plain dict of its resolved values). machine=False leaves out
    what only this machine can refuse (a GPU trainer without a GPU)."""
    values = _plain(cfg)
    for key, tp in TOP_LEVEL.items():
        if key in values and key != "study":
            _check_value(values[key], _spec(tp), key, "")
    with _Schemas() as schemas:
        for key, value in values.items():
            if key != "study":  # what the report shows, read by scatterlab-report
                _check_node(value, key, schemas)
    check_run(values, machine)


def check_run(values: dict[str, Any], machine: bool = True) -> None:
    """Checks across groups: the model fits the data; what the trainer is asked to do, on
    this machine."""
    data = values.get("data") if isinstance(values.get("data"), dict) else {}
    module = values.get("module") if isinstance(values.get("module"), dict) else {}
    for group, node in (
        ("model", values.get("model")),
        ("module", module),
        ("module.net", module.get("net")),
    ):
        for key in ("num_classes", "in_channels"):
            if isinstance(node, dict) and key in node and key in data and node[key] != data[key]:
                raise ConfigError(
                    f"{group}.{key}={node[key]!r} but data.{key}={data[key]!r}: they must agree; "
                    f"set data.{key} (the model's follows it by default)"
                )
    trainer = values.get("trainer") or {}
    if not isinstance(trainer, dict):
        return
    steps = trainer.get("max_steps", -1)
    if values.get("train", True) and trainer.get("max_epochs") == 0 and steps in (-1, None):
        raise ConfigError(
            "trainer.max_epochs=0 trains nothing, and the test would score an untrained "
            "network: give trainer.max_epochs >= 1, or train=false ckpt_path=PATH to test a "
            "checkpoint"
        )
    accelerator = str(trainer.get("accelerator", "cpu"))
    if machine and accelerator in ("gpu", "cuda"):
        import torch

        have = torch.cuda.device_count()
        devices = trainer.get("devices", "auto")
        if have == 0:
            raise ConfigError(
                f"trainer.accelerator={accelerator} but this machine has no CUDA GPU: add "
                "trainer=cpu to run on the CPU (e.g. with model.width=0.125 for a CIFAR network)"
            )
        wanted = (
            devices
            if isinstance(devices, int)
            else len(devices)
            if isinstance(devices, list)
            else 0
        )
        if wanted > have:
            raise ConfigError(
                f"trainer.devices={devices} but this machine has {have} CUDA GPU(s): give "
                f"trainer.devices <= {have}"
            )


def _plain(cfg: DictConfig | dict[str, Any]) -> dict[str, Any]:
    """The resolved values of `cfg` without the hydra node (its sweep keys are unset here)."""
    if isinstance(cfg, dict):
        return {k: v for k, v in cfg.items() if k != "hydra"}
    return {
        key: OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
        for key, node in ((k, cfg[k]) for k in cfg if k != "hydra")
    }


def leaves(cfg: DictConfig | dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(dotted key, value, spec) of every option of `cfg` that a target or TOP_LEVEL declares.

    The spec is None where nothing declares a type (the fuzzer in tests/ reads this list).
    """
    values = {k: v for k, v in _plain(cfg).items() if k != "study"}
    out = [(k, values[k], _spec(tp)) for k, tp in TOP_LEVEL.items() if k in values]
    with _Schemas() as schemas:

        def walk(node: Any, path: str) -> None:
            if isinstance(node, dict):
                schema = schemas.get(node["_target_"], path) if "_target_" in node else None
                for key, value in node.items():
                    if key.startswith("_") and key.endswith("_"):
                        continue
                    if schema is not None and not _is_target(value):
                        out.append((f"{path}.{key}", value, schema["hints"].get(key)))
                    walk(value, f"{path}.{key}")
            elif isinstance(node, list):
                for i, value in enumerate(node):
                    walk(value, f"{path}[{i}]")

        for key, value in values.items():
            walk(value, key)
    return out


def _is_target(value: Any) -> bool:
    return isinstance(value, dict) and "_target_" in value


def _check_node(node: Any, path: str, schemas: _Schemas) -> None:
    if isinstance(node, dict):
        if "_target_" in node:
            _check_target(node, path, schemas)
        for key, value in node.items():
            _check_node(value, f"{path}.{key}", schemas)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _check_node(value, f"{path}[{i}]", schemas)


def _check_target(node: dict[str, Any], path: str, schemas: _Schemas) -> None:
    target = node["_target_"]
    schema = schemas.get(target, path)
    params = schema["params"]
    for key, value in node.items():
        if key.startswith("_") and key.endswith("_"):
            continue  # _target_, _partial_, _recursive_, _convert_, _args_
        if key not in params:
            if schema["open"]:
                continue
            close = difflib.get_close_matches(key, params, n=1)
            hint = f" (did you mean {close[0]}?)" if close else f"; valid keys: {', '.join(params)}"
            raise ConfigError(f"{path}.{key}: unknown key for {target}{hint}")
        if _is_target(value):
            continue  # an object built from its own config, checked on its own
        _check_value(value, schema["hints"].get(key), f"{path}.{key}", f" (see {target})")
    values = {**schema["defaults"], **{k: v for k, v in node.items() if not _is_target(v)}}
    for expr, advice in schema["checks"]:
        try:
            ok = eval(_compiled(expr), {"__builtins__": {}, **_SAFE}, dict(values))  # noqa: S307
        except OverflowError:
            ok = False  # e.g. 2**J with a huge J: no size can satisfy it
        except (TypeError, ValueError, ZeroDivisionError, NameError, AttributeError, LookupError):
            continue  # a value of a wrong type or shape: reported by its own check
        if not ok:
            names = {
                n.id for n in ast.walk(ast.parse(expr, mode="eval")) if isinstance(n, ast.Name)
            }
            shown = ", ".join(f"{path}.{k}={values[k]!r}" for k in node if k in names)
            raise ConfigError(f"{shown}: {advice} (needed: {expr})")


def _pow(a: Any, b: Any) -> Any:
    if isinstance(b, int | float) and abs(b) > 1024:  # 2**(2**40) would fill the memory
        raise OverflowError(f"{a} ** {b}")
    return a**b


class _SafePow(ast.NodeTransformer):
    """`a ** b` in a CONFIG_CHECKS expression evaluates through _pow."""

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        self.generic_visit(node)
        if not isinstance(node.op, ast.Pow):
            return node
        call = ast.Call(ast.Name("_pow", ast.Load()), [node.left, node.right], [])
        return ast.copy_location(call, node)


@functools.cache
def _compiled(expr: str) -> types.CodeType:
    tree = ast.fix_missing_locations(_SafePow().visit(ast.parse(expr, mode="eval")))
    return compile(tree, f"<CONFIG_CHECKS: {expr}>", "eval")


_SAFE = {"min": min, "max": max, "len": len, "abs": abs, "math": math, "int": int, "_pow": _pow}


def _check_value(value: Any, spec: Any, path: str, where: str) -> None:
    """Raise ConfigError if `value` does not fit `spec` (None: type unknown, finiteness only)."""
    if spec is None:
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{path}={value} is not a finite number: give a finite value")
        return
    ok, why = _judge(value, spec, path)
    if ok is False:
        raise ConfigError(f"{path}={value!r} must be of type {_describe(spec)}{where}")
    if why:
        raise ConfigError(why)


def _judge(value: Any, spec: Any, path: str) -> tuple[bool | None, str | None]:
    """(does the type match: True/False/None=unknown, the range error if any)."""
    if spec is None:
        if isinstance(value, float) and not math.isfinite(value):
            return True, f"{path}={value} is not a finite number: give a finite value"
        return None, None
    if isinstance(spec, str):
        return _judge_scalar(value, spec), None
    if "union" in spec:
        results = [_judge(value, s, path) for s in spec["union"]]
        if any(ok is not False and not why for ok, why in results):
            return True, None
        why = next((why for ok, why in results if ok is not False and why), None)
        if why:
            return True, why
        return (None if any(ok is None for ok, _ in results) else False), None
    if "literal" in spec:
        if value in spec["literal"]:
            return True, None
        choices = ", ".join(map(str, spec["literal"]))
        return True, f"{path}={value!r} is not one of the choices: use one of {choices}"
    if "range" in spec:
        ok, why = _judge(value, spec["of"], path)
        if ok is False or why:
            return ok, why
        rng = Range(**spec["range"])
        if isinstance(value, list | tuple):
            error = rng.error(len(value))
            if error:
                return True, f"{path} has {len(value)} elements: {error.replace('it', 'the count')}"
            return ok, None
        if isinstance(value, int | float) and not isinstance(value, bool):
            error = rng.error(value)
            if error == "it must be a finite number":
                return True, f"{path}={value} is not a finite number: give a finite value"
            if error:
                return True, f"{path}={value} is out of range: {error}"
        return ok, None
    if "list" in spec:
        if not isinstance(value, list | tuple):
            return False, None
        for i, v in enumerate(value):
            ok, why = _judge(v, spec["list"], f"{path}[{i}]")
            if ok is False:
                return True, f"{path}[{i}]={v!r} must be of type {_describe(spec['list'])}"
            if why:
                return True, why
        return True, None
    return None, None


def _judge_scalar(value: Any, kind: str) -> bool | None:
    if kind == "none":
        return value is None
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind in ("float", "number"):
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    if kind == "dict":
        return isinstance(value, dict)
    return None


def _describe(spec: Any) -> str:
    if spec is None:
        return "any"
    if isinstance(spec, str):
        return {"number": "float", "none": "None"}.get(spec, spec)
    if "union" in spec:
        return " | ".join(_describe(s) for s in spec["union"])
    if "literal" in spec:
        return "one of " + ", ".join(map(str, spec["literal"]))
    if "range" in spec:
        inner = _describe(spec["of"])
        return f"{inner} ({Range(**spec['range']).describe()})" if "list" not in inner else inner
    if "list" in spec:
        return f"list[{_describe(spec['list'])}]"
    return "any"


# ---------------------------------------------------------------------------------- schemas --


def _spec(tp: Any) -> Any:
    """A JSON-able description of an annotation: None where this checker cannot judge it."""
    if tp is Any or tp is inspect.Parameter.empty:
        return None
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:
        inner = _spec(args[0])
        rng = next((a for a in args[1:] if isinstance(a, Range)), None)
        return {"range": dataclasses.asdict(rng), "of": inner} if rng else inner
    if origin in (typing.Union, types.UnionType):
        return {"union": [_spec(a) for a in args]}
    if origin is typing.Literal:
        return {"literal": list(args)}
    if tp is type(None):
        return "none"
    for kind in (bool, int, float, str):
        if tp is kind:
            return kind.__name__
    if getattr(tp, "__name__", "") == "Tensor" and getattr(tp, "__module__", "") == "torch":
        return "number"  # e.g. optimizers' lr: float | Tensor; a config gives numbers
    container = origin or tp
    if container in (list, tuple, cabc.Sequence, cabc.Iterable, cabc.Collection):
        one = len(args) == 1 or (len(args) == 2 and args[1] is Ellipsis)
        return {"list": _spec(args[0]) if one else None}
    if container in (dict, cabc.Mapping, cabc.MutableMapping):
        return "dict"
    return None  # classes, callables, tensors, ...: not judged here


def _schema(target: str, path: str) -> tuple[dict[str, Any], list[str]]:
    """(schema of `target`, the source files it was read from)."""
    from hydra._internal.utils import _locate

    try:
        obj = _locate(target)
    except Exception as e:
        raise ConfigError(f"{path}._target_: cannot import {target!r} ({e})") from None
    params, open_kwargs = _parameters(obj)
    hints = {k: _spec(v) for k, v in _hints(obj).items()}
    if not target.startswith(_FRAMEWORK):
        hints.update({k: _spec(tp) for k, tp in EXTERNAL.items() if k in params})
    defaults = {}
    for c in inspect.getmro(obj) if inspect.isclass(obj) else (obj,):
        fn = c.__init__ if inspect.isclass(c) else c
        with contextlib.suppress(TypeError, ValueError):
            for name, p in inspect.signature(fn).parameters.items():
                # scalars only: a base class's sequence default (e.g. a data module's mean)
                # is often replaced by its subclass's __init__, which a check cannot see
                if p.default is not p.empty and isinstance(p.default, int | float | str | bool):
                    defaults.setdefault(name, p.default)
    checks = [list(c) for c in getattr(obj, "CONFIG_CHECKS", ())]
    schema = {"params": params, "open": open_kwargs, "hints": hints, "defaults": defaults}
    schema["checks"] = checks
    files = []
    for c in inspect.getmro(obj) if inspect.isclass(obj) else (obj,):
        with contextlib.suppress(TypeError, OSError):
            files.append(inspect.getsourcefile(c) or "")
    return schema, [f for f in files if f]


def _cache_file() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "scatterlab" / "config_schema.json"


def _stamp(files: list[str]) -> dict[str, int]:
    out = {}
    for f in [__file__, inspect.getsourcefile(Range) or "", *files]:
        try:
            out[f] = os.stat(f).st_mtime_ns
        except OSError:
            out[f] = -1
    return out


_ENTRIES: dict[str, Any] | None = None  # the cache file's entries, read once per process
_CHECKED: set[str] = set()  # targets whose entry this process has found current


class _Schemas:
    """The targets' schemas, read from the cache while their source files are unchanged."""

    def __enter__(self) -> _Schemas:
        global _ENTRIES
        self.path = _cache_file()
        if _ENTRIES is None:
            try:
                data = json.loads(self.path.read_text())
                _ENTRIES = data["entries"] if data.get("version") == _SCHEMA_VERSION else {}
            except (OSError, ValueError, KeyError, TypeError):
                _ENTRIES = {}
        self.entries = _ENTRIES
        self.dirty = False
        return self

    def get(self, target: str, path: str) -> dict[str, Any]:
        entry = self.entries.get(target)
        if entry is not None and target in _CHECKED:
            return entry["schema"]
        if entry is not None and _stamp(list(entry["stamp"])[2:]) == entry["stamp"]:
            _CHECKED.add(target)
            return entry["schema"]
        schema, files = _schema(target, path)
        self.entries[target] = {"stamp": _stamp(files), "schema": schema}
        _CHECKED.add(target)
        self.dirty = True
        return schema

    def __exit__(self, *exc: Any) -> None:
        if not self.dirty:
            return
        with contextlib.suppress(OSError, TypeError, ValueError):  # a cache: best effort
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                # merge with what other processes (a sweep's jobs) wrote since it was read
                data = json.loads(self.path.read_text())
                if data.get("version") == _SCHEMA_VERSION:
                    for target, entry in data["entries"].items():
                        self.entries.setdefault(target, entry)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"version": _SCHEMA_VERSION, "entries": self.entries}))
            os.replace(tmp, self.path)  # atomic: parallel jobs never read half a file


def _parameters(obj: Any) -> tuple[list[str], bool]:
    """Keyword names `obj` accepts, following **kwargs up the class hierarchy."""
    classes = inspect.getmro(obj) if inspect.isclass(obj) else (obj,)
    names: list[str] = []
    for c in classes:
        fn = c.__init__ if inspect.isclass(c) else c
        if inspect.isclass(c) and c is object:
            break
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):
            return names, True
        kinds = {p.kind for p in sig.parameters.values()}
        names += [
            n
            for n, p in sig.parameters.items()
            if n != "self"
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            and n not in names
        ]
        if inspect.Parameter.VAR_KEYWORD not in kinds:
            return names, False
        if not inspect.isclass(obj):
            return names, True
    # **kwargs reached object (or a C base): anything may be accepted
    return names, True


def _hints(obj: Any) -> dict[str, Any]:
    """Parameter annotations as types; ones that cannot be evaluated are left out."""
    out: dict[str, Any] = {}
    for c in reversed(inspect.getmro(obj)) if inspect.isclass(obj) else (obj,):
        fn = c.__init__ if inspect.isclass(c) else c
        if inspect.isclass(c) and c is object:
            continue
        glb = getattr(inspect.unwrap(fn), "__globals__", {})
        for name, ann in getattr(fn, "__annotations__", {}).items():
            if isinstance(ann, str):
                try:
                    ann = eval(ann, dict(glb))  # noqa: S307 - annotations of installed code
                except Exception:
                    continue
            out[name] = ann
    return out
