"""Importing an MMSA 2.2.1 ``state_dict`` (an AMIO model's, keys ``Model.<name>``) into MFN or
Graph-MFN, whose module names are MMSA's: the mapping is the identity once the prefix is gone.

The steps both share: strip the prefix, refuse unknown and missing keys with their list (a state_dict
of another family is "unknown keys"), read the sizes from the weight shapes, build under the corpus
preset at those sizes, load strictly, eval mode.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import torch

from dlf.config import apply_overrides, preset
from dlf.errors import DLFError
from dlf.models.registry import Converted

__all__ = ["PREFIX", "strip_prefix", "short_list", "check_names", "rows", "build_and_load"]

PREFIX = "Model."  # MMSA's AMIO wrapper holds the model as ``self.Model``


def short_list(keys, n: int = 8) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f" ... (+{len(keys) - n} more)" if len(keys) > n else "")


def strip_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {(k[len(PREFIX):] if k.startswith(PREFIX) else k): v for k, v in state.items()}


def check_names(state: Mapping[str, torch.Tensor], names: set[str], source: str, label: str) -> None:
    """One line listing the keys that are not ``label``'s, else the ones it lacks."""
    unknown = sorted(set(state) - names)
    if unknown:
        raise DLFError(f"{source}: {len(unknown)} keys are not part of MMSA's {label}: "
                       f"{short_list(PREFIX + k for k in unknown)}; pass a state_dict saved by MMSA's {label} "
                       f"(keys {PREFIX}<module>...), or choose the family that saved it with --family")
    missing = sorted(names - set(state))
    if missing:
        raise DLFError(f"{source}: {len(missing)} tensors of MMSA's {label} are missing: "
                       f"{short_list(PREFIX + k for k in missing)}; this is not a complete {label} state_dict")


def rows(state: Mapping[str, torch.Tensor], key: str) -> int:
    """The output width of a Linear / LSTMCell weight (its first dimension)."""
    return int(state[key].shape[0])


def build_and_load(state: Mapping[str, torch.Tensor], corpus: str, family: str, label: str, build: Callable,
                   overrides: Mapping[str, Any], dims: Mapping[str, int], seq_lens: Mapping[str, int],
                   source: str, keep: Iterable[str] = ()) -> Converted:
    """Build ``family`` under the ``corpus`` preset with ``overrides`` (the sizes the weights have), load
    ``state`` (prefix stripped, names checked) strictly and return it in eval mode. The model is built
    under ``torch.manual_seed(cfg.seed)`` (the global generator is left as it was), so the tensors in
    ``keep`` that ``state`` lacks keep reproducible initial values."""
    base = preset(corpus, family)
    cfg = apply_overrides(base, dict(overrides), source=f"{source}: sizes read from the weights")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = build(cfg, dims, seq_lens)
    own = model.state_dict()
    state = {**{k: own[k] for k in keep if k not in state}, **state}
    bad = [f"{PREFIX}{k} {tuple(v.shape)} (expected {tuple(own[k].shape)})" for k, v in state.items()
           if tuple(v.shape) != tuple(own[k].shape)]
    if bad:
        raise DLFError(f"{source}: tensor shapes do not fit one {label} model: {short_list(bad, 4)}")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, strict=True)
    model.eval()
    notes = [f"{path}={value} from the weights (the {corpus} preset has {_get(base, path)})"
             for path, value in overrides.items() if _get(base, path) != value]
    return Converted(model, cfg, dict(dims), dict(seq_lens), [], notes)


def _get(cfg: Any, path: str) -> Any:
    section, name = path.split(".", 1)
    return getattr(getattr(cfg, section), name)
