"""What the MMSA 2.2.1 baseline families share at run time (torch only): MMSA's L1 criterion as loss
terms, the parameter summary by MMSA's ``params_per_module``, and the import of an MMSA ``state_dict``.

The import (an ``AMIO`` model's state_dict, keys ``Model.<name>``) serves families whose module and
parameter names are MMSA's, so the mapping is the identity once the prefix is gone: strip it, drop
MMSA's bookkeeping buffers, refuse unknown and missing keys with their list (a state_dict of another
family is "unknown keys"), build the model at the sizes the family reads from the weight shapes, and
load strictly.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import torch

from dlf.config import apply_overrides, preset
from dlf.errors import DLFError
from dlf.models.registry import Converted

__all__ = ["l1_loss_terms", "parameter_summary", "convert_mmsa", "shape_of", "short_list"]

PREFIX = "Model."  # MMSA's AMIO wrapper holds the model as ``self.Model``
_BOOKKEEPING = (".version",)  # fairseq-style buffers (MULT): not state of the computation
_REFERENCE_DIMS = {"mosi": {"l": 768, "a": 5, "v": 20}, "mosei": {"l": 768, "a": 74, "v": 35}}
_UNALIGNED_LENS = {"mosi": {"l": 50, "a": 375, "v": 500}, "mosei": {"l": 50, "a": 500, "v": 500}}

# (state without prefix, source) -> (model.* overrides, dims {l, a, v}) read from the weight shapes
Infer = Callable[[Mapping[str, torch.Tensor], str], tuple[dict[str, Any], dict[str, int]]]


def l1_loss_terms(out: Mapping[str, torch.Tensor], labels: torch.Tensor, cfg: Any) -> dict[str, torch.Tensor]:
    """MMSA's criterion for the L1 models: the batch-mean |M - y| (``task_l1``), weighted by loss.task."""
    l1 = torch.nn.functional.l1_loss(out["M"].reshape(-1), labels.reshape(-1))
    return {"total": cfg.loss.task * l1, "task_l1": l1}


def parameter_summary(model: torch.nn.Module) -> dict:
    """Registered parameters (frozen ones included) per top-level name, as MMSA's params_per_module
    counts them (own parameters such as TFN's output_range are their own entries)."""
    components: dict[str, int] = {}
    for name, p in model.named_parameters():
        top = name.split(".", 1)[0]
        components[top] = components.get(top, 0) + p.numel()
    return {"total": sum(components.values()), "text_encoder": 0, "components": components}


def short_list(keys, n: int = 8) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f" ... (+{len(keys) - n} more)" if len(keys) > n else "")


def shape_of(state: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...]:
    return tuple(state[key].shape)


def convert_mmsa(state: Mapping[str, torch.Tensor], corpus: str, family: str, label: str, build: Callable,
                 infer: Infer, source: str = "state_dict", dims: Mapping[str, int] | None = None,
                 seq_lens: Mapping[str, int] | None = None) -> Converted:
    """An MMSA ``state_dict`` of model ``label`` -> a ``family`` model (eval mode) under the ``corpus``
    preset, at the sizes the weights have. ``dims`` / ``seq_lens`` are the dataset's: the widths are
    read from the weights (the converter's caller compares them with the dataset), the lengths, which
    these weights do not fix, are taken from ``seq_lens`` (MMSA's unaligned files when not given)."""
    original = {(k[len(PREFIX):] if k.startswith(PREFIX) else k): k for k in state}  # for the messages
    state, dropped = _strip(state)
    cfg = preset(corpus, family)
    lens = dict(seq_lens) if seq_lens else dict(_UNALIGNED_LENS.get(corpus, _UNALIGNED_LENS["mosi"]))
    _check_names(state, _names(build, cfg, dict(dims or _REFERENCE_DIMS.get(corpus, _REFERENCE_DIMS["mosi"])), lens),
                 source, label, original)
    overrides, weight_dims = infer(state, source)
    sized = apply_overrides(cfg, overrides, source=f"{source}: sizes read from the weights")
    model = build(sized, weight_dims, lens)
    _load(model, state, source, label)
    model.eval()
    notes = [f"{path}={value} from the weights (the {corpus} preset has {_get(cfg, path)})"
             for path, value in overrides.items() if _get(cfg, path) != value]
    if dropped:
        notes.append("dropped MMSA bookkeeping buffers: " + short_list(dropped, 4))
    return Converted(model, sized, weight_dims, lens, sorted(dropped), notes)


def _get(cfg: Any, path: str) -> Any:
    section, name = path.split(".", 1)
    return getattr(getattr(cfg, section), name)


def _strip(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    out, dropped = {}, []
    for key, value in state.items():
        name = key[len(PREFIX):] if key.startswith(PREFIX) else key
        if name.endswith(_BOOKKEEPING):
            dropped.append(key)
        else:
            out[name] = value
    return out, dropped


def _names(build: Callable, cfg: Any, dims: dict[str, int], lens: dict[str, int]) -> set[str]:
    """The state_dict keys of the family's model; built on the meta device (names only, no memory)."""
    with torch.device("meta"):
        return set(build(cfg, dims, lens).state_dict())


def _check_names(state: Mapping[str, torch.Tensor], names: set[str], source: str, label: str,
                 original: Mapping[str, str]) -> None:
    unknown = sorted(set(state) - names)
    if unknown:
        raise DLFError(f"{source}: {len(unknown)} keys are not part of MMSA's {label}: "
                       f"{short_list(original[k] for k in unknown)}; pass a state_dict saved by MMSA's {label} "
                       f"(keys {PREFIX}<module>...), or choose the family that saved it with --family")
    missing = sorted(names - set(state))
    if missing:
        raise DLFError(f"{source}: {len(missing)} tensors of MMSA's {label} are missing: "
                       f"{short_list(PREFIX + k for k in missing)}; this is not a complete {label} state_dict")


def _load(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str, label: str) -> None:
    own = model.state_dict()
    bad = [f"{PREFIX}{k} {tuple(v.shape)} (expected {tuple(own[k].shape)})" for k, v in state.items()
           if v.shape != own[k].shape]
    if bad:
        raise DLFError(f"{source}: tensor shapes do not fit one {label} model: {short_list(bad, 4)}")
    floats = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}  # MMSA may save half
    model.load_state_dict(floats, strict=True)
