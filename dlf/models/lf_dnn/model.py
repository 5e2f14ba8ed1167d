"""LF_DNN, the late-fusion DNN baseline, as MMSA 2.2.1 builds it, module for module.

B batch; h_t, h_a, h_v the subnet widths, o = text_out, P = post_fusion_dim.

1. Inputs (MMSA need_normalized): audio and vision become their mean over every stored step, zero
   padding included, (B, d_a) and (B, d_v); text stays (B, 50, 768), read over all 50 steps.
2. Subnets: audio (B, h_a) and vision (B, h_v) through BatchNorm, dropout, 3 x (Linear, ReLU); text
   through a 1-layer LSTM's last state and a Linear (B, o). These are Feature_a, Feature_v, Feature_t.
3. Late fusion: Feature_f = concat(audio_h, video_h, text_h) in MMSA's order a, v, t, (B, h_a+h_v+o).
4. Head: dropout, Linear -> P, ReLU, Linear P -> P, ReLU, Linear P -> 1 = M (B, 1).

Names are MMSA's (the ``Model.`` prefix stripped), so an MMSA checkpoint loads as it is. With
``model.modalities`` a subset, only those subnets are built and fused (in the same a, v, t order).
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from dlf.models._kernels import dropout
from dlf.models.mmsa_common import (convert_mmsa, l1_loss_terms, output_features, parameter_summary, sizes_reader,
                                    time_mean)
from dlf.models.registry import ModelFamily
from dlf.models.subnets import SUBNET_WIDTHS, AudioVisualSubNet, TextSubNet

__all__ = ["LF_DNN", "build_model", "param_groups", "convert_official", "FAMILY"]


class LF_DNN(nn.Module):
    family = "lf_dnn"

    def __init__(self, cfg: Any, dims: Mapping[str, int]):
        super().__init__()
        m = cfg.model
        self.mods, self.over_padding = tuple(m.modalities), m.time_mean_over_padding
        self.p_fusion = m.post_fusion_dropout
        fused = 0
        if "a" in self.mods:  # registered in MMSA's order: audio, video, text, head
            self.audio_subnet = AudioVisualSubNet(dims["a"], m.audio_hidden, m.audio_dropout)
            fused += m.audio_hidden
        if "v" in self.mods:
            self.video_subnet = AudioVisualSubNet(dims["v"], m.video_hidden, m.video_dropout)
            fused += m.video_hidden
        if "l" in self.mods:
            self.text_subnet = TextSubNet(dims["l"], m.text_hidden, m.text_out,
                                          m.text_dropout if m.text_dropout_applied else 0.0)
            fused += m.text_out
        self.post_fusion_layer_1 = nn.Linear(fused, m.post_fusion_dim)
        self.post_fusion_layer_2 = nn.Linear(m.post_fusion_dim, m.post_fusion_dim)
        self.post_fusion_layer_3 = nn.Linear(m.post_fusion_dim, 1)

    def forward(self, text, audio, vision, with_losses: bool = True) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        if "a" in self.mods:
            out["Feature_a"] = self.audio_subnet(time_mean(audio, self.over_padding))  # (B, h_a)
        if "v" in self.mods:
            out["Feature_v"] = self.video_subnet(time_mean(vision, self.over_padding))  # (B, h_v)
        if "l" in self.mods:
            out["Feature_t"] = self.text_subnet(text)  # (B, o)
        fusion = torch.cat([out[f"Feature_{m}"] for m in ("a", "v", "t") if f"Feature_{m}" in out], dim=-1)
        x = dropout(fusion, self.p_fusion, self.training)
        x = F.relu(self.post_fusion_layer_1(x))
        x = F.relu(self.post_fusion_layer_2(x))
        return {**out, "Feature_f": fusion, "M": self.post_fusion_layer_3(x)}  # M (B, 1)


def build_model(cfg: Any, dims: Mapping[str, int], seq_lens: Mapping[str, int], bert_config=None) -> LF_DNN:
    """An LF_DNN for data of these widths; it reads any stored lengths (audio and vision are averaged,
    the text LSTM runs over every step)."""
    return LF_DNN(cfg, dims)


def param_groups(model: nn.Module, cfg: Any) -> list[dict]:
    """MMSA's one Adam group: every parameter at train.lr, with train.weight_decay. (train.accumulation
    is 1: the family's config check refuses anything else.)"""
    return [{"params": [p for p in model.parameters() if p.requires_grad]}]


# model.* size -> (key, axis) of the weight that fixes it
_SIZES = {
    "model.audio_hidden": ("audio_subnet.linear_1.weight", 0),
    "model.video_hidden": ("video_subnet.linear_1.weight", 0),
    "model.text_hidden": ("text_subnet.linear_1.weight", 1),
    "model.text_out": ("text_subnet.linear_1.weight", 0),
    "model.post_fusion_dim": ("post_fusion_layer_1.weight", 0),
}


_sizes = sizes_reader(_SIZES, SUBNET_WIDTHS)


def convert_official(state, corpus: str, pretrained=None, source: str = "state_dict", dims=None, seq_lens=None):
    """MMSA's LF_DNN state_dict (``Model.audio_subnet/video_subnet/text_subnet/post_fusion_layer_*``)
    -> an LF_DNN (eval mode)."""
    return convert_mmsa(state, corpus, "lf_dnn", "LF_DNN", build_model, _sizes, source, dims, seq_lens)


FAMILY = ModelFamily(build=build_model, loss_terms=l1_loss_terms, prediction=lambda out: out["M"].reshape(-1),
                     summary=parameter_summary, convert_official=convert_official, param_groups=param_groups,
                     # the late-fusion vector the post-fusion layers read, and each modality's subnet output
                     features=output_features({"fused": "Feature_f", "unimodal_l": "Feature_t",
                                               "unimodal_a": "Feature_a", "unimodal_v": "Feature_v"}))
