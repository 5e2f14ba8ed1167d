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
from dlf.models.misa.model import build_model
from dlf.models.mmsa_common import UNALIGNED_LENS
from dlf.models.registry import Converted
from dlf.models.text import BERT_PREFIX, bert_config_from_state

__all__ = ["convert_official_state"]

PREFIX, MMSA_BERT = "Model.", "bertmodel.model."
_ID_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")
# the weights the sizes are read from (all matrices)
_SIZES = ("project_t.project_t.weight", "vrnn1.weight_ih_l0", "arnn1.weight_ih_l0", "transformer_encoder.layers.0.linear1.weight")


def _short(keys, n: int = 8) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f" ... (+{len(keys) - n} more)" if len(keys) > n else "")


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
    raise DLFError(f"{source}: {len(keys)} keys are not part of MMSA's MISA: {_short(keys)}; pass a state_dict "
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
        raise DLFError(f"{source}: {len(missing)} tensors of MMSA's MISA are missing: {_short(missing)}; "
                       f"this is not a complete MISA state_dict")
    for key in _SIZES:
        if renamed[key].dim() != 2:
            raise DLFError(f"{source}: {_mmsa(key)} has shape {tuple(renamed[key].shape)}; expected a matrix")


def _bert_config(renamed: Mapping[str, torch.Tensor], pretrained: str | None, given: bool, width: int,
                 source: str) -> dict:
    """The BERT architecture: ``pretrained``'s config, else read from the state's BERT shapes; its width
    checked against project_t's input before any weights are read."""
    where = f"--pretrained {pretrained!r}" if given else f"model.pretrained={pretrained!r} (the preset's)"
    if pretrained:
        from transformers import BertConfig

        try:
            config = BertConfig.from_pretrained(pretrained).to_dict()
        except (OSError, ValueError) as err:
            raise DLFError(f"{where}: cannot read its BERT config ({str(err).splitlines()[0]}); give the folder "
                           f"(or hub name) of the BERT the model was trained with: --pretrained FOLDER") from None
    else:
        try:
            config = bert_config_from_state(renamed)
        except KeyError as err:
            raise DLFError(f"{source}: BERT tensor {_mmsa(err.args[0])} is missing; this is not a complete MISA "
                           f"state_dict (or strip every {PREFIX}{MMSA_BERT} key and give --pretrained FOLDER)") from None
    if int(config["hidden_size"]) != width:
        bert = where if pretrained else f"{source}: the BERT in the state_dict"
        raise DLFError(f"{bert}: BERT width {config['hidden_size']}, but the weights expect {width} "
                       f"({PREFIX}project_t.project_t.weight); give the BERT the model was trained with")
    return config


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
    bert_config = _bert_config(renamed, pretrained, given, widths["l"], source)
    lens = {m: int(seq_lens[m]) for m in "lav"} if seq_lens else dict(UNALIGNED_LENS.get(corpus, UNALIGNED_LENS["mosi"]))
    model = build_model(cfg, widths, lens, bert_config=bert_config if has_bert else None)
    _load(model, renamed, has_bert, source)
    model.eval()
    notes = [f"BERT weights from {pretrained} (the state_dict has none)" if not has_bert else
             f"BERT weights from the state_dict, architecture from {pretrained}" if given else
             "BERT weights from the state_dict, architecture from their shapes with BERT's hidden/64 = "
             f"{bert_config['num_attention_heads']} attention heads (--pretrained FOLDER gives another BERT's)",
             f"model.fusion_heads={cfg.model.fusion_heads} from the {corpus} preset (no weight shape records it)"]
    notes += [f"{k}={v} from the weights (the {corpus} preset has {getattr(base.model, k[6:])})"
              for k, v in overrides.items() if k != "model.pretrained" and getattr(base.model, k[6:]) != v]
    if dropped:
        notes.append("dropped BERT id buffers: " + _short(dropped, 4))
    return Converted(model, cfg, widths, lens, sorted(dropped), notes)


def _load(model: torch.nn.Module, renamed: Mapping[str, torch.Tensor], has_bert: bool, source: str) -> None:
    own = model.state_dict()
    expected = {k for k in own if has_bert or not k.startswith(BERT_PREFIX)}
    missing = sorted(expected - set(renamed))
    if missing:
        raise DLFError(f"{source}: {len(missing)} tensors of MMSA's MISA are missing: {_short(map(_mmsa, missing))}; "
                       f"this is not a complete MISA state_dict")
    extra = sorted(set(renamed) - expected)
    if extra:
        raise DLFError(f"{source}: {len(extra)} keys do not fit a MISA with this BERT: {_short(map(_mmsa, extra))}")
    bad = [f"{_mmsa(k)} {tuple(v.shape)} (expected {tuple(own[k].shape)})" for k, v in renamed.items()
           if v.shape != own[k].shape]
    if bad:
        raise DLFError(f"{source}: tensor shapes do not fit one MISA model: {_short(bad, 4)}")
    floats = {k: v.float() if v.is_floating_point() else v for k, v in renamed.items()}  # MMSA may save half
    model.load_state_dict({**own, **floats}, strict=True)
