"""Config validation: every `_target_` node is checked against the signature of its target.

The signatures of the classes the configs build (data modules, networks, Lightning modules,
Trainer, callbacks, loggers, optimizers) are the schema, so there is no second copy of each
config to keep in sync: a misspelt key (`model.widht`, `trainer.max_epoch` from an experiment
file or `+key=`) or a value of the wrong type (`trainer.max_epochs=ten`) fails right after
composition with a ConfigError naming the key, before any data is loaded. Scalar top-level keys
of train.yaml are checked against TOP_LEVEL.
"""

from __future__ import annotations

import collections.abc as cabc
import difflib
import inspect
import math
import types
import typing
from typing import Any

import torch
from hydra._internal.utils import _locate
from omegaconf import DictConfig, OmegaConf

from scatterlab.errors import ConfigError

# Scalar keys of the root config and their types (groups are checked through their targets).
TOP_LEVEL: dict[str, Any] = {
    "task_name": str,
    "tags": list[str],
    "train": bool,
    "test": bool,
    "ckpt_path": str | None,
    "seed": int | None,
    "optimized_metric": str | None,
    "study": dict | None,
}
_UNKNOWN = object()  # an annotation this checker cannot judge: accept the value

# Ranges of parameters that many targets share, by name: (low, high, high_inclusive); a type
# check alone lets `data.batch_size=0` or `trainer.max_epochs=-5` through to a confusing failure.
RANGES: dict[str, tuple[float | None, float | None, bool]] = {
    "batch_size": (1, None, True),
    "num_workers": (0, None, True),
    "max_epochs": (-1, None, True),  # -1: no limit (Lightning)
    "min_epochs": (0, None, True),
    "max_steps": (-1, None, True),
    "num_nodes": (1, None, True),
    "log_every_n_steps": (1, None, True),
    "check_val_every_n_epoch": (1, None, True),
    "accumulate_grad_batches": (1, None, True),
    "gradient_clip_val": (0, None, True),
    "lr": (0, None, True),
    "weight_decay": (0, None, True),
    "momentum": (0, 1, True),
    "step_size": (1, None, True),
    "gamma": (0, None, True),
    "val_fraction": (0, 1, False),
    "test_fraction": (0, 1, False),
}


def validate_config(cfg: DictConfig) -> None:
    """Raise ConfigError for the first unknown key or wrongly typed value in `cfg`."""
    # Resolved values, without the hydra node (its sweep keys are unset outside a sweep).
    values = {
        key: OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
        for key, node in ((k, cfg[k]) for k in cfg if k != "hydra")
    }
    for key, tp in TOP_LEVEL.items():
        if key in values and _matches(values[key], tp) is False:
            raise ConfigError(f"{key}={values[key]!r} must be of type {_name(tp)}")
    for key, value in values.items():
        _check_node(value, key)


def _check_node(node: Any, path: str) -> None:
    if isinstance(node, dict):
        if "_target_" in node:
            _check_target(node, path)
        for key, value in node.items():
            _check_node(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _check_node(value, f"{path}[{i}]")


def _check_target(node: dict[str, Any], path: str) -> None:
    target = node["_target_"]
    try:
        obj = _locate(target)
    except Exception as e:
        raise ConfigError(f"{path}._target_: cannot import {target!r} ({e})") from None
    params, open_kwargs = _parameters(obj)
    hints = _hints(obj)
    for key, value in node.items():
        if key.startswith("_") and key.endswith("_"):
            continue  # _target_, _partial_, _recursive_, _convert_, _args_
        if key not in params:
            if open_kwargs:
                continue
            close = difflib.get_close_matches(key, params, n=1)
            hint = f" (did you mean {close[0]}?)" if close else f"; valid keys: {', '.join(params)}"
            raise ConfigError(f"{path}.{key}: unknown key for {target}{hint}")
        tp = hints.get(key, _UNKNOWN)
        if isinstance(value, dict) and "_target_" in value:
            continue  # an object built from its own config, checked on its own
        if _matches(value, tp) is False:
            raise ConfigError(f"{path}.{key}={value!r} must be of type {_name(tp)} (see {target})")
        _check_range(f"{path}.{key}", key, value)


def _check_range(path: str, key: str, value: Any) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{path}={value} is not a finite number: give a finite value")
    if key not in RANGES:
        return
    low, high, high_inclusive = RANGES[key]
    if low is not None and value < low:
        raise ConfigError(f"{path}={value} is out of range: it must be >= {low}")
    if high is not None and (value > high or (value == high and not high_inclusive)):
        bound = f"<= {high}" if high_inclusive else f"< {high}"
        raise ConfigError(f"{path}={value} is out of range: it must be {bound}")


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


def _matches(value: Any, tp: Any) -> bool | None:
    """True/False when the annotation can be judged, None when it cannot."""
    if tp is _UNKNOWN or tp is Any or tp is inspect.Parameter.empty:
        return None
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        results = [_matches(value, a) for a in args]
        return True if True in results else (None if None in results else False)
    if origin is typing.Literal:
        return value in args
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if tp is torch.Tensor:  # e.g. optimizers' lr: Union[float, Tensor]; a config gives numbers
        return isinstance(value, int | float) and not isinstance(value, bool)
    container = origin or tp
    if container in (list, tuple, cabc.Sequence, cabc.Iterable, cabc.Collection):
        if not isinstance(value, list | tuple):
            return False
        item = args[0] if len(args) == 1 or (len(args) == 2 and args[1] is Ellipsis) else None
        if item is None:
            return None
        results = [_matches(v, item) for v in value]
        return False if False in results else None
    if container in (dict, cabc.Mapping, cabc.MutableMapping):
        return isinstance(value, dict)
    return None  # classes, callables, tensors, ...: not judged here


def _name(tp: Any) -> str:
    if typing.get_origin(tp) is None and hasattr(tp, "__name__"):
        return tp.__name__
    return str(tp).replace("typing.", "")
