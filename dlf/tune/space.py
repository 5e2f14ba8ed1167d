"""Optuna search spaces over override dot-paths: load, validate, fingerprint, sample.

A space is a mapping ``dot-path -> spec`` written in YAML, with the same dot-paths as ``--set``:

    loss.lambda_r: {low: 0.01, high: 1.0, log: true}    # float (log-uniform when log: true)
    train.batch_size: {low: 8, high: 32}                # int when the config field is an int
    model.triplet: {choices: [official, paper]}         # categorical

Every path and every bound or choice is checked with :func:`dlf.config.apply_overrides`, so a
space can never sample a value that ``run`` would reject.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from dlf.config import RunConfig, apply_overrides
from dlf.errors import DLFError
from dlf.resources import read_yaml, resource_dir

_KEYS = {"low", "high", "log", "choices"}


@dataclass(frozen=True)
class Param:
    """One searched dot-path: kind 'float' | 'int' | 'categorical'."""

    path: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "categorical":
            return {"choices": list(self.choices)}
        return {"low": self.low, "high": self.high, "log": self.log}  # int-ness follows the config field

    def contains(self, value: Any) -> bool:
        if self.kind == "categorical":
            return value in self.choices
        return self.low <= value <= self.high


@dataclass(frozen=True)
class SearchSpace:
    params: tuple[Param, ...]
    source: str  # where it came from: a file, a study's tune.space, or 'default space'

    @property
    def paths(self) -> list[str]:
        return [p.path for p in self.params]

    def canonical_json(self) -> str:
        """Order-independent text identity, stored with the Optuna study to refuse a changed space."""
        return json.dumps({p.path: p.to_dict() for p in self.params}, sort_keys=True, separators=(",", ":"))

    def suggest(self, trial: Any) -> dict[str, Any]:
        """Sample one override mapping from an ``optuna.Trial`` (param name = dot-path)."""
        out: dict[str, Any] = {}
        for p in self.params:
            if p.kind == "categorical":
                out[p.path] = trial.suggest_categorical(p.path, list(p.choices))
            elif p.kind == "int":
                out[p.path] = trial.suggest_int(p.path, p.low, p.high, log=p.log)
            else:
                out[p.path] = trial.suggest_float(p.path, p.low, p.high, log=p.log)
        return out

    def baseline(self, cfg: RunConfig) -> dict[str, Any]:
        """The config's own values for the searched paths that lie inside the space (trial 0)."""
        out = {}
        for p in self.params:
            value = _get(cfg, p.path)
            if p.contains(value):
                out[p.path] = value
        return out


def _get(cfg: RunConfig, path: str) -> Any:
    obj: Any = cfg
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def space_file(family: str, corpus: str | None = None) -> Path:
    """The shipped default space of a model family: ``spaces/<family>.yaml`` (DLF: its nine loss
    weights; a baseline: MMSA's published tuning ranges), or ``spaces/<family>_<corpus>.yaml`` where
    the family ships one for that corpus (its MOSEI preset may not admit the MOSI ranges)."""
    folder = resource_dir("spaces")
    own = folder / f"{family}_{corpus}.yaml"
    return own if corpus and own.is_file() else folder / f"{family}.yaml"


def default_space(base: RunConfig | None = None, corpus: str | None = None) -> SearchSpace:
    """The default search space of ``base``'s model family (DLF when no base is given) on ``corpus``."""
    base = base or RunConfig()
    path = space_file(base.model.family, corpus)
    if not path.is_file():
        raise DLFError(f"model family {base.model.family!r} ships no default search space ({path}); "
                       f"pass --space FILE")
    return load_space(path, base)


def load_space(path: str | Path, base: RunConfig | None = None) -> SearchSpace:
    """Read and validate a YAML space file; errors name the file and key."""
    return parse_space(read_space_file(Path(path)), str(path), base)


def read_space_file(path: Path) -> Any:
    if not path.is_file():
        raise DLFError(f"{path}: search space file not found; pass an existing YAML file to --space")
    return read_yaml(path, "search space file")


def parse_space(raw: Any, source: str, base: RunConfig | None = None) -> SearchSpace:
    """Validate a ``dot-path -> spec`` mapping against ``base`` (default: ``RunConfig()``)."""
    if not isinstance(raw, Mapping) or not raw:
        raise DLFError(f"{source}: a search space must be a non-empty mapping of dot-path -> "
                       "{low, high, log} or {choices: [...]}")
    base = base or RunConfig()
    params = tuple(_parse_param(str(k), v, source, base) for k, v in raw.items())
    return SearchSpace(params=params, source=source)


def _parse_param(path: str, spec: Any, source: str, base: RunConfig) -> Param:
    where = f"{source}: {path}"
    if not isinstance(spec, Mapping) or not spec:
        raise DLFError(f"{where}: expected {{low, high, log}} or {{choices: [...]}}, got {spec!r}")
    unknown = set(spec) - _KEYS
    if unknown:
        raise DLFError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: low, high, log, choices")
    if "choices" in spec:
        return _parse_choices(path, spec, source, base)
    if "low" not in spec or "high" not in spec:
        raise DLFError(f"{where}: a range needs both low and high (or use choices: [...])")
    low, high, log = spec["low"], spec["high"], spec.get("log", False)
    if not isinstance(log, bool):
        raise DLFError(f"{where}: log must be true or false, got {log!r}")
    for name, value in (("low", low), ("high", high)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise DLFError(f"{where}: {name} must be a finite number, got {value!r}")
    if not low < high:
        raise DLFError(f"{where}: low ({low}) must be smaller than high ({high})")
    if log and low <= 0:
        raise DLFError(f"{where}: a log range needs low > 0, got low={low}")
    _check_values(base, path, (), source)  # the path itself first: unknown paths get the valid list
    is_int = isinstance(_get(base, path), int) and not isinstance(_get(base, path), bool)
    if is_int and not (float(low).is_integer() and float(high).is_integer()):
        raise DLFError(f"{where}: {path} is an integer setting; low and high must be whole numbers")
    _check_values(base, path, (low, high), source)
    kind = "int" if is_int else "float"
    cast = int if is_int else float
    return Param(path=path, kind=kind, low=cast(low), high=cast(high), log=log)


def _parse_choices(path: str, spec: Mapping[str, Any], source: str, base: RunConfig) -> Param:
    where = f"{source}: {path}"
    if set(spec) != {"choices"}:
        raise DLFError(f"{where}: choices cannot be combined with low/high/log")
    choices = spec["choices"]
    if not isinstance(choices, list) or len(choices) < 2:
        raise DLFError(f"{where}: choices must be a list of at least two values, got {choices!r}")
    if any(isinstance(c, (list, dict)) for c in choices):
        raise DLFError(f"{where}: choices must be scalars (Optuna stores them as plain values)")
    _check_values(base, path, choices, source)
    return Param(path=path, kind="categorical", choices=tuple(choices))


def _check_values(base: RunConfig, path: str, values: Any, source: str) -> None:
    """Every value through apply_overrides, whose DLFError names the path and the valid alternatives."""
    from dlf.config import valid_paths

    if path not in valid_paths(base.model.family):
        apply_overrides(base, {path: None}, source=source)  # raises: unknown path, with the valid list
    for value in values:
        apply_overrides(base, {path: value}, source=source)
