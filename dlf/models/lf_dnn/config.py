"""LF_DNN's config sections (MMSA 2.2.1 ``lf_dnn``): what ``model.*`` and ``loss.*`` mean for the
``lf_dnn`` family, and its presets per corpus (MMSA's ``config_regression.json`` and its trainer's
recipe, ../shared/reference/baselines/README.md sections 4 and 5). Torch-free: planning reads these.

Defaults are MMSA's MOSI values; ``PRESETS['mosei']`` holds the MOSEI differences.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from dlf.models.mmsa_config import check_mmsa_fields, mmsa_recipe, require_sequential


@dataclass(frozen=True)
class ModelConfig:
    family: str = "lf_dnn"
    modalities: tuple[str, ...] = ("l", "a", "v")  # the subnets built and fused (MMSA: all three)
    text_encoder: Literal["features"] = "features"  # the 768-d ``text`` features, as MMSA feeds them
    text_hidden: int = 128  # LSTM width of the text subnet (MMSA hidden_dims[0])
    audio_hidden: int = 16  # width of the audio subnet's three Linear layers (hidden_dims[1])
    video_hidden: int = 128  # width of the vision subnet's three Linear layers (hidden_dims[2])
    text_out: int = 256  # the text subnet's output width (Feature_t)
    post_fusion_dim: int = 128  # width of the two hidden layers of the head on the fused features
    audio_dropout: float = 0.2  # after the audio subnet's BatchNorm (MMSA dropouts[0])
    video_dropout: float = 0.2  # after the vision subnet's BatchNorm (dropouts[1])
    text_dropout: float = 0.2  # dropouts[2]: MMSA forces it to 0 (1-layer LSTM); see text_dropout_applied
    post_fusion_dropout: float = 0.2  # on the fused features, before the head (dropouts[3])
    # Quirks of the reference, kept by default:
    time_mean_over_padding: bool = True  # audio/vision = mean over every stored step, zero padding
    #   included (MMSA need_normalized); False = mean over each stream's own frames (up to its last
    #   frame that is not all zeros: the model is given no lengths)
    text_dropout_applied: bool = False  # MMSA never applies text_dropout; True applies it to the LSTM's h_n


@dataclass(frozen=True)
class LossConfig:
    task: float = 1.0  # weight of the L1 loss of M (MMSA's criterion; LF_DNN has no other term)


# MMSA's recipe (README section 5): batch 128 / lr 1e-3 / weight decay 1e-2 on MOSI, 64 / 2e-3 / 1e-3
# on MOSEI; the unaligned file (audio and vision are averaged over time anyway).
PRESETS: dict[str, dict[str, Any]] = {
    "mosi": mmsa_recipe(batch_size=128, lr=1e-3, weight_decay=1e-2, aligned=False),
    "mosei": {**mmsa_recipe(batch_size=64, lr=2e-3, weight_decay=1e-3, aligned=False),
              "model.audio_hidden": 32, "model.text_out": 128},
}


def check(cfg: Any, source: str) -> None:
    """Cross-field checks of an LF_DNN run config. A modality subset is accepted (unlike MMSA): each
    modality has its own subnet and the fusion only concatenates their outputs, so fewer of them is the
    same architecture with a narrower head input."""
    check_mmsa_fields(cfg, source, ("text_hidden", "audio_hidden", "video_hidden", "text_out", "post_fusion_dim"),
                      ("audio_dropout", "video_dropout", "text_dropout", "post_fusion_dropout"))
    require_sequential(cfg, source, "lf_dnn")
