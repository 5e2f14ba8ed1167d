"""What the MMSA 2.2.1 baseline families share at run time (torch): MMSA's L1 criterion as loss terms,
the parameter summary as MMSA's ``params_per_module`` counts it, the refusal of gradient accumulation
for models with BatchNorm, and the import of an MMSA ``state_dict``.

The import reads an ``AMIO`` model's state_dict (keys ``Model.<name>``). The families keep MMSA's
module and parameter names, so the mapping is the identity once the prefix is gone: strip it, read
the sizes from the weight shapes, build, refuse unknown keys (a state_dict of another family), missing
keys and misfitting shapes with their list, and load strictly.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import torch

from dlf.config import apply_overrides, preset
from dlf.errors import DLFError
from dlf.models.registry import Converted

__all__ = ["PREFIX", "REFERENCE_DIMS", "UNALIGNED_LENS", "l1_loss_terms", "parameter_summary",
           "require_sequential", "shape", "convert_mmsa"]

PREFIX = "Model."  # MMSA's AMIO wrapper holds the model as ``self.Model``
REFERENCE_DIMS = {"mosi": {"l": 768, "a": 5, "v": 20}, "mosei": {"l": 768, "a": 74, "v": 35}}
UNALIGNED_LENS = {"mosi": {"l": 50, "a": 375, "v": 500}, "mosei": {"l": 50, "a": 500, "v": 500}}

# (prefix-free state, corpus preset, dataset dims, dataset lengths, source)
#   -> (model.* overrides read from the weights, input widths, stored lengths)
Sizes = Callable[[Mapping[str, torch.Tensor], Any, Mapping[str, int], Mapping[str, int], str],
                 tuple[dict[str, Any], dict[str, int], dict[str, int]]]


def l1_loss_terms(out: Mapping[str, torch.Tensor], labels: torch.Tensor, cfg: Any) -> dict[str, torch.Tensor]:
    """MMSA's criterion for the L1 models: the batch-mean |M - y| (``task_l1``), weighted by loss.task."""
    l1 = torch.nn.functional.l1_loss(out["M"].reshape(-1), labels.reshape(-1))
    return {"total": cfg.loss.task * l1, "task_l1": l1}


def parameter_summary(model: torch.nn.Module) -> dict:
    """Registered parameters per top-level module, as MMSA's params_per_module counts them."""
    components: dict[str, int] = {}
    for name, p in model.named_parameters():
        top = name.split(".", 1)[0]
        components[top] = components.get(top, 0) + p.numel()
    return {"total": sum(components.values()), "text_encoder": 0, "components": components}


def require_sequential(cfg: Any, family: str) -> None:
    """Refuse gradient accumulation for a model with BatchNorm: the trainer may compute the micro-batches
    of one window concurrently (threads or forked processes), where BatchNorm's running statistics
    would not be updated batch after batch. MMSA never accumulates for these models. Called when
    training starts (from the family's ``param_groups``), on the run's final config."""
    if cfg.train.accumulation != 1:
        raise DLFError(f"train.accumulation={cfg.train.accumulation}: {family} needs 1 (its BatchNorm running "
                       f"statistics are updated batch by batch; MMSA does not accumulate); "
                       f"use --set train.accumulation=1")


def shape(state: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...] | None:
    """The shape of ``state[key]``, None when absent (the key check names what is missing)."""
    return tuple(state[key].shape) if key in state else None


def _short(keys, n: int = 8) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f" ... (+{len(keys) - n} more)" if len(keys) > n else "")


def convert_mmsa(state: Mapping[str, torch.Tensor], corpus: str, family: str, label: str, build: Callable,
                 sizes: Sizes, source: str = "state_dict", dims: Mapping[str, int] | None = None,
                 seq_lens: Mapping[str, int] | None = None) -> Converted:
    """An MMSA ``state_dict`` of model ``label`` -> a ``family`` model (eval mode) under the ``corpus``
    preset at the sizes of the weights; ``dims`` / ``seq_lens`` are the dataset's (when not given, the
    widths and lengths of MMSA's file for ``corpus``, aligned or not as the family's preset reads)."""
    state = {(k[len(PREFIX):] if k.startswith(PREFIX) else k): v for k, v in state.items()}
    cfg = preset(corpus, family)
    dims = dict(dims or REFERENCE_DIMS.get(corpus, REFERENCE_DIMS["mosi"]))
    if not seq_lens:
        seq_lens = dict.fromkeys("lav", 50) if cfg.data.aligned else UNALIGNED_LENS.get(corpus, UNALIGNED_LENS["mosi"])
    overrides, weight_dims, lens = sizes(state, cfg, dims, dict(seq_lens), source)
    sized = apply_overrides(cfg, overrides, source=f"{source}: sizes read from the weights")
    model = build(sized, weight_dims, lens)
    _load(model, state, source, label)
    model.eval()
    notes = [f"{path}={value} from the weights (the {corpus} preset has {_get(cfg, path)})"
             for path, value in overrides.items() if _get(cfg, path) != value]
    return Converted(model, sized, weight_dims, lens, [], notes)


def _get(cfg: Any, path: str) -> Any:
    section, name = path.split(".", 1)
    return getattr(getattr(cfg, section), name)


def _load(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str, label: str) -> None:
    own = model.state_dict()
    unknown = sorted(set(state) - set(own))
    if unknown:
        raise DLFError(f"{source}: {len(unknown)} keys are not part of MMSA's {label}: "
                       f"{_short(PREFIX + k for k in unknown)}; pass a state_dict saved by MMSA's {label} "
                       f"(keys {PREFIX}<module>...), or name the family that saved it with --family")
    missing = sorted(set(own) - set(state))
    if missing:
        raise DLFError(f"{source}: {len(missing)} tensors of MMSA's {label} are missing: "
                       f"{_short(PREFIX + k for k in missing)}; this is not a complete {label} state_dict")
    bad = [f"{PREFIX}{k} {tuple(v.shape)} (expected {tuple(own[k].shape)})" for k, v in state.items()
           if v.shape != own[k].shape]
    if bad:
        raise DLFError(f"{source}: tensor shapes do not fit one {label} model: {_short(bad, 4)}")
    floats = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}  # MMSA may save half
    model.load_state_dict(floats, strict=True)
