"""DLF's official-checkpoint key mapping: the official ``state_dict`` (pwang322/DLF, MOSI or MOSEI
config) as a dlf-ablate DLF model.

The official module names map one to one onto ours (``OFFICIAL_NAMES``). The official model also
carries modules it never uses (``DEAD_MODULES``: the cosine projections, the DMD "low" heads and four
spare cross-modal transformers); they are dropped with a note, as are the fairseq ``version`` /
``_float_tensor`` buffers and BERT's pooler. BERT weights (``text_model.model.*``, MMSA's
BertTextEncoder) select the fine-tuned ``bert`` text mode. Feature widths, the kernel and the
sequence lengths are read from the weights themselves (Conv1d and triplet-projection shapes).
"""
from __future__ import annotations

from typing import Mapping

import torch

from dlf.config import apply_overrides, preset
from dlf.errors import DLFError
from dlf.models.checked_load import bert_architecture, load_checked, short
from dlf.models.registry import Converted
from dlf.models.text import BERT_PREFIX as _OUR_BERT

__all__ = ["OFFICIAL_NAMES", "DEAD_MODULES", "convert_official_state"]

_M = ("l", "v", "a")
OFFICIAL_NAMES: dict[str, str] = {
    "encoder_c": "shared_encoder",
    "proj1_c": "shared_head.proj1", "proj2_c": "shared_head.proj2", "out_layer_c": "shared_head.out",
    "trans_l_with_a": "lfa.cross.l_a", "trans_l_with_v": "lfa.cross.l_v",
    "projector_c": "fusion.c",
    "proj1": "final_head.proj1", "proj2": "final_head.proj2", "out_layer": "final_head.out",
    **{k: v for m in _M for k, v in {
        f"proj_{m}": f"input_proj.{m}", f"encoder_s_{m}": f"specific_encoders.{m}", f"decoder_{m}": f"decoders.{m}",
        f"align_c_{m}": f"triplet_proj.{m}", f"self_attentions_c_{m}": f"shared_branch.{m}",
        f"trans_{m}_mem": f"lfa.mem.{m}", f"proj1_{m}_high": f"specific_heads.{m}.proj1",
        f"proj2_{m}_high": f"specific_heads.{m}.proj2", f"out_layer_{m}_high": f"specific_heads.{m}.out",
        f"projector_{m}": f"fusion.{m}"}.items()},
}
DEAD_MODULES = frozenset(
    ["trans_a_with_l", "trans_a_with_v", "trans_v_with_l", "trans_v_with_a"]
    + [f"{p}_{m}{s}" for m in _M for p, s in (("proj_cosine", ""), ("proj1", "_low"), ("proj2", "_low"), ("out_layer", "_low"))])
_BUFFERS = (".version", ".embed_positions._float_tensor")
_BERT_DROPPED = ("pooler.", "embeddings.position_ids", "embeddings.token_type_ids")
_BERT_PREFIX = "text_model."


def _rename(state: Mapping[str, torch.Tensor], source: str) -> tuple[dict[str, torch.Tensor], set[str]]:
    """Official -> our names; returns (renamed tensors, dropped official module names). Unknown keys raise."""
    out, dropped, unknown = {}, set(), []
    for key, value in state.items():
        key = key[len("module."):] if key.startswith("module.") else key  # saved from DataParallel
        top = key.split(".", 1)[0]
        if key.endswith(_BUFFERS):
            dropped.add("fairseq buffers (version, _float_tensor)")
        elif top in DEAD_MODULES:
            dropped.add(top)
        elif key.startswith(_BERT_PREFIX):
            rest = key[len(_BERT_PREFIX):]
            rest = rest[len("model."):] if rest.startswith("model.") else rest  # MMSA BertTextEncoder.model
            if rest.startswith(_BERT_DROPPED):
                dropped.add("text_model." + rest.split(".", 1)[0] if rest.startswith("pooler.") else "BERT id buffers")
            else:
                out[_OUR_BERT + rest] = value
        elif top in OFFICIAL_NAMES:
            out[OFFICIAL_NAMES[top] + key[len(top):]] = value
        else:
            unknown.append(key)
    if unknown:
        raise DLFError(f"{source}: {len(unknown)} keys are not part of the official DLF model: {short(unknown)}; "
                       f"pass a state_dict saved by the official DLF code (pwang322/DLF)")
    return out, dropped


def _shape(state: Mapping[str, torch.Tensor], key: str, source: str) -> tuple[int, ...]:
    if key not in state:
        raise DLFError(f"{source}: missing key {key!r}; this is not a complete official DLF state_dict")
    return tuple(state[key].shape)


def _geometry(state: Mapping[str, torch.Tensor], source: str) -> tuple[dict, dict, int, int]:
    """(dims, seq_lens, kernel, d) read from the official input Conv1d and triplet-projection shapes."""
    dims, lens, kernels = {}, {}, set()
    d = _shape(state, "proj_l.weight", source)[0]
    for m in ("l", "a", "v"):
        out_c, in_c, k = _shape(state, f"proj_{m}.weight", source)
        flat = _shape(state, f"align_c_{m}.weight", source)[1]  # d * T'_m
        dims[m], lens[m] = in_c, flat // d + k - 1
        kernels.add(k)
    if len(kernels) != 1:
        raise DLFError(f"{source}: the input Conv1d kernels differ per modality ({sorted(kernels)}); not supported")
    return dims, lens, kernels.pop(), d


def convert_official_state(state: Mapping[str, torch.Tensor], corpus: str, pretrained: str | None = None,
                           source: str = "state_dict", dims=None, seq_lens=None) -> Converted:
    """An official DLF state_dict -> a dlf-ablate model (eval mode) under the ``corpus`` preset. The
    widths and lengths come from the weights themselves (``dims``/``seq_lens`` are not needed)."""
    from dlf.models.dlf.model import build_model

    dims, lens, kernel, d = _geometry({k.removeprefix("module."): v for k, v in state.items()}, source)
    renamed, dropped = _rename(state, source)
    bert = any(k.startswith(_OUR_BERT) for k in renamed)
    overrides = {"model.conv_kernel": kernel, "model.d_model": d}
    if bert:
        overrides.update({"model.text_encoder": "bert", "model.pretrained": pretrained or "bert-base-uncased"})
    cfg = apply_overrides(preset(corpus), overrides, source=f"{source}: geometry")
    notes = [f"kernel {kernel} differs from the {corpus} preset ({preset(corpus).model.conv_kernel})"] \
        if kernel != preset(corpus).model.conv_kernel else []
    bert_cfg = bert_architecture(renamed, pretrained, dims["l"], "proj_l.weight", source, _official) if bert else None
    model = build_model(cfg, dims, lens, bert_config=bert_cfg)
    load_checked(model, renamed, source, "the DLF model", _official)
    model.eval()
    notes.append("dropped official modules the forward pass never uses: " + ", ".join(sorted(dropped)))
    return Converted(model, cfg, dims, lens, sorted(dropped), notes)


_INVERSE = sorted(((v, k) for k, v in OFFICIAL_NAMES.items()), key=lambda kv: -len(kv[0]))


def _official(name: str) -> str:
    """The official key of our parameter ``name`` (for messages)."""
    if name.startswith(_OUR_BERT):
        return "text_model.model." + name[len(_OUR_BERT):]
    for ours, theirs in _INVERSE:
        if name == ours or name.startswith(ours + "."):
            return theirs + name[len(ours):]
    return name
