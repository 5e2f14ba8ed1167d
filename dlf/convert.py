"""Import the official DLF ``state_dict`` (pwang322/DLF, MOSI or MOSEI config) as a dlf-ablate model.

The official module names map one to one onto ours (``OFFICIAL_NAMES``). The official model also
carries modules it never uses (``DEAD_MODULES``: the cosine projections, the DMD "low" heads and four
spare cross-modal transformers); they are dropped with a note, as are the fairseq ``version`` /
``_float_tensor`` buffers and BERT's pooler. BERT weights (``text_model.model.*``, MMSA's
BertTextEncoder) select the fine-tuned ``bert`` text mode. Feature widths, the kernel and the
sequence lengths are read from the weights themselves (Conv1d and triplet-projection shapes).
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch

from dlf.config import RunConfig, apply_overrides, preset
from dlf.errors import DLFError

__all__ = ["OFFICIAL_NAMES", "DEAD_MODULES", "Converted", "convert_official_state", "convert_official",
           "load_official_state", "bert_config_from_state"]

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
_BERT_PREFIX, _OUR_BERT = "text_model.", "text_encoder.bert."


@dataclass
class Converted:
    model: torch.nn.Module
    config: RunConfig
    dims: dict[str, int]
    seq_lens: dict[str, int]
    dropped: list[str] = field(default_factory=list)  # official modules / buffers left out
    notes: list[str] = field(default_factory=list)


def _short(keys, n: int = 8) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f" ... (+{len(keys) - n} more)" if len(keys) > n else "")


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
        raise DLFError(f"{source}: {len(unknown)} keys are not part of the official DLF model: {_short(unknown)}; "
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


def bert_config_from_state(state: Mapping[str, torch.Tensor], prefix: str = _OUR_BERT) -> dict:
    """A BertConfig dict inferred from BERT weight shapes; heads = hidden // 64 (the BERT-family convention)."""
    vocab, hidden = state[prefix + "embeddings.word_embeddings.weight"].shape
    layers = {int(m.group(1)) for k in state if (m := re.match(re.escape(prefix) + r"encoder\.layer\.(\d+)\.", k))}
    return {"model_type": "bert", "vocab_size": int(vocab), "hidden_size": int(hidden),
            "num_hidden_layers": len(layers), "num_attention_heads": max(1, int(hidden) // 64),
            "intermediate_size": int(state[prefix + "encoder.layer.0.intermediate.dense.weight"].shape[0]),
            "max_position_embeddings": int(state[prefix + "embeddings.position_embeddings.weight"].shape[0]),
            "type_vocab_size": int(state[prefix + "embeddings.token_type_embeddings.weight"].shape[0])}


def _bert_config(renamed: Mapping[str, torch.Tensor], pretrained: str | None) -> dict:
    if pretrained:
        from transformers import BertConfig

        try:
            return BertConfig.from_pretrained(pretrained).to_dict()
        except (OSError, ValueError) as err:
            raise DLFError(f"--pretrained {pretrained!r}: cannot read its BERT config ({str(err).splitlines()[0]})") from None
    return bert_config_from_state(renamed)


def convert_official_state(state: Mapping[str, torch.Tensor], family: str, pretrained: str | None = None,
                           source: str = "state_dict") -> Converted:
    """An official DLF state_dict -> a dlf-ablate model (eval mode) under ``preset(family)``."""
    from dlf.model import build_model

    dims, lens, kernel, d = _geometry({k.removeprefix("module."): v for k, v in state.items()}, source)
    renamed, dropped = _rename(state, source)
    bert = any(k.startswith(_OUR_BERT) for k in renamed)
    overrides = {"model.conv_kernel": kernel, "model.d_model": d}
    if bert:
        overrides.update({"model.text_encoder": "bert", "model.pretrained": pretrained or "bert-base-uncased"})
    cfg = apply_overrides(preset(family), overrides, source=f"{source}: geometry")
    notes = [f"kernel {kernel} differs from the {family} preset ({preset(family).model.conv_kernel})"] \
        if kernel != preset(family).model.conv_kernel else []
    bert_cfg = _bert_config(renamed, pretrained) if bert else None
    model = build_model(cfg, dims, lens, bert_config=bert_cfg)
    _load(model, renamed, source)
    model.eval()
    notes.append("dropped official modules the forward pass never uses: " + ", ".join(sorted(dropped)))
    return Converted(model, cfg, dims, lens, sorted(dropped), notes)


def _load(model: torch.nn.Module, renamed: Mapping[str, torch.Tensor], source: str) -> None:
    inverse = {v: k for k, v in OFFICIAL_NAMES.items()}
    own = model.state_dict()

    def official(name: str) -> str:
        if name.startswith(_OUR_BERT):
            return "text_model.model." + name[len(_OUR_BERT):]
        for ours, theirs in sorted(inverse.items(), key=lambda kv: -len(kv[0])):
            if name == ours or name.startswith(ours + "."):
                return theirs + name[len(ours):]
        return name

    missing = [official(k) for k in own if k not in renamed]
    if missing:
        raise DLFError(f"{source}: {len(missing)} tensors of the DLF model are missing: {_short(missing)}")
    bad = [f"{official(k)} {tuple(v.shape)} (expected {tuple(own[k].shape)})" for k, v in renamed.items()
           if k in own and v.shape != own[k].shape]
    if bad:
        raise DLFError(f"{source}: tensor shapes do not fit the model: {_short(bad, 4)}")
    model.load_state_dict(renamed, strict=True)


def load_official_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The state_dict in an official checkpoint file (a bare state_dict, or one under 'state_dict'/'model')."""
    path = Path(path)
    if not path.is_file():
        raise DLFError(f"{path}: file not found; give the official checkpoint (e.g. DLFmosi.pth)")
    try:
        with warnings.catch_warnings():  # a non-checkpoint pickle warns before it fails
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user error
        raise DLFError(f"{path}: not a readable PyTorch checkpoint ({type(err).__name__})") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not all(torch.is_tensor(v) for v in obj.values()):
        raise DLFError(f"{path}: not a state_dict (a mapping of names to tensors)")
    return dict(obj)


def convert_official(checkpoint: str | Path, dataset: str, out: str | Path, data_root: str | None = None,
                     pretrained: str | None = None, overwrite: bool = False) -> Converted:
    """Convert an official checkpoint for ``dataset`` and save it as a dlf-ablate checkpoint at ``out``."""
    from dlf.checkpoint import dataset_meta, save_checkpoint
    from dlf.data import load_dataset
    from dlf.fingerprint import check_output_file

    out = Path(out)
    check_output_file(out, "--out", "model.pt")
    if out.exists() and not overwrite:
        raise DLFError(f"--out {out}: file exists; choose another path or pass --force to replace it")
    state = load_official_state(checkpoint)
    ds = load_dataset(dataset, data_root=data_root)
    conv = convert_official_state(state, ds.family, pretrained, source=str(checkpoint))
    for m, name in (("l", "text"), ("a", "audio"), ("v", "vision")):
        want = (conv.dims[m], conv.seq_lens[m])
        have = (ds.dims[m], ds.seq_lens[m])
        if (m != "l" or conv.config.model.text_encoder == "features") and want != have:
            raise DLFError(f"{checkpoint}: the weights expect {name} width {want[0]} and length {want[1]}, "
                           f"but dataset {dataset!r} has {have[0]} and {have[1]}; use the dataset the checkpoint was trained on")
    save_checkpoint(out, conv.model, conv.config, conv.dims, conv.seq_lens, dataset_meta(ds),
                    extra={"converted_from": str(Path(checkpoint).resolve()), "dropped": conv.dropped,
                           "notes": conv.notes})
    return conv
