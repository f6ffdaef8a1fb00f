"""Allowed ranges of numeric options, declared once in the signatures that take them.

The convention (used by every class a config builds): a numeric parameter's annotation says its
range with `typing.Annotated`, e.g.

    def __init__(self, width: PositiveInt = 64, lr: Positive = 1e-3, p: Fraction = 0.5,
                 depths: list[PositiveInt] = (2, 8)) -> None: ...

`scatterlab.config_check` reads these annotations (also inside lists) and refuses a value
outside the range before anything is built, naming the key, the value and the range. A
parameter that really takes any finite real says so with `Real` / `Integer`; NaN and inf are
refused everywhere unless a parameter is annotated `Annotated[float, Range(finite=False)]`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated


@dataclass(frozen=True)
class Range:
    """Closed or open bounds of a number; None: unbounded on that side."""

    ge: float | None = None  # value >= ge
    gt: float | None = None  # value > gt
    le: float | None = None  # value <= le
    lt: float | None = None  # value < lt
    finite: bool = True  # refuse nan and +-inf

    def error(self, value: float) -> str | None:
        """Why `value` is outside the range (None when inside)."""
        if value != value:  # nan
            return None if not self.finite else "it must be a finite number"
        if self.finite and value in (float("inf"), float("-inf")):
            return "it must be a finite number"
        inside = (
            (self.ge is None or value >= self.ge)
            and (self.gt is None or value > self.gt)
            and (self.le is None or value <= self.le)
            and (self.lt is None or value < self.lt)
        )
        return None if inside else f"it must be {self.describe()}"

    def describe(self) -> str:
        low = f">= {_num(self.ge)}" if self.ge is not None else None
        low = f"> {_num(self.gt)}" if self.gt is not None else low
        high = f"<= {_num(self.le)}" if self.le is not None else None
        high = f"< {_num(self.lt)}" if self.lt is not None else high
        parts = [p for p in (low, high) if p]
        return " and ".join(parts) if parts else "a finite number"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


# The common ranges; a parameter with another range writes Annotated[float, Range(...)] itself.
Real = Annotated[float, Range()]
Integer = Annotated[int, Range()]
Positive = Annotated[float, Range(gt=0)]
NonNegative = Annotated[float, Range(ge=0)]
PositiveInt = Annotated[int, Range(ge=1)]
NonNegativeInt = Annotated[int, Range(ge=0)]
Fraction = Annotated[float, Range(ge=0, le=1)]  # a probability, a proportion
OpenFraction = Annotated[float, Range(gt=0, lt=1)]
Seed = Annotated[int, Range(ge=0, le=2**32 - 1)]  # numpy's seed range
# a network's width multiplier: 64 x the widths is already ~4000 x the memory of the weights
WidthMultiplier = Annotated[float, Range(gt=0, le=64)]

__all__ = [
    "Fraction",
    "Integer",
    "NonNegative",
    "NonNegativeInt",
    "OpenFraction",
    "Positive",
    "PositiveInt",
    "Range",
    "Real",
    "Seed",
    "WidthMultiplier",
]
