"""TFN's config sections (MMSA 2.2.1 ``tfn``, Zadeh et al. 2017): what ``model.*`` and ``loss.*`` mean
for the ``tfn`` family, and its presets per corpus (MMSA's ``config_regression.json`` and its trainer's
recipe, see ../shared/reference/baselines/README.md sections 4 and 5). Torch-free: planning reads these.

Defaults are MMSA's MOSI values; ``PRESETS['mosei']`` holds the MOSEI differences.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from dlf.models.mmsa_config import check_mmsa_fields, mmsa_recipe, require_all_modalities, require_sequential


@dataclass(frozen=True)
class ModelConfig:
    family: str = "tfn"
    modalities: tuple[str, ...] = ("l", "a", "v")  # TFN fuses all three; other subsets are refused
    text_encoder: Literal["features"] = "features"  # the 768-d ``text`` features, as MMSA feeds them
    text_hidden: int = 128  # LSTM width of the text subnet (MMSA hidden_dims[0])
    audio_hidden: int = 32  # width of the audio subnet's three Linear layers (hidden_dims[1])
    video_hidden: int = 128  # width of the vision subnet's three Linear layers (hidden_dims[2])
    text_out: int = 32  # the text subnet's output width (Feature_t)
    post_fusion_dim: int = 64  # width of the two hidden layers of the head on the fused tensor
    audio_dropout: float = 0.3  # after the audio subnet's BatchNorm (MMSA dropouts[0])
    video_dropout: float = 0.3  # after the vision subnet's BatchNorm (dropouts[1])
    text_dropout: float = 0.3  # dropouts[2]: MMSA forces it to 0 (1-layer LSTM); see text_dropout_applied
    post_fusion_dropout: float = 0.5  # on the flattened fusion tensor (dropouts[3])
    # Quirks of the reference, kept by default:
    time_mean_over_padding: bool = True  # audio/vision = mean over every stored step, zero padding
    #   included (MMSA need_normalized); False = mean over each stream's own frames
    text_dropout_applied: bool = False  # MMSA never applies text_dropout; True applies it to the LSTM's h_n
    bounded_output: bool = True  # M = sigmoid(x) * 6 - 3 through the frozen parameters output_range and
    #   output_shift (always in (-3, 3)); False = the head's raw linear output x


@dataclass(frozen=True)
class LossConfig:
    task: float = 1.0  # weight of the L1 loss of M (MMSA's criterion; TFN has no other term)


# MMSA's recipe (README section 5): Adam without weight decay, batch 32 / lr 1e-3 on MOSI and
# 128 / 5e-3 on MOSEI, plus the recipe every MMSA trainer shares; the unaligned file.
PRESETS: dict[str, dict[str, Any]] = {
    "mosi": mmsa_recipe(batch_size=32, lr=1e-3, weight_decay=0.0, aligned=False),
    "mosei": {**mmsa_recipe(batch_size=128, lr=5e-3, weight_decay=0.0, aligned=False),
              "model.audio_hidden": 16, "model.text_out": 128, "model.post_fusion_dim": 16, "model.audio_dropout": 0.4,
              "model.video_dropout": 0.4, "model.text_dropout": 0.4, "model.post_fusion_dropout": 0.4},
}


def check(cfg: Any, source: str) -> None:
    """Cross-field checks of a TFN run config: the fusion is a product over all three modalities, and
    BatchNorm keeps training to one micro-batch at a time."""
    check_mmsa_fields(cfg, source, ("text_hidden", "audio_hidden", "video_hidden", "text_out", "post_fusion_dim"),
                      ("audio_dropout", "video_dropout", "text_dropout", "post_fusion_dropout"))
    require_all_modalities(cfg, source, "tfn")
    require_sequential(cfg, source, "tfn")
