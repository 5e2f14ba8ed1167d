"""MMSA's BERT_MAG ``state_dict`` as a dlf-ablate ``mag_bert`` model.

MMSA's names map onto ours by prefix (AMIO holds the model as ``Model``, BERT_MAG its transformers model
as ``model``):

    Model.model.bert.MAG.<rest>                                -> MAG.<rest>
    Model.model.bert.{embeddings,encoder,pooler}.<rest>        -> text_encoder.bert.{...}.<rest>
    Model.model.classifier.<rest>                              -> classifier.<rest>

BERT's id buffers (``embeddings.position_ids`` / ``token_type_ids``, saved by older transformers) are
dropped. The BERT tensors may be absent (the parity fixture stores them apart, and a user may strip
them): BERT is then loaded from ``--pretrained`` (else the preset's model.pretrained, MMSA's
bert-base-uncased). The widths come from the gate's weights; the BERT must have the gate's width.
"""
from __future__ import annotations

from typing import Mapping

import torch

from dlf.config import apply_overrides, preset
from dlf.errors import DLFError
from dlf.models.checked_load import bert_architecture, load_checked, short
from dlf.models.mag_bert.model import build_model
from dlf.models.registry import Converted
from dlf.models.text import BERT_PREFIX

__all__ = ["convert_official_state", "MMSA_PREFIX"]

MMSA_PREFIX = "Model.model."
_BERT_PARTS = ("embeddings.", "encoder.", "pooler.")
_ID_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")
ALIGNED_LENS = {"l": 50, "a": 50, "v": 50}  # MMSA's aligned_50 files, when no dataset is given


def _ours(key: str) -> str | None:
    """Our name of MMSA key ``key``; "" for a dropped id buffer, None for a key BERT_MAG does not have."""
    rest = key.removeprefix("module.")
    if not rest.startswith(MMSA_PREFIX):
        return None
    rest = rest[len(MMSA_PREFIX):]
    if rest.startswith("bert.MAG."):
        return rest[len("bert."):]
    if rest.startswith("classifier."):
        return rest
    inner = rest.removeprefix("bert.")
    if inner != rest and inner in _ID_BUFFERS:
        return ""
    return BERT_PREFIX + inner if inner != rest and inner.startswith(_BERT_PARTS) else None


def _rename(state: Mapping[str, torch.Tensor], source: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    out, dropped, unknown = {}, [], []
    for key, value in state.items():
        name = _ours(key)
        if name is None:
            unknown.append(key)
        elif name:
            out[name] = value
        else:
            dropped.append(key)
    if unknown:
        raise DLFError(f"{source}: {len(unknown)} keys are not part of MMSA's BERT_MAG: {short(unknown)}; pass a "
                       f"state_dict saved by MMSA's BERT_MAG (keys {MMSA_PREFIX}bert..., {MMSA_PREFIX}classifier...), "
                       f"or choose the family that saved it with --family")
    return out, dropped


def _gate_widths(renamed: Mapping[str, torch.Tensor], source: str) -> dict[str, int]:
    """{"l": the gate's (= BERT's) width, "a": d_a, "v": d_v} from W_a and W_v."""
    for key in ("MAG.W_v.weight", "MAG.W_a.weight"):
        if key not in renamed or renamed[key].dim() != 2:
            raise DLFError(f"{source}: {MMSA_PREFIX}bert.{key} is missing or not a matrix; this is not a complete "
                           f"BERT_MAG state_dict")
    width, d_v = renamed["MAG.W_v.weight"].shape
    return {"l": int(width), "a": int(renamed["MAG.W_a.weight"].shape[1]), "v": int(d_v)}


def convert_official_state(state: Mapping[str, torch.Tensor], corpus: str, pretrained: str | None = None,
                           source: str = "state_dict", dims=None, seq_lens=None) -> Converted:
    """An MMSA BERT_MAG state_dict (with or without its BERT tensors) -> a ``mag_bert`` model (eval mode)."""
    renamed, dropped = _rename(state, source)
    widths = _gate_widths(renamed, source)
    has_bert = any(k.startswith(BERT_PREFIX) for k in renamed)
    base = preset(corpus, "mag_bert")
    given = bool(pretrained)
    pretrained = pretrained or (None if has_bert else base.model.pretrained)
    cfg = apply_overrides(base, {"model.pretrained": pretrained}, source="--pretrained") if given else base
    bert_config = bert_architecture(renamed, pretrained, widths["l"], f"{MMSA_PREFIX}bert.MAG.W_v.weight, the gate",
                                    source, _mmsa, given)
    lens = {m: int(seq_lens[m]) for m in "lav"} if seq_lens else dict(ALIGNED_LENS)
    model = build_model(cfg, widths, lens, bert_config=bert_config if has_bert else None)
    load_checked(model, renamed, source, "MMSA's BERT_MAG", _mmsa, keep=() if has_bert else (BERT_PREFIX,),
                 unknown_hint="they do not fit a BERT_MAG of this BERT (--pretrained FOLDER names the one it "
                              "was trained with)")
    model.eval()
    notes = [f"BERT weights from {pretrained} (the state_dict has none)" if not has_bert else
             f"BERT weights from the state_dict, architecture from {pretrained}" if given else
             "BERT weights from the state_dict, architecture from their shapes with BERT's hidden/64 = "
             f"{bert_config['num_attention_heads']} attention heads (--pretrained FOLDER gives another BERT's)"]
    if dropped:
        notes.append("dropped BERT id buffers: " + short(dropped, 4))
    return Converted(model, cfg, widths, lens, sorted(dropped), notes)


def _mmsa(name: str) -> str:
    """MMSA's key of our parameter ``name`` (for messages)."""
    return MMSA_PREFIX + ("bert." + name if name.startswith("MAG.") else name.replace(BERT_PREFIX, "bert."))
