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
from dlf.models.mag_bert.model import build_model
from dlf.models.registry import Converted
from dlf.models.text import BERT_PREFIX, bert_config_from_state

__all__ = ["convert_official_state", "MMSA_PREFIX"]

MMSA_PREFIX = "Model.model."
_BERT_PARTS = ("embeddings.", "encoder.", "pooler.")
_ID_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")
ALIGNED_LENS = {"l": 50, "a": 50, "v": 50}  # MMSA's aligned_50 files, when no dataset is given


def _short(keys, n: int = 8) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f" ... (+{len(keys) - n} more)" if len(keys) > n else "")


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
        raise DLFError(f"{source}: {len(unknown)} keys are not part of MMSA's BERT_MAG: {_short(unknown)}; pass a "
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


def _bert_config(renamed: Mapping[str, torch.Tensor], pretrained: str | None, given: bool, has_bert: bool,
                 width: int, source: str) -> dict | None:
    """The BERT architecture to build (None: load ``pretrained`` with its weights), checked against the
    gate's width before any weights are read. ``given``: the user named ``pretrained`` (--pretrained)."""
    where = f"--pretrained {pretrained!r}" if given else f"model.pretrained={pretrained!r} (the preset's)"
    if pretrained:
        from transformers import BertConfig

        try:
            config = BertConfig.from_pretrained(pretrained).to_dict()
        except (OSError, ValueError) as err:
            raise DLFError(f"{where}: cannot read its BERT config ({str(err).splitlines()[0]}); give the folder "
                           f"(or hub name) of the BERT the model was trained with: --pretrained FOLDER") from None
    else:
        config = bert_config_from_state(renamed)
    if int(config["hidden_size"]) != width:
        bert = where if pretrained else f"{source}: the BERT in the state_dict"
        raise DLFError(f"{bert}: BERT width {config['hidden_size']}, but the gate's weights expect {width} "
                       f"({MMSA_PREFIX}bert.MAG.W_v.weight); give the BERT the model was trained with")
    return config if has_bert else None


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
    bert_config = _bert_config(renamed, pretrained, given, has_bert, widths["l"], source)
    lens = {m: int(seq_lens[m]) for m in "lav"} if seq_lens else dict(ALIGNED_LENS)
    model = build_model(cfg, widths, lens, bert_config=bert_config)
    _load(model, renamed, has_bert, source)
    model.eval()
    notes = [f"BERT weights from {pretrained} (the state_dict has none)" if not has_bert else
             f"BERT weights from the state_dict, architecture from {pretrained}" if given else
             "BERT weights from the state_dict, architecture from their shapes with BERT's hidden/64 = "
             f"{bert_config['num_attention_heads']} attention heads (--pretrained FOLDER gives another BERT's)"]
    if dropped:
        notes.append("dropped BERT id buffers: " + _short(dropped, 4))
    return Converted(model, cfg, widths, lens, sorted(dropped), notes)


def _load(model: torch.nn.Module, renamed: Mapping[str, torch.Tensor], has_bert: bool, source: str) -> None:
    own = model.state_dict()
    expected = {k for k in own if has_bert or not k.startswith(BERT_PREFIX)}
    mmsa = lambda k: MMSA_PREFIX + ("bert." + k if k.startswith("MAG.") else k.replace(BERT_PREFIX, "bert."))  # noqa: E731
    missing = sorted(expected - set(renamed))
    if missing:
        raise DLFError(f"{source}: {len(missing)} tensors of MMSA's BERT_MAG are missing: "
                       f"{_short(map(mmsa, missing))}; this is not a complete BERT_MAG state_dict")
    extra = sorted(set(renamed) - expected)
    if extra:
        raise DLFError(f"{source}: {len(extra)} keys do not fit a BERT_MAG of this BERT: {_short(map(mmsa, extra))}")
    bad = [f"{mmsa(k)} {tuple(v.shape)} (expected {tuple(own[k].shape)})" for k, v in renamed.items()
           if v.shape != own[k].shape]
    if bad:
        raise DLFError(f"{source}: tensor shapes do not fit one BERT_MAG model: {_short(bad, 4)}")
    floats = {k: v.float() if v.is_floating_point() else v for k, v in renamed.items()}  # MMSA may save half
    model.load_state_dict({**own, **floats}, strict=True)
