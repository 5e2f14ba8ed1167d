"""LMF's sizes read from an MMSA LMF state_dict (prefix stripped, key set already checked): the names
are MMSA's own, so the only mapping left is from weight shapes to ``model.*`` sizes and input widths."""
from __future__ import annotations

from typing import Any, Mapping

import torch

from dlf.models.mmsa_common import shape_of

__all__ = ["infer_sizes"]


def infer_sizes(state: Mapping[str, torch.Tensor], source: str) -> tuple[dict[str, Any], dict[str, int]]:
    """(model.* overrides, input widths {l, a, v}) from the factor, Linear and LSTM weight shapes; the
    text output width (text_hidden // 2 in MMSA) is checked when the weights are loaded."""
    audio_hidden, d_a = shape_of(state, "audio_subnet.linear_1.weight")
    video_hidden, d_v = shape_of(state, "video_subnet.linear_1.weight")
    _, d_t = shape_of(state, "text_subnet.rnn.weight_ih_l0")
    _, text_hidden = shape_of(state, "text_subnet.rnn.weight_hh_l0")
    rank = shape_of(state, "audio_factor")[0]
    overrides = {"model.text_hidden": text_hidden, "model.audio_hidden": audio_hidden,
                 "model.video_hidden": video_hidden, "model.rank": rank}
    return overrides, {"l": d_t, "a": d_a, "v": d_v}
