"""MMSA's MISA ``state_dict`` as a dlf-ablate ``misa`` model.

MMSA's names map onto ours by prefix (AMIO holds the model as ``Model``, MISA its BERT encoder as
``bertmodel`` and that its transformers model as ``model``):

    Model.bertmodel.model.<rest>   -> text_encoder.bert.<rest>
    Model.<module>.<rest>          -> <module>.<rest>          (every other module keeps MMSA's name)

BERT's id buffers (``embeddings.position_ids`` / ``token_type_ids``, saved by older transformers) are
dropped. The BERT tensors may be absent (the parity fixture stores them apart, and a user may strip
them): BERT is then loaded with its weights from ``--pretrained`` (else the preset's model.pretrained,
MMSA's bert-base-uncased), and the rest is loaded strictly on top. The sizes come from the weights
(hidden_size, the feed-forward width, the audio / vision widths); the BERT must be as wide as
project_t's input. The fusion's head count is in no shape: it is the preset's (2, MMSA's).
"""
from __future__ import annotations

from typing import Mapping

import torch

from dlf.config import apply_overrides, preset
from dlf.errors import DLFError
from dlf.models.checked_load import bert_architecture, load_checked, short
from dlf.models.misa.model import build_model
from dlf.models.mmsa_common import UNALIGNED_LENS
from dlf.models.registry import Converted
from dlf.models.text import BERT_PREFIX

__all__ = ["convert_official_state"]

PREFIX, MMSA_BERT = "Model.", "bertmodel.model."
_ID_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")
# the weights the sizes are read from (all matrices)
_SIZES = ("project_t.project_t.weight", "vrnn1.weight_ih_l0", "arnn1.weight_ih_l0", "transformer_encoder.layers.0.linear1.weight")


def _mmsa(name: str) -> str:
    """MMSA's key of our parameter ``name`` (for messages)."""
    return PREFIX + (MMSA_BERT + name[len(BERT_PREFIX):] if name.startswith(BERT_PREFIX) else name)


def _rename(state: Mapping[str, torch.Tensor], source: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """MMSA names -> ours, and the dropped id buffers; keys without the ``Model.`` prefix are refused."""
    out, dropped, unknown = {}, [], []
    for key, value in state.items():
        name = key.removeprefix("module.")
        if not name.startswith(PREFIX):
            unknown.append(key)
            continue
        name = name[len(PREFIX):]
        if name.startswith(MMSA_BERT) and name[len(MMSA_BERT):] in _ID_BUFFERS:
            dropped.append(key)
        else:
            out[BERT_PREFIX + name[len(MMSA_BERT):] if name.startswith(MMSA_BERT) else name] = value
    if unknown:
        _refuse_unknown(unknown, source)
    return out, dropped


def _refuse_unknown(keys, source: str) -> None:
    raise DLFError(f"{source}: {len(keys)} keys are not part of MMSA's MISA: {short(keys)}; pass a state_dict "
                   f"saved by MMSA's MISA (keys {PREFIX}project_t..., {PREFIX}bertmodel.model...), or choose the "
                   f"family that saved it with --family")


def _check_names(renamed: Mapping[str, torch.Tensor], cfg, source: str) -> None:
    """Unknown and missing keys outside BERT, against a MISA built on the meta device (names only)."""
    with torch.device("meta"):
        names = set(build_model(apply_overrides(cfg, {"model.text_encoder": "features"}), {"l": 8, "a": 2, "v": 2},
                                {"l": 2, "a": 2, "v": 2}).state_dict())
    ours = {k for k in renamed if not k.startswith(BERT_PREFIX)}
    if ours - names:
        _refuse_unknown([_mmsa(k) for k in ours - names], source)
    if names - ours:
        missing = [_mmsa(k) for k in names - ours]
        raise DLFError(f"{source}: {len(missing)} tensors of MMSA's MISA are missing: {short(missing)}; "
                       f"this is not a complete MISA state_dict")
    for key in _SIZES:
        if renamed[key].dim() != 2:
            raise DLFError(f"{source}: {_mmsa(key)} has shape {tuple(renamed[key].shape)}; expected a matrix")


def convert_official_state(state: Mapping[str, torch.Tensor], corpus: str, pretrained: str | None = None,
                           source: str = "state_dict", dims=None, seq_lens=None) -> Converted:
    """An MMSA MISA state_dict (with or without its BERT tensors) -> a ``misa`` model (eval mode)."""
    renamed, dropped = _rename(state, source)
    base = preset(corpus, "misa")
    _check_names(renamed, base, source)
    hidden, width = renamed["project_t.project_t.weight"].shape
    widths = {"l": int(width), "a": int(renamed["arnn1.weight_ih_l0"].shape[1]),
              "v": int(renamed["vrnn1.weight_ih_l0"].shape[1])}
    has_bert = any(k.startswith(BERT_PREFIX) for k in renamed)
    given = bool(pretrained)
    pretrained = pretrained or (None if has_bert else base.model.pretrained)
    overrides = {"model.hidden_size": int(hidden),
                 "model.fusion_ff": int(renamed["transformer_encoder.layers.0.linear1.weight"].shape[0])}
    if pretrained:
        overrides["model.pretrained"] = pretrained
    cfg = apply_overrides(base, overrides, source=f"{source}: sizes read from the weights")
    bert_config = bert_architecture(renamed, pretrained, widths["l"], f"{PREFIX}project_t.project_t.weight",
                                    source, _mmsa, given)
    lens = {m: int(seq_lens[m]) for m in "lav"} if seq_lens else dict(UNALIGNED_LENS.get(corpus, UNALIGNED_LENS["mosi"]))
    model = build_model(cfg, widths, lens, bert_config=bert_config if has_bert else None)
    load_checked(model, renamed, source, "MMSA's MISA", _mmsa, keep=() if has_bert else (BERT_PREFIX,),
                 unknown_hint="they do not fit a MISA with this BERT (--pretrained FOLDER names the one it was "
                              "trained with)")
    model.eval()
    notes = [f"BERT weights from {pretrained} (the state_dict has none)" if not has_bert else
             f"BERT weights from the state_dict, architecture from {pretrained}" if given else
             "BERT weights from the state_dict, architecture from their shapes with BERT's hidden/64 = "
             f"{bert_config['num_attention_heads']} attention heads (--pretrained FOLDER gives another BERT's)",
             f"model.fusion_heads={cfg.model.fusion_heads} from the {corpus} preset (no weight shape records it)"]
    notes += [f"{k}={v} from the weights (the {corpus} preset has {getattr(base.model, k[6:])})"
              for k, v in overrides.items() if k != "model.pretrained" and getattr(base.model, k[6:]) != v]
    if dropped:
        notes.append("dropped BERT id buffers: " + short(dropped, 4))
    return Converted(model, cfg, widths, lens, sorted(dropped), notes)
