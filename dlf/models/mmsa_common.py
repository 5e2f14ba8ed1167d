"""What the MMSA 2.2.1 baseline families share at run time (torch): MMSA's parameter-free time mean of
the audio and vision inputs, its L1 criterion as loss terms, the parameter summary as MMSA's
``params_per_module`` counts it, and the import of an MMSA ``state_dict``.

The import reads an ``AMIO`` model's state_dict (keys ``Model.<name>``). The families keep MMSA's
module and parameter names, so the mapping is the identity once the prefix is gone: strip it, drop
MMSA's bookkeeping buffers, read the sizes from the weight shapes, build, refuse unknown keys (a
state_dict of another family), missing keys and misfitting shapes with their list, and load strictly.
The key check comes after the build because the key set itself may depend on a size (EF_LSTM's
layer count), so a family's size reader must tolerate absent keys (``shape`` gives None). The model is
built under ``torch.manual_seed(cfg.seed)`` (the global generator left as it was), so tensors MMSA does
not save (Graph-MFN's DFG node networks, ``optional``) start from reproducible values.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import torch

from dlf.config import apply_overrides, preset
from dlf.models.checked_load import load_checked, short
from dlf.models.registry import Converted

__all__ = ["PREFIX", "REFERENCE_DIMS", "UNALIGNED_LENS", "time_mean", "l1_loss_terms", "parameter_summary",
           "shape", "sizes_from_shapes", "sizes_reader", "convert_mmsa", "output_features"]

PREFIX = "Model."  # MMSA's AMIO wrapper holds the model as ``self.Model``
_BOOKKEEPING = (".version",)  # fairseq-style buffers (MULT's): not state of the computation
REFERENCE_DIMS = {"mosi": {"l": 768, "a": 5, "v": 20}, "mosei": {"l": 768, "a": 74, "v": 35}}
UNALIGNED_LENS = {"mosi": {"l": 50, "a": 375, "v": 500}, "mosei": {"l": 50, "a": 500, "v": 500}}

# (prefix-free state, corpus preset, dataset dims, dataset lengths, source)
#   -> (model.* overrides read from the weights, input widths, stored lengths)
Sizes = Callable[[Mapping[str, torch.Tensor], Any, Mapping[str, int], Mapping[str, int], str],
                 tuple[dict[str, Any], dict[str, int], dict[str, int]]]


def time_mean(x: torch.Tensor, over_padding: bool = True) -> torch.Tensor:
    """(B, T, d) -> (B, d): MMSA's ``need_normalized`` preprocessing, done per sample in the forward.

    ``over_padding`` (MMSA): the mean over all T stored steps, zero padding included (375 or 500 steps
    unaligned), so a short stream is shrunk towards 0; NaN -> 0 as MMSA sets it. False: the mean over
    the stream's own frames, up to its last frame that is not all zeros (the model is given no lengths).
    """
    if over_padding:
        mean = x.mean(dim=1)
        return torch.where(torch.isnan(mean), torch.zeros_like(mean), mean)
    steps = torch.arange(1, x.shape[1] + 1, device=x.device)
    length = (x.ne(0).any(dim=-1) * steps).amax(dim=1).clamp(min=1)  # (B,) last non-zero frame, 1-based
    return x.sum(dim=1) / length.unsqueeze(-1).to(x.dtype)


def output_features(names: Mapping[str, str]) -> Callable[[Any, Mapping[str, torch.Tensor]], dict]:
    """A ``features`` hook that renames MMSA's output vectors, e.g. {"fused": "Feature_f", "enhanced_l":
    "Feature_t"}; an output the model did not produce (a modality subset) is left out."""
    def features(model: Any, out: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {ours: out[theirs] for ours, theirs in names.items() if theirs in out}

    return features


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


def shape(state: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...] | None:
    """The shape of ``state[key]``, None when absent (the key check names what is missing)."""
    return tuple(state[key].shape) if key in state else None


def sizes_from_shapes(state: Mapping[str, torch.Tensor], sizes: Mapping[str, tuple[str, int]],
                      widths: Mapping[str, tuple[str, int]], dims: Mapping[str, int]) -> tuple[dict, dict]:
    """(model.* overrides, input widths {l, a, v}) read off weight shapes: ``sizes`` maps a dot-path and
    ``widths`` a modality to (key, axis). An absent key reads nothing (the preset's size and the
    dataset's width stand in; the key check after the build names the key)."""
    def read(key: str, axis: int) -> int | None:
        found = shape(state, key)
        return None if found is None else found[axis]

    overrides = {path: n for path, where in sizes.items() if (n := read(*where)) is not None}
    read_widths = {m: read(*where) for m, where in widths.items()}
    return overrides, {m: dims[m] if read_widths.get(m) is None else read_widths[m] for m in ("l", "a", "v")}


def sizes_reader(sizes: Mapping[str, tuple[str, int]], widths: Mapping[str, tuple[str, int]]) -> Sizes:
    """The ``convert_mmsa`` size reader of a family whose weights fix ``sizes`` and the input ``widths``
    (:func:`sizes_from_shapes`); the sequence lengths are the dataset's (no weight fixes them)."""
    def read(state, cfg, dims, seq_lens, source):
        return (*sizes_from_shapes(state, sizes, widths, dims), dict(seq_lens))

    return read


def convert_mmsa(state: Mapping[str, torch.Tensor], corpus: str, family: str, label: str, build: Callable,
                 sizes: Sizes, source: str = "state_dict", dims: Mapping[str, int] | None = None,
                 seq_lens: Mapping[str, int] | None = None, optional: tuple[str, ...] = ()) -> Converted:
    """An MMSA ``state_dict`` of model ``label`` -> a ``family`` model (eval mode) under the ``corpus``
    preset at the sizes of the weights; ``dims`` / ``seq_lens`` are the dataset's (when not given, the
    widths and lengths of MMSA's file for ``corpus``, aligned or not as the family's preset reads).
    The tensors under a prefix in ``optional`` may be absent all together (they keep the seeded
    initial values); when some are given, all are required."""
    original = {(k[len(PREFIX):] if k.startswith(PREFIX) else k): k for k in state}  # for the messages
    state, dropped = _strip(state)
    cfg = preset(corpus, family)
    dims = dict(dims or REFERENCE_DIMS.get(corpus, REFERENCE_DIMS["mosi"]))
    if not seq_lens:
        seq_lens = dict.fromkeys("lav", 50) if cfg.data.aligned else UNALIGNED_LENS.get(corpus, UNALIGNED_LENS["mosi"])
    overrides, weight_dims, lens = sizes(state, cfg, dims, dict(seq_lens), source)
    sized = apply_overrides(cfg, overrides, source=f"{source}: sizes read from the weights")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(sized.seed)
        model = build(sized, weight_dims, lens)
    absent = tuple(p for p in optional if not any(k.startswith(p) for k in state))
    load_checked(model, state, source, f"MMSA's {label}", lambda k: original.get(k, PREFIX + k), keep=absent,
                 unknown_hint=f"pass a state_dict saved by MMSA's {label} (keys {PREFIX}<module>...), or name the "
                              f"family that saved it with --family")
    model.eval()
    notes = [f"{path}={value} from the weights (the {corpus} preset has {_get(cfg, path)})"
             for path, value in overrides.items() if _get(cfg, path) != value]
    if dropped:
        notes.append("dropped MMSA bookkeeping buffers: " + short(dropped, 4))
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
