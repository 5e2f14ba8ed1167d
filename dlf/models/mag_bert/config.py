"""MAG-BERT's config sections (MMSA 2.2.1 ``bert_mag``, Rahman et al. 2020, Multimodal Adaptation Gate):
what ``model.*`` and ``loss.*`` mean for the ``mag_bert`` family, and its presets per corpus (MMSA's
``config_regression.json`` and its trainer's recipe, ../shared/reference/baselines/README.md sections 4
and 5). Torch-free: planning a study reads these.

Defaults are MMSA's MOSI values; ``PRESETS['mosei']`` holds the MOSEI differences.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from dlf.domains import dropout, non_negative, positive
from dlf.errors import DLFError
from dlf.models.mmsa_config import mmsa_recipe


@dataclass(frozen=True)
class ModelConfig:
    family: str = "mag_bert"
    modalities: tuple[str, ...] = ("l", "a", "v")  # the gate shifts the text by audio and vision: all three
    # The gate sits inside BERT, between its embeddings and its encoder, so the model reads the token ids
    # (``text_bert``) and fine-tunes its own BERT: there is no ``features`` mode.
    text_encoder: Literal["bert"] = field(default="bert", metadata={
        "note": "MAG-BERT's gate shifts the token embeddings inside BERT, so it has no features text mode"})
    # BERT to load (hub name or local folder saved with save_pretrained); its width sets the gate's.
    # Quirk of the reference, not kept: MMSA ignores its own ``pretrained`` value and always loads
    # bert-base-uncased (bert-base-chinese for Chinese data); this family loads model.pretrained.
    pretrained: str = "bert-base-uncased"
    beta_shift: float = non_negative(1.0)  # beta: the shift h may move the embedding by at most beta * |e|
    dropout_prob: float = dropout(0.3)  # after the gate's LayerNorm (MMSA dropout_prob)
    # Quirk of the reference, kept by default: the gate's LayerNorm is torch's nn.LayerNorm with its
    # default eps 1e-5, not BERT's 1e-12 (the pooled-output dropout and BERT's own are the BERT config's).
    mag_layer_norm_eps: float = positive(1e-5)


@dataclass(frozen=True)
class LossConfig:
    task: float = non_negative(1.0)  # weight of the L1 loss of M (MMSA's criterion; MAG-BERT has no other term)


# MMSA's recipe (README section 5): Adam on every parameter, BERT included, batch 32 with lr 2e-5 on MOSI
# and 1e-5 on MOSEI, no weight decay; the aligned file (word-level audio and vision).
PRESETS: dict[str, dict[str, Any]] = {
    "mosi": mmsa_recipe(batch_size=32, lr=2e-5, weight_decay=0.0, aligned=True),
    "mosei": {**mmsa_recipe(batch_size=32, lr=1e-5, weight_decay=0.0, aligned=True), "model.dropout_prob": 0.2},
}


def check(cfg: Any, source: str) -> None:
    """Cross-field checks of a MAG-BERT run config (field ranges are the fields' domains)."""
    m = cfg.model
    if tuple(m.modalities) != ("l", "a", "v"):
        raise DLFError(f"{source}: model.modalities={list(m.modalities)}: MAG-BERT shifts the text by audio and "
                       f"vision together; set model.modalities=[l,a,v]")
    if not str(m.pretrained).strip():
        raise DLFError(f"{source}: model.pretrained is empty; give a BERT hub name or a local folder")
