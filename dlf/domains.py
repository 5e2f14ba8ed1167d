"""Value domains of config fields, declared as dataclass field metadata and checked generically.

Every numeric field of a config section says which values it accepts where it is declared::

    lr: float = positive(1e-4)                 # a finite number > 0
    text_dropout: float = dropout(0.5)         # [0, 1)
    d_model: int = count(50, lo=4)             # an integer in [4, INT_MAX]
    beta: float = field(default=1.0, metadata=domain(lo=0))

:func:`check_domains` walks every field of every (nested) dataclass, so a new section or a new
model family's config is checked as soon as its fields declare domains; a field without one is
limited by its type alone (bools, literals, strings). Pure Python: studies load without torch.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from dlf.errors import DLFError

__all__ = ["Domain", "domain", "field_domain", "check_domains", "positive", "non_negative", "count",
           "dropout", "unit_open", "in_range", "seed_range", "show", "out_of_range", "INT_MAX", "SEED_MAX"]

# Sizes and counts reach torch shapes and CUDA launch grids, which hold 32-bit ints at worst.
INT_MAX = 2**31 - 1
# The smallest range of the generators a run seeds: numpy's legacy seed takes [0, 2**32); torch's
# manual_seed and Python's random take more, SeedSequence (synthetic data) refuses negatives.
SEED_MAX = 2**32 - 1


@dataclass(frozen=True)
class Domain:
    """A closed or open interval; every value in it is also finite (NaN and inf never are)."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def contains(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        return self.hi is None or (value < self.hi if self.hi_open else value <= self.hi)

    def describe(self, integer: bool = False) -> str:
        """'a finite number > 0', 'a number in [0, 1)', 'an integer in [1, 2147483647]'."""
        kind = "an integer" if integer else "a finite number"
        if self.lo is not None and self.hi is not None:
            left, right = "(" if self.lo_open else "[", ")" if self.hi_open else "]"
            return f"{'an integer' if integer else 'a number'} in {left}{_num(self.lo)}, {_num(self.hi)}{right}"
        if self.lo is not None:
            return f"{kind} {'>' if self.lo_open else '>='} {_num(self.lo)}"
        if self.hi is not None:
            return f"{kind} {'<' if self.hi_open else '<='} {_num(self.hi)}"
        return kind


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


def domain(lo: float | None = None, hi: float | None = None, lo_open: bool = False,
           hi_open: bool = False) -> dict[str, Domain]:
    """Field metadata: ``field(default=..., metadata=domain(lo=0))``."""
    return {"domain": Domain(lo, hi, lo_open, hi_open)}


def in_range(default: Any, lo: float | None = None, hi: float | None = None, lo_open: bool = False,
             hi_open: bool = False) -> Any:
    """A dataclass field with ``default`` whose values must lie in the interval lo..hi."""
    return field(default=default, metadata=domain(lo, hi, lo_open, hi_open))


def positive(default: float) -> Any:
    """A finite number > 0 (learning rate, clipping value)."""
    return in_range(default, 0, lo_open=True)


def non_negative(default: float) -> Any:
    """A finite number >= 0 (loss weights, margins, weight decay)."""
    return in_range(default, 0)


def count(default: int, lo: int = 1) -> Any:
    """An integer in [lo, INT_MAX] (widths, depths, batch sizes, epochs)."""
    return in_range(default, lo, INT_MAX)


def dropout(default: float) -> Any:
    """A probability in [0, 1): 1 would drop everything (and scale by 1 / (1 - p))."""
    return in_range(default, 0, 1, hi_open=True)


def unit_open(default: float) -> Any:
    """A number in (0, 1), e.g. a factor that must shrink without reaching zero."""
    return in_range(default, 0, 1, lo_open=True, hi_open=True)


def seed_range(default: int) -> Any:
    """A seed every random generator of a run accepts: [0, SEED_MAX]."""
    return in_range(default, 0, SEED_MAX)


def field_domain(cls: type, name: str) -> Domain | None:
    """The declared domain of field ``name`` of dataclass ``cls`` (None: limited by its type only)."""
    return {f.name: f for f in dataclasses.fields(cls)}[name].metadata.get("domain")


def check_domains(obj: Any, source: str, prefix: str = "") -> None:
    """Raise one DLFError line for the first field of ``obj`` (and its nested sections) out of its domain."""
    for f in dataclasses.fields(obj):
        value, path = getattr(obj, f.name), prefix + f.name
        if dataclasses.is_dataclass(value):
            check_domains(value, source, path + ".")
            continue
        dom = f.metadata.get("domain")
        if dom is not None and not dom.contains(value):
            raise DLFError(out_of_range(source, path, value, dom))


def out_of_range(source: str, path: str, value: Any, dom: Domain) -> str:
    integer = isinstance(value, int) and not isinstance(value, bool)
    return f"{source}: {path}={show(value)} is out of range; expected {dom.describe(integer)}"


def show(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters: an error line stays one readable line."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**limit:
        return f"<an integer of more than {limit} digits>"  # and str() refuses past 4300 digits
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
