"""DLF's config sections: what ``model.*`` and ``loss.*`` mean for the DLF family, and its presets.

Defaults reproduce the official DLF implementation on MOSI; ``PRESETS['mosei']`` holds the MOSEI
differences (official config.json, datasetParams). Torch-free: planning a study reads these.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from dlf.config import MODALITIES
from dlf.domains import count, dropout, non_negative
from dlf.errors import DLFError

TEXT_ENCODERS = ("features", "bert", "bert_frozen")
TRIPLETS = ("official", "paper")


@dataclass(frozen=True)
class ModelConfig:
    family: str = "dlf"
    fdm: bool = True  # feature disentanglement module (E_s, E_c, decoders, geometric losses)
    lfa: bool = True  # language-focused attractor; False = MulT-style cross-attention (each modality queries)
    hp: bool = True  # hierarchical predictions: shared + specific heads in the loss
    modalities: tuple[str, ...] = MODALITIES  # non-empty subset of l, a, v
    triplet: Literal["official", "paper"] = "official"
    text_encoder: Literal["features", "bert", "bert_frozen"] = "features"
    pretrained: str = "bert-base-uncased"  # hub name or local path, for the bert modes
    d_model: int = count(50, lo=4)  # >= 4: the sinusoidal position table divides by d_model // 2 - 1
    n_heads: int = count(10)
    n_levels: int = count(2)  # depth of every encoder / cross-modal transformer
    mem_levels: int = count(3)  # depth of the A->L / V->L self-attention "memory" stacks
    # w/o LFA only (lfa: false): the MulT-style replacement's width per modality (S_m projected to it by
    # a bias-free Linear, as MulT projects its inputs) and its heads; 0 = d_model / n_heads (no projection)
    crossmodal_d: int = count(0, lo=0)
    crossmodal_heads: int = count(0, lo=0)
    conv_kernel: int = count(5)  # input Conv1d kernel: 5 for MOSI, 3 for MOSEI
    attn_mask: bool = True  # causal mask in every transformer (official)
    text_dropout: float = dropout(0.5)
    attn_dropout: float = dropout(0.3)  # types l, al, vl and the *_mem stacks
    attn_dropout_a: float = dropout(0.2)  # types a, la, va
    attn_dropout_v: float = dropout(0.0)  # types v, lv, av
    embed_dropout: float = dropout(0.2)
    relu_dropout: float = dropout(0.0)
    res_dropout: float = dropout(0.0)
    output_dropout: float = dropout(0.5)


@dataclass(frozen=True)
class LossConfig:
    # Official weights: L = L_MSA + 0.1 (L_s + L_r + 0.1 (L_m + L_o)).
    lambda_r: float = non_negative(0.1)
    lambda_s: float = non_negative(0.1)
    lambda_m: float = non_negative(0.01)
    lambda_o: float = non_negative(0.01)
    beta_f: float = non_negative(1.0)
    beta_sh: float = non_negative(1.0)
    beta_l: float = non_negative(3.0)
    beta_a: float = non_negative(1.0)
    beta_v: float = non_negative(1.0)
    ortho_chunk: int = count(50)  # official L_o reshapes features into rows of this width: 50 MOSI, 10 MOSEI
    triplet_margin: float = non_negative(0.15)  # official adaptive margin = triplet_margin * |y_anchor - y_negative|


# The official trainer's do_test returns the validation L1 as round(loss, 4); selection, early
# stopping and ReduceLROnPlateau all read that rounded value.
_TRAIN = {"train.val_decimals": 4}
# Corpora differ only in these values (official config.json, datasetParams).
PRESETS: dict[str, dict[str, Any]] = {
    "mosi": {**_TRAIN},
    "mosei": {
        **_TRAIN,
        "model.conv_kernel": 3,
        "model.text_dropout": 0.1,
        "model.attn_dropout": 0.5,
        "model.attn_dropout_a": 0.0,
        "model.embed_dropout": 0.0,
        "loss.ortho_chunk": 10,
    },
}


def check(cfg: Any, source: str) -> None:
    """Cross-field checks of a DLF run config (each field's own range is checked before)."""
    m = cfg.model
    if m.d_model % m.n_heads:
        raise DLFError(f"{source}: model.d_model ({m.d_model}) must be divisible by model.n_heads ({m.n_heads})")
    width, heads = m.crossmodal_d or m.d_model, m.crossmodal_heads or m.n_heads
    if width % heads:
        raise DLFError(f"{source}: model.crossmodal_d ({width}) must be divisible by model.crossmodal_heads ({heads}); "
                       f"0 means model.d_model / model.n_heads")
    if m.d_model % cfg.loss.ortho_chunk:
        raise DLFError(f"{source}: loss.ortho_chunk ({cfg.loss.ortho_chunk}) must divide model.d_model ({m.d_model})")
