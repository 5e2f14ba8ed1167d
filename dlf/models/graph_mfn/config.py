"""Graph-MFN's config sections (MMSA 2.2.1 ``graph_mfn``, Zadeh et al. 2018, MFN with the Dynamic Fusion
Graph): what ``model.*`` and ``loss.*`` mean for the ``graph_mfn`` family, and its presets per corpus
(MMSA's ``config_regression.json`` and its trainer's recipe, ../shared/reference/baselines/README.md
sections 4 and 5). Torch-free: planning a study reads these.

Defaults are MMSA's MOSI values; ``PRESETS['mosei']`` holds the MOSEI differences.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from dlf.models.mmsa_config import check_mmsa_fields, mmsa_recipe, require_all_modalities


@dataclass(frozen=True)
class ModelConfig:
    family: str = "graph_mfn"
    modalities: tuple[str, ...] = ("l", "a", "v")  # the DFG has a node per subset of l, a, v; no other set
    text_encoder: Literal["features"] = "features"  # the 768-d ``text`` features, as MMSA feeds them
    text_hidden: int = 256  # LSTMCell width of the text stream, and of its singleton vertex (hidden_dims[0])
    audio_hidden: int = 32  # the same for audio (hidden_dims[1])
    video_hidden: int = 256  # the same for vision (hidden_dims[2])
    inner_node_dim: int = 64  # width k of every DFG node (n01, n02, n12, n012) and of tau
    mem_size: int = 300  # width of the gated memory (memsize)
    att2_hidden: int = 32  # hidden width of the network proposing the memory update from tau (NNConfig)
    att2_dropout: float = 0.0
    gamma1_hidden: int = 128  # hidden width of the retain gate gamma1 (gamma1Config)
    gamma1_dropout: float = 0.5
    gamma2_hidden: int = 64  # hidden width of the update gate gamma2 (gamma2Config)
    gamma2_dropout: float = 0.5
    out_hidden: int = 256  # hidden width of the output head (outConfig)
    out_dropout: float = 0.0
    # Quirks of the reference, kept by default:
    frozen_dfg_nodes: bool = True  # MMSA keeps the four node networks n01, n02, n12, n012 in a plain dict:
    #   no parameters, never trained (they stay at their random init) and not counted; here they are
    #   buffers (saved in checkpoints, moved by .to()). False = trainable, counted parameters (a deviation)
    shared_pattern_init: bool = True  # the second Linear of every node network and of t_network starts as
    #   a copy of one "pattern" layer (MMSA deep-copies it), so all five start equal; False = each its own


@dataclass(frozen=True)
class LossConfig:
    task: float = 1.0  # weight of the L1 loss of M (MMSA's criterion; Graph-MFN has no other term)


# MMSA's recipe (README section 5): batch 32 / lr 2e-3 / weight decay 5e-3 on MOSI, 64 / 2e-3 / 1e-3 on
# MOSEI; the aligned file (need_data_aligned), raw 50-step sequences.
PRESETS: dict[str, dict[str, Any]] = {
    "mosi": mmsa_recipe(batch_size=32, lr=2e-3, weight_decay=5e-3, aligned=True),
    "mosei": {**mmsa_recipe(batch_size=64, lr=2e-3, weight_decay=1e-3, aligned=True),
              "model.text_hidden": 64, "model.audio_hidden": 16, "model.video_hidden": 64, "model.inner_node_dim": 128,
              "model.att2_dropout": 0.5, "model.gamma1_hidden": 64, "model.gamma1_dropout": 0.0,
              "model.gamma2_hidden": 256, "model.gamma2_dropout": 0.7, "model.out_hidden": 128,
              "model.out_dropout": 0.7},
}

SIZES = ("text_hidden", "audio_hidden", "video_hidden", "inner_node_dim", "mem_size", "att2_hidden",
         "gamma1_hidden", "gamma2_hidden", "out_hidden")
DROPOUTS = ("att2_dropout", "gamma1_dropout", "gamma2_dropout", "out_dropout")


def check(cfg: Any, source: str) -> None:
    """Cross-field checks of a Graph-MFN run config: the DFG has a vertex per subset of l, a, v, so all
    three are needed. (No BatchNorm: gradient accumulation is allowed.)"""
    check_mmsa_fields(cfg, source, SIZES, DROPOUTS)
    require_all_modalities(cfg, source, "graph_mfn")
