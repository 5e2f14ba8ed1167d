"""The official DMD checkpoint (mdswyz/DMD) as a dlf-ablate ``dmd`` model.

The official code saves the model (``pt/dmd.pth``) and builds its two graph-distillation units beside it
(never saved by the trainer). They are read either from the model file itself (keys under ``gd_homo.`` and
``gd_hetero.``) or from files of their own (``units``, the CLI's --gd-homo / --gd-hetero); without them
the import stops, unless ``fresh_units`` starts them from their initial values (seeded).

Official module names map one to one onto ours (``OFFICIAL_NAMES``); the fairseq buffers (``version``,
``embed_positions._float_tensor``) and BERT's id buffers are dropped. BERT weights (``text_model.model.*``)
select the bert text mode (architecture from --pretrained, else from the shapes); without them the bert
mode loads BERT from --pretrained, and with neither the model reads the stored text features (the
parity fixture's setting). Widths, kernels, lengths, depth and unit sizes come from the weight shapes.
"""
from __future__ import annotations

import re
from typing import Mapping

import torch

from dlf.config import apply_overrides, preset
from dlf.errors import DLFError
from dlf.models.checked_load import bert_architecture, load_checked, short
from dlf.models.registry import Converted
from dlf.models.text import BERT_PREFIX

__all__ = ["OFFICIAL_NAMES", "UNITS", "convert_official_state"]

UNITS = ("gd_homo", "gd_hetero")
_M = ("l", "v", "a")
_HEAD = {"proj1": "proj1", "proj2": "proj2", "out_layer": "out"}
OFFICIAL_NAMES: dict[str, str] = {
    "encoder_c": "shared_encoder",
    **{f"{p}_c": f"shared_head.{q}" for p, q in _HEAD.items()},
    **{p: f"final_head.{q}" for p, q in _HEAD.items()},
    "weight_c": "fusion.c",
    **{k: v for m in _M for k, v in {
        f"proj_{m}": f"input_proj.{m}", f"encoder_s_{m}": f"specific_encoders.{m}", f"decoder_{m}": f"decoders.{m}",
        f"align_c_{m}": f"triplet_proj.{m}", f"proj_cosine_{m}": f"proj_cosine.{m}",
        f"self_attentions_c_{m}": f"shared_branch.{m}", f"trans_{m}_mem": f"crossmodal.mem.{m}",
        f"weight_{m}": f"fusion.{m}",
        **{f"{p}_{m}_low": f"homo_heads.{m}.{q}" for p, q in _HEAD.items()},
        **{f"{p}_{m}_high": f"hetero_heads.{m}.{q}" for p, q in _HEAD.items()},
        **{f"trans_{m}_with_{o}": f"crossmodal.cross.{m}_{o}" for o in _M if o != m}}.items()},
    **{u: u for u in UNITS},
}
_INVERSE = sorted(((v, k) for k, v in OFFICIAL_NAMES.items()), key=lambda kv: -len(kv[0]))
_BUFFERS = (".version", ".embed_positions._float_tensor")
_BERT_IDS = ("embeddings.position_ids", "embeddings.token_type_ids")
_OFFICIAL_BERT = "text_model.model."


def _official(name: str) -> str:
    """The official key of our parameter ``name`` (for messages)."""
    if name.startswith(BERT_PREFIX):
        return _OFFICIAL_BERT + name[len(BERT_PREFIX):]
    for ours, theirs in _INVERSE:
        if name == ours or name.startswith(ours + "."):
            return theirs + name[len(ours):]
    return name


def _rename(state: Mapping[str, torch.Tensor], source: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Official names -> ours, and the dropped buffers; unknown keys are refused with their list."""
    out, dropped, unknown = {}, [], []
    for key, value in state.items():
        name = key.removeprefix("module.")  # saved from DataParallel
        top = name.split(".", 1)[0]
        if name.endswith(_BUFFERS) or (name.startswith(_OFFICIAL_BERT) and name[len(_OFFICIAL_BERT):] in _BERT_IDS):
            dropped.append(key)
        elif name.startswith(_OFFICIAL_BERT):
            out[BERT_PREFIX + name[len(_OFFICIAL_BERT):]] = value
        elif top in OFFICIAL_NAMES:
            out[OFFICIAL_NAMES[top] + name[len(top):]] = value
        else:
            unknown.append(key)
    if unknown:
        raise DLFError(f"{source}: {len(unknown)} keys are not part of the official DMD model: {short(unknown)}; "
                       f"pass a state_dict saved by the official DMD code (mdswyz/DMD), or name the family that "
                       f"saved it with --family")
    return out, dropped


def _add_units(renamed: dict, units: Mapping[str, Mapping[str, torch.Tensor]] | None, fresh: bool,
               source: str) -> list[str]:
    """Put the unit files' tensors under their prefixes; returns the units left at their initial values."""
    for name, state in (units or {}).items():
        if any(k.startswith(name + ".") for k in renamed):
            raise DLFError(f"{source}: already holds the {name} unit; leave out --{name.replace('_', '-')}")
        renamed.update({f"{name}.{k.removeprefix('module.')}": v for k, v in state.items()})
    absent = [u for u in UNITS if not any(k.startswith(u + ".") for k in renamed)]
    if absent and not fresh:
        flags = " ".join(f"--{u.replace('_', '-')} FILE" for u in absent)
        raise DLFError(f"{source}: the graph-distillation units {', '.join(absent)} are missing (the official code "
                       f"saves them apart from the model); give their state_dicts with {flags}, or pass --fresh-units "
                       f"to start them from their initial values")
    return absent


def _shape(state: Mapping[str, torch.Tensor], key: str, dims: int, source: str) -> tuple[int, ...]:
    if key not in state or state[key].dim() != dims:
        raise DLFError(f"{source}: {_official(key)} is missing or not {dims}-d; this is not a complete official "
                       f"DMD state_dict")
    return tuple(state[key].shape)


def _geometry(renamed: Mapping[str, torch.Tensor], source: str) -> tuple[dict, dict, dict]:
    """(model.* overrides, input widths, stored lengths) read off the weight shapes."""
    d = _shape(renamed, "input_proj.l.weight", 3, source)[0]
    overrides, dims, lens = {"model.d_model": d, "model.n_heads": d // 5 if d % 5 == 0 else 1}, {}, {}
    for m in ("l", "a", "v"):
        _, dims[m], k = _shape(renamed, f"input_proj.{m}.weight", 3, source)
        lens[m] = _shape(renamed, f"triplet_proj.{m}.weight", 2, source)[1] // d + k - 1
        overrides[f"model.conv_kernel_{m}"] = k
    depth = {int(g.group(1)) for key in renamed if (g := re.match(r"crossmodal\.mem\.l\.layers\.(\d+)\.", key))}
    cross = {int(g.group(1)) for key in renamed if (g := re.match(r"crossmodal\.cross\.l_a\.layers\.(\d+)\.", key))}
    if depth and cross:
        overrides.update({"model.n_levels": len(cross), "model.mem_levels": len(depth)})
    for unit in UNITS:
        if f"{unit}.W_logit.weight" in renamed:
            overrides[f"model.{unit}_size"] = _shape(renamed, f"{unit}.W_logit.weight", 2, source)[0]
    overrides["model.dead_projections"] = any(k.startswith("proj_cosine.") for k in renamed)
    return overrides, dims, lens


def convert_official_state(state: Mapping[str, torch.Tensor], corpus: str, pretrained: str | None = None,
                           source: str = "state_dict", dims=None, seq_lens=None,
                           units: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
                           fresh_units: bool = False) -> Converted:
    """An official DMD state_dict (+ its units) -> a ``dmd`` model (eval mode) under the ``corpus`` preset."""
    from dlf.models.dmd.model import build_model

    renamed, dropped = _rename(state, source)
    fresh = _add_units(renamed, units, fresh_units, source)
    overrides, widths, lens = _geometry(renamed, source)
    has_bert = any(k.startswith(BERT_PREFIX) for k in renamed)
    if has_bert or pretrained:
        overrides.update({"model.text_encoder": "bert", "model.pretrained": pretrained or "bert-base-uncased"})
    else:  # no BERT to load: the model reads the stored text features
        overrides["model.text_encoder"] = "features"
    base = preset(corpus, "dmd")
    cfg = apply_overrides(base, overrides, source=f"{source}: sizes read from the weights")
    bert_config = bert_architecture(renamed, pretrained, widths["l"],
                                    f"{_OFFICIAL_BERT.split('.')[0]} output into proj_l.weight", source,
                                    _official) if has_bert or pretrained else None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)  # units left fresh start from reproducible values
        model = build_model(cfg, widths, lens, bert_config=bert_config if has_bert else None)
    keep = tuple(f"{u}." for u in fresh) + (() if has_bert else (BERT_PREFIX,))
    load_checked(model, renamed, source, "the official DMD model", _official, keep=keep)
    model.eval()
    notes = [f"{path}={value} from the weights (the {corpus} preset has {getattr(base.model, path[6:])})"
             for path, value in overrides.items() if path != "model.pretrained"
             and getattr(base.model, path[6:]) != value]
    notes.append("text: " + ("BERT weights from the state_dict" if has_bert else f"BERT weights from {pretrained}"
                             if pretrained else "the stored text features (no BERT tensors, no --pretrained)"))
    if fresh:
        notes.append(f"units at their initial values (seed {cfg.seed}): {', '.join(fresh)}")
    if dropped:
        notes.append("dropped buffers: " + short(dropped, 4))
    return Converted(model, cfg, widths, lens, sorted(dropped), notes)
