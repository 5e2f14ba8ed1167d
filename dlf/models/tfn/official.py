"""TFN's sizes read from an MMSA TFN state_dict (prefix stripped, key set already checked): the names
are MMSA's own, so the only mapping left is from weight shapes to ``model.*`` sizes and input widths.

MMSA saves ``post_fusion_layer_1.weight`` (P x (h_a+1)(h_v+1)(o+1): 64 x 140,481 on MOSI) like every
other tensor; the parity fixture stores it apart (README 1.1), and its test puts it back first.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

from dlf.models.mmsa_common import shape_of

__all__ = ["infer_sizes"]


def infer_sizes(state: Mapping[str, torch.Tensor], source: str) -> tuple[dict[str, Any], dict[str, int]]:
    """(model.* overrides, input widths {l, a, v}) from the Linear and LSTM weight shapes."""
    audio_hidden, d_a = shape_of(state, "audio_subnet.linear_1.weight")
    video_hidden, d_v = shape_of(state, "video_subnet.linear_1.weight")
    _, d_t = shape_of(state, "text_subnet.rnn.weight_ih_l0")
    text_out, text_hidden = shape_of(state, "text_subnet.linear_1.weight")
    post, _ = shape_of(state, "post_fusion_layer_1.weight")  # its width is checked when loading
    overrides = {"model.text_hidden": text_hidden, "model.audio_hidden": audio_hidden,
                 "model.video_hidden": video_hidden, "model.text_out": text_out, "model.post_fusion_dim": post}
    return overrides, {"l": d_t, "a": d_a, "v": d_v}
