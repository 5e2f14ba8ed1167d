"""MulT's config sections (MMSA 2.2.1 ``mult``, regression): what ``model.*`` and ``loss.*`` mean, and
its presets, which carry MMSA's training recipe per corpus.

Defaults are MMSA's MOSI config (``config_regression.json``, non-tuning); ``PRESETS['mosei']`` holds
the MOSEI differences. Torch-free: planning a study reads these.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from dlf.errors import DLFError
from dlf.models.mmsa_config import MMSA_RECIPE, require_all_modalities

MODALITIES = ("l", "a", "v")


@dataclass(frozen=True)
class ModelConfig:
    family: str = "mult"
    # every modality is a query over the two others: MulT is built for exactly l, a and v
    modalities: tuple[str, ...] = MODALITIES
    text_encoder: Literal["features"] = "features"  # 768-d text features (MMSA use_bert false)
    d_model: int = 50  # width of every crossmodal stream (dst_feature_dim_nheads[0]); memories are 2 * d_model
    n_heads: int = 10  # attention heads in every encoder (dst_feature_dim_nheads[1])
    n_levels: int = 4  # layers of the six crossmodal encoders (nlevels)
    mem_levels: int = 3  # the three memory encoders have max(n_levels, mem_levels) layers (MMSA: layers=3)
    conv_kernel_l: int = 5  # input Conv1d kernel per modality (conv1d_kernel_size_l/a/v); no padding
    conv_kernel_a: int = 5
    conv_kernel_v: int = 5
    attn_mask: bool = True  # the MulT mask: query i sees keys j <= i + |T_k - T_q| (causal for self-attention)
    positions: bool = False  # sinusoidal positions in every encoder; MMSA leaves them out
    # Quirk (MulT/MMSA): a modality whose input width already equals d_model skips its Conv1d (no length
    # reduction; the Conv1d weights still exist, unused). Never the case for MOSI/MOSEI widths.
    skip_equal_width_conv: bool = True
    text_dropout: float = 0.5  # on the text features, before the Conv1d
    attn_dropout: float = 0.3  # on attention weights whose keys are text (a<-l, v<-l) and in the memories
    attn_dropout_a: float = 0.2  # keys from audio (l<-a, v<-a)
    attn_dropout_v: float = 0.0  # keys from vision (l<-v, a<-v)
    relu_dropout: float = 0.0  # inside each layer's feed-forward block
    res_dropout: float = 0.0  # on each sub-layer's output before its residual add
    embed_dropout: float = 0.2  # on every encoder's scaled input (query; key and value separately)
    output_dropout: float = 0.5  # inside the residual head proj2(dropout(relu(proj1(x)))) + x


@dataclass(frozen=True)
class LossConfig:
    task: float = 1.0  # weight of the L1 loss of M against the label (MMSA: the only term)


# MMSA's protocol for every baseline (README section 3) and MULT's own recipe (section 5): Adam with
# the config's weight_decay unused (0), 8 micro-batches summed per step, clip_grad_value 0.6 after
# every backward, ReduceLROnPlateau(min, x0.1) on the rounded validation L1, early stop after 8.
_RECIPE: dict[str, Any] = {
    **MMSA_RECIPE, "train.weight_decay": 0.0, "train.accumulation": 8, "train.clip_value": 0.6,
    "train.scheduler": "plateau", "train.plateau_factor": 0.1, "data.aligned": False,
}

PRESETS: dict[str, dict[str, Any]] = {
    "mosi": {**_RECIPE, "train.batch_size": 16, "train.lr": 2e-3, "train.plateau_patience": 5},
    "mosei": {
        **_RECIPE, "train.batch_size": 4, "train.lr": 5e-4, "train.plateau_patience": 20,
        "model.d_model": 30, "model.n_heads": 6, "model.conv_kernel_a": 1, "model.conv_kernel_v": 3,
        "model.text_dropout": 0.3, "model.attn_dropout": 0.4, "model.attn_dropout_a": 0.0, "model.embed_dropout": 0.0,
    },
}


def check(cfg: Any, source: str) -> None:
    """Cross-field checks of a MulT run config that a single field's domain cannot express."""
    require_all_modalities(cfg, source, "mult")  # each modality attends to the two others
    m = cfg.model
    if m.d_model < 1 or m.n_heads < 1 or m.d_model % m.n_heads:
        raise DLFError(f"{source}: model.d_model ({m.d_model}) must be a positive multiple of model.n_heads ({m.n_heads})")
    if min(m.n_levels, m.mem_levels, m.conv_kernel_l, m.conv_kernel_a, m.conv_kernel_v) < 1:
        raise DLFError(f"{source}: model.n_levels, model.mem_levels and model.conv_kernel_l/a/v must be >= 1")
    drops = ("text_dropout", "attn_dropout", "attn_dropout_a", "attn_dropout_v", "relu_dropout", "res_dropout",
             "embed_dropout", "output_dropout")
    for name in drops:
        if not 0.0 <= getattr(m, name) < 1.0:
            raise DLFError(f"{source}: model.{name}={getattr(m, name)} must be in [0, 1)")
    if cfg.loss.task < 0:
        raise DLFError(f"{source}: loss.task must be >= 0")
