"""MMSA's MULT checkpoint as a dlf-ablate MulT: the key mapping is the identity, less MMSA's ``Model.``
prefix (AMIO's wrapper) and the fairseq ``version`` buffers (bookkeeping, value 2).

The geometry comes from the weights: d_model and the input widths and kernels from the Conv1d shapes,
the depths from the layer indices. The head count is not stored in any shape: it comes from the corpus
preset (10 MOSI, 6 MOSEI). The sequence lengths are the dataset's (MulT's weights do not fix them).
"""
from __future__ import annotations

import re
from typing import Mapping

import torch

from dlf.config import apply_overrides, preset
from dlf.errors import DLFError
from dlf.models.checked_load import load_checked, short
from dlf.models.mult.config import MODALITIES
from dlf.models.mult.model import build_model
from dlf.models.registry import Converted

__all__ = ["MODULES", "convert_official_state"]

MODULES = frozenset([f"proj_{m}" for m in MODALITIES] + [f"trans_{m}_mem" for m in MODALITIES]
                    + [f"trans_{m}_with_{o}" for m in MODALITIES for o in MODALITIES if o != m]
                    + ["proj1", "proj2", "out_layer"])
# MMSA's unaligned lengths (its loader overwrites seq_lens with the arrays'), used when none are given
UNALIGNED_LENS = {"mosi": {"l": 50, "a": 375, "v": 500}, "mosei": {"l": 50, "a": 500, "v": 500}}
_NAMES = {"l": "text", "a": "audio", "v": "vision"}


def _strip(state: Mapping[str, torch.Tensor], source: str) -> tuple[dict[str, torch.Tensor], int]:
    """MMSA names -> ours; returns (tensors, number of version buffers dropped). Unknown modules raise."""
    out, versions, unknown = {}, 0, []
    for key, value in state.items():
        name = key.removeprefix("module.").removeprefix("Model.")
        if name.split(".", 1)[0] not in MODULES:
            unknown.append(key)
        elif name.endswith(".version"):
            versions += 1
        else:
            out[name] = value
    if unknown:
        raise DLFError(f"{source}: {len(unknown)} keys are not part of MMSA's MULT: {short(unknown)}; "
                       f"pass the state_dict MMSA saved for model 'mult' (keys Model.proj_l..., Model.trans_l_with_a...)")
    return out, versions


def _shape(state: Mapping[str, torch.Tensor], key: str, source: str) -> tuple[int, ...]:
    if key not in state:
        raise DLFError(f"{source}: missing key 'Model.{key}'; this is not a complete MMSA MULT state_dict")
    return tuple(state[key].shape)


def _depth(state: Mapping[str, torch.Tensor], module: str) -> int:
    pattern = re.compile(rf"{module}\.layers\.(\d+)\.")
    found = [int(m.group(1)) for k in state if (m := pattern.match(k))]
    return max(found) + 1 if found else 0


def _geometry(state: Mapping[str, torch.Tensor], dims: Mapping[str, int] | None, base, source: str) -> tuple[dict, dict]:
    """(overrides, input widths) read from the Conv1d shapes and the layer counts (``base``: the preset)."""
    overrides, widths = {}, {}
    for m in MODALITIES:
        shape = _shape(state, f"proj_{m}.weight", source)
        if len(shape) != 3:
            raise DLFError(f"{source}: Model.proj_{m}.weight has shape {shape}; expected a Conv1d weight (d, D, k)")
        overrides["model.d_model"], widths[m], overrides[f"model.conv_kernel_{m}"] = shape
        if dims is not None and int(dims[m]) != widths[m]:
            raise DLFError(f"{source}: the weights expect {_NAMES[m]} width {widths[m]} (Model.proj_{m}.weight), "
                           f"but the dataset has {dims[m]}; use the dataset the checkpoint was trained on")
    if len({_shape(state, f"proj_{m}.weight", source)[0] for m in MODALITIES}) != 1:
        raise DLFError(f"{source}: the three input Conv1d have different output widths; not an MMSA MULT")
    levels, mem = _depth(state, "trans_l_with_a") or 1, _depth(state, "trans_l_mem") or 1
    overrides["model.n_levels"] = levels
    if max(levels, base.model.mem_levels) != mem:  # the memories have max(n_levels, mem_levels) layers
        overrides["model.mem_levels"] = mem
    return overrides, widths


def convert_official_state(state: Mapping[str, torch.Tensor], corpus: str, pretrained: str | None = None,
                           source: str = "state_dict", dims=None, seq_lens=None) -> Converted:
    """MMSA's MULT state_dict -> a dlf-ablate MulT (eval mode) under the ``corpus`` preset."""
    if pretrained:
        raise DLFError(f"--pretrained {pretrained}: MMSA's MULT reads text features, not BERT; leave --pretrained out")
    renamed, versions = _strip(state, source)
    base = preset(corpus, "mult")
    overrides, widths = _geometry(renamed, dims, base, source)
    cfg = apply_overrides(base, overrides, source=f"{source}: geometry")
    lens = {m: int(seq_lens[m]) for m in MODALITIES} if seq_lens is not None else dict(UNALIGNED_LENS[corpus])
    model = build_model(cfg, widths, lens)
    load_checked(model, renamed, source, "the MULT model", lambda k: f"Model.{k}",
                 unknown_hint="they do not fit a MULT of this geometry")
    model.eval()
    notes = [f"model.n_heads={cfg.model.n_heads} from the {corpus} preset (no weight shape records it)"]
    changed = [f"{k}={v}" for k, v in overrides.items() if v != _get(base, k)]
    if changed:
        notes.append(f"geometry read from the weights differs from the {corpus} preset: {', '.join(changed)}")
    dropped = ["fairseq version buffers"] if versions else []
    if versions:
        notes.append(f"dropped {versions} fairseq version buffers (bookkeeping, not read by the forward pass)")
    return Converted(model, cfg, widths, lens, dropped, notes)


def _get(cfg, path: str):
    section, name = path.split(".")
    return getattr(getattr(cfg, section), name)
