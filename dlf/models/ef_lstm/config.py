"""EF_LSTM's config sections (MMSA 2.2.1 ``ef_lstm``): what ``model.*`` and ``loss.*`` mean for the
``ef_lstm`` family, and its presets per corpus (MMSA's ``config_regression.json`` and its trainer's
recipe, ../shared/reference/baselines/README.md sections 4 and 5). Torch-free: planning reads these.

Defaults are MMSA's MOSI values; ``PRESETS['mosei']`` holds the MOSEI differences.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from dlf.models.mmsa_config import check_mmsa_fields, mmsa_recipe, require_sequential


@dataclass(frozen=True)
class ModelConfig:
    family: str = "ef_lstm"
    modalities: tuple[str, ...] = ("l", "a", "v")  # concatenated step by step (MMSA: all three)
    text_encoder: Literal["features"] = "features"  # the 768-d ``text`` features, as MMSA feeds them
    hidden_dim: int = 128  # LSTM width and the head's hidden width (MMSA hidden_dims)
    num_layers: int = 4  # stacked unidirectional LSTM layers
    dropout: float = 0.5  # between LSTM layers, on the last layer's h_n and after the head's ReLU
    # Quirk of the reference, kept by default:
    norm_time_steps_as_channels: bool = True  # BatchNorm1d(T) on (B, T, D): each of the T=50 time steps
    #   is a channel, normalised over the batch and the features (MMSA); False = BatchNorm1d(D): each
    #   feature normalised over the batch and the time steps


@dataclass(frozen=True)
class LossConfig:
    task: float = 1.0  # weight of the L1 loss of M (MMSA's criterion; EF_LSTM has no other term)


# MMSA's recipe (README section 5): batch 32 / lr 1e-3 / weight decay 5e-3 on MOSI, 128 / 5e-3 / 1e-4
# on MOSEI; the aligned file (all streams at the 50 text steps).
PRESETS: dict[str, dict[str, Any]] = {
    "mosi": mmsa_recipe(batch_size=32, lr=1e-3, weight_decay=5e-3, aligned=True),
    "mosei": {**mmsa_recipe(batch_size=128, lr=5e-3, weight_decay=1e-4, aligned=True),
              "model.hidden_dim": 256, "model.num_layers": 2, "model.dropout": 0.4},
}


def check(cfg: Any, source: str) -> None:
    """Cross-field checks of an EF_LSTM run config. A modality subset is accepted (unlike MMSA): the
    streams are only concatenated, so fewer of them is the same architecture on a narrower input."""
    check_mmsa_fields(cfg, source, ("hidden_dim", "num_layers"), ("dropout",))
    require_sequential(cfg, source, "ef_lstm")
