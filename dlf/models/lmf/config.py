"""LMF's config sections (MMSA 2.2.1 ``lmf``, Liu et al. 2018): what ``model.*`` and ``loss.*`` mean
for the ``lmf`` family, and its presets per corpus (MMSA's ``config_regression.json`` and its trainer's
recipe, see ../shared/reference/baselines/README.md sections 4 and 5). Torch-free: planning reads these.

Defaults are MMSA's MOSI values; ``PRESETS['mosei']`` holds the MOSEI differences.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from dlf.errors import DLFError
from dlf.models.mmsa_config import check_mmsa_fields, mmsa_recipe, require_all_modalities, require_sequential


@dataclass(frozen=True)
class ModelConfig:
    family: str = "lmf"
    modalities: tuple[str, ...] = ("l", "a", "v")  # LMF fuses all three; other subsets are refused
    text_encoder: Literal["features"] = "features"  # the 768-d ``text`` features, as MMSA feeds them
    text_hidden: int = 128  # LSTM width of the text subnet (MMSA hidden_dims[0]); its output
    #   Feature_t has text_hidden // 2 features, as MMSA hard-codes
    audio_hidden: int = 16  # width of the audio subnet's three Linear layers (hidden_dims[1])
    video_hidden: int = 128  # width of the vision subnet's three Linear layers (hidden_dims[2])
    rank: int = 3  # r: rank of the low-rank fusion, the number of modality-specific factors per modality
    audio_dropout: float = 0.3  # after the audio subnet's BatchNorm (MMSA dropouts[0])
    video_dropout: float = 0.3  # after the vision subnet's BatchNorm (dropouts[1])
    text_dropout: float = 0.3  # dropouts[2]: MMSA forces it to 0 (1-layer LSTM); see text_dropout_applied
    #   (MMSA's dropouts[3], a post-fusion dropout it builds but never applies, has no field)
    factor_lr: float = 1e-3  # Adam lr of the three factors' group (MMSA factor_lr); the subnets use train.lr
    # Quirks of the reference, kept by default:
    time_mean_over_padding: bool = True  # audio/vision = mean over every stored step, zero padding
    #   included (MMSA need_normalized); False = mean over each stream's own frames
    text_dropout_applied: bool = False  # MMSA never applies text_dropout; True applies it to the LSTM's h_n
    train_fusion_weights: bool = False  # MMSA's optimizer skips fusion_weights and fusion_bias (they stay at
    #   their initial values); True trains them with the subnets, at train.lr


@dataclass(frozen=True)
class LossConfig:
    task: float = 1.0  # weight of the L1 loss of M (MMSA's criterion; LMF has no other term)


# MMSA's recipe (README section 5): Adam with weight decay on both groups, batch 64, lr and factor_lr
# 1e-3, weight decay 5e-3 on MOSI; batch 32, 1e-3, 1e-3, 1e-3 on MOSEI; plus the recipe every MMSA
# trainer shares; the unaligned file.
PRESETS: dict[str, dict[str, Any]] = {
    "mosi": mmsa_recipe(batch_size=64, lr=1e-3, weight_decay=5e-3, aligned=False),
    "mosei": {**mmsa_recipe(batch_size=32, lr=1e-3, weight_decay=1e-3, aligned=False),
              "model.rank": 4, "model.audio_dropout": 0.2, "model.video_dropout": 0.2, "model.text_dropout": 0.2},
}


def check(cfg: Any, source: str) -> None:
    """Cross-field checks of an LMF run config: the fusion is a (low-rank) product over all three
    modalities, and BatchNorm keeps training to one micro-batch at a time."""
    check_mmsa_fields(cfg, source, ("audio_hidden", "video_hidden", "rank"),
                      ("audio_dropout", "video_dropout", "text_dropout"))
    if cfg.model.text_hidden < 2:
        raise DLFError(f"{source}: model.text_hidden must be >= 2 (Feature_t has text_hidden // 2 features), "
                       f"got {cfg.model.text_hidden}")
    if cfg.model.factor_lr <= 0:
        raise DLFError(f"{source}: model.factor_lr must be > 0, got {cfg.model.factor_lr}")
    require_all_modalities(cfg, source, "lmf")
    require_sequential(cfg, source, "lmf")
