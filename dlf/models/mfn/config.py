"""MFN's config sections (MMSA 2.2.1 ``mfn``, Zadeh et al. 2018, Memory Fusion Network): what
``model.*`` and ``loss.*`` mean for the ``mfn`` family, and its presets per corpus (MMSA's
``config_regression.json`` and its trainer's recipe, ../shared/reference/baselines/README.md sections
4 and 5). Torch-free: planning a study reads these.

Defaults are MMSA's MOSI values; ``PRESETS['mosei']`` holds the MOSEI differences.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from dlf.models.mmsa_config import check_mmsa_fields, mmsa_recipe, require_all_modalities


@dataclass(frozen=True)
class ModelConfig:
    family: str = "mfn"
    modalities: tuple[str, ...] = ("l", "a", "v")  # MFN's memory reads all three; other subsets are refused
    text_encoder: Literal["features"] = "features"  # the 768-d ``text`` features, as MMSA feeds them
    text_hidden: int = 256  # LSTMCell width of the text stream (MMSA hidden_dims[0])
    audio_hidden: int = 32  # LSTMCell width of the audio stream (hidden_dims[1])
    video_hidden: int = 256  # LSTMCell width of the vision stream (hidden_dims[2])
    mem_size: int = 400  # width of the multi-view gated memory (memsize)
    # The attention over the cells of two steps (MMSA windowsize 2; its input is 2 x the three widths):
    att1_hidden: int = 32  # hidden width of the attention network (NN1Config shapes)
    att1_dropout: float = 0.2  # NN1Config drop
    att2_hidden: int = 64  # hidden width of the network proposing the memory update c_hat (NN2Config)
    att2_dropout: float = 0.0
    gamma1_hidden: int = 256  # hidden width of the retain gate gamma1 (gamma1Config)
    gamma1_dropout: float = 0.7
    gamma2_hidden: int = 32  # hidden width of the update gate gamma2 (gamma2Config)
    gamma2_dropout: float = 0.5
    out_hidden: int = 128  # hidden width of the output head (outConfig)
    out_dropout: float = 0.0
    # Quirks of the reference, kept by default:
    av_time_mean: bool = True  # MMSA need_normalized: the audio and vision LSTMCells see their stream's
    #   time mean at every text step; False = the streams themselves, step by step (as in the MFN paper;
    #   a stream of another length is avg-pooled to the text's as MMSA's AMIO does)
    time_mean_over_padding: bool = True  # that mean runs over every stored step, zero padding included
    #   (50 aligned, 375/500 unaligned); False = over the stream's own frames (to its last non-zero one)


@dataclass(frozen=True)
class LossConfig:
    task: float = 1.0  # weight of the L1 loss of M (MMSA's criterion; MFN has no other term)


# MMSA's recipe (README section 5): batch 128 / lr 2e-3 / no weight decay on MOSI, 64 / 5e-4 / 1e-4 on
# MOSEI; the aligned file (need_data_aligned).
PRESETS: dict[str, dict[str, Any]] = {
    "mosi": mmsa_recipe(batch_size=128, lr=2e-3, weight_decay=0.0, aligned=True),
    "mosei": {**mmsa_recipe(batch_size=64, lr=5e-4, weight_decay=1e-4, aligned=True),
              "model.text_hidden": 128, "model.video_hidden": 128, "model.mem_size": 128, "model.att1_hidden": 128,
              "model.att2_hidden": 128, "model.att2_dropout": 0.5, "model.gamma2_hidden": 256,
              "model.gamma2_dropout": 0.0, "model.out_dropout": 0.5},
}

SIZES = ("text_hidden", "audio_hidden", "video_hidden", "mem_size", "att1_hidden", "att2_hidden",
         "gamma1_hidden", "gamma2_hidden", "out_hidden")
DROPOUTS = ("att1_dropout", "att2_dropout", "gamma1_dropout", "gamma2_dropout", "out_dropout")


def check(cfg: Any, source: str) -> None:
    """Cross-field checks of an MFN run config: the memory fuses the three streams step by step, so all
    three are needed. (No BatchNorm: gradient accumulation is allowed.)"""
    check_mmsa_fields(cfg, source, SIZES, DROPOUTS)
    require_all_modalities(cfg, source, "mfn")
