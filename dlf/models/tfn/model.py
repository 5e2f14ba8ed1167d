"""TFN, the Tensor Fusion Network (Zadeh et al. 2017) as MMSA 2.2.1 builds it, module for module.

B batch, T stored steps; h_t, h_a, h_v the subnet widths, o = text_out, P = post_fusion_dim.

1. Inputs (MMSA need_normalized): audio and vision become their mean over every stored step, zero
   padding included (B, d_a), (B, d_v); text stays (B, 50, 768).
2. Subnets: audio (B, h_a) and vision (B, h_v) through BatchNorm, dropout, 3 x (Linear, ReLU); text
   through a 1-layer LSTM's last state and a Linear (B, o). These are Feature_a, Feature_v, Feature_t.
3. Fusion: z_m = [1, m_h]; Feature_f = flatten(z_a (x) z_v (x) z_t), (B, (h_a+1)(h_v+1)(o+1)): every
   unimodal, bimodal and trimodal product of features (flat index (i_a (h_v+1) + i_v)(o+1) + i_t).
4. Head: dropout, Linear -> P, ReLU, Linear P -> P, ReLU, Linear P -> 1, then sigmoid(x) * 6 - 3 through
   the frozen parameters output_range (6) and output_shift (-3): M (B, 1) in (-3, 3).

Names are MMSA's (the ``Model.`` prefix stripped), so the MMSA checkpoint loads as it is.
"""
from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from dlf.models._kernels import dropout
from dlf.models.mmsa_common import convert_mmsa, l1_loss_terms, parameter_summary, sizes_reader, time_mean
from dlf.models.registry import ModelFamily
from dlf.models.subnets import SUBNET_WIDTHS, AudioVisualSubNet, TextSubNet

__all__ = ["TFN", "build_model", "param_groups", "convert_official", "FAMILY"]


class TFN(nn.Module):
    family = "tfn"

    def __init__(self, cfg, dims: Mapping[str, int]):
        super().__init__()
        m = cfg.model
        self.over_padding, self.bounded = m.time_mean_over_padding, m.bounded_output
        self.p_fusion = m.post_fusion_dropout
        # Registered first, as in MMSA: its optimizer gets ``parameters()[2:]``, i.e. everything but these.
        self.output_range = nn.Parameter(torch.tensor([6.0]), requires_grad=False)
        self.output_shift = nn.Parameter(torch.tensor([-3.0]), requires_grad=False)
        self.audio_subnet = AudioVisualSubNet(dims["a"], m.audio_hidden, m.audio_dropout)
        self.video_subnet = AudioVisualSubNet(dims["v"], m.video_hidden, m.video_dropout)
        self.text_subnet = TextSubNet(dims["l"], m.text_hidden, m.text_out,
                                      m.text_dropout if m.text_dropout_applied else 0.0)
        fused = (m.audio_hidden + 1) * (m.video_hidden + 1) * (m.text_out + 1)
        self.post_fusion_layer_1 = nn.Linear(fused, m.post_fusion_dim)
        self.post_fusion_layer_2 = nn.Linear(m.post_fusion_dim, m.post_fusion_dim)
        self.post_fusion_layer_3 = nn.Linear(m.post_fusion_dim, 1)

    def forward(self, text, audio, vision, with_losses: bool = True) -> dict[str, torch.Tensor]:
        audio_h = self.audio_subnet(time_mean(audio, self.over_padding))  # (B, h_a)
        video_h = self.video_subnet(time_mean(vision, self.over_padding))  # (B, h_v)
        text_h = self.text_subnet(text)  # (B, o)
        fusion = tensor_fusion(audio_h, video_h, text_h)  # (B, (h_a+1)(h_v+1)(o+1))
        x = dropout(fusion, self.p_fusion, self.training)
        x = F.relu(self.post_fusion_layer_1(x))
        x = F.relu(self.post_fusion_layer_2(x))
        x = self.post_fusion_layer_3(x)  # (B, 1)
        out = torch.sigmoid(x) * self.output_range + self.output_shift if self.bounded else x
        return {"Feature_t": text_h, "Feature_a": audio_h, "Feature_v": video_h, "Feature_f": fusion, "M": out}


def tensor_fusion(audio_h: torch.Tensor, video_h: torch.Tensor, text_h: torch.Tensor) -> torch.Tensor:
    """flatten([1, a] (x) [1, v] (x) [1, t]) per sample, in MMSA's (a, v, t) order, via two batched
    outer products as MMSA computes them: (B, h_a+1, 1) x (B, 1, h_v+1), then with (B, 1, o+1)."""
    one = audio_h.new_ones(audio_h.shape[0], 1)
    z_a, z_v, z_t = (torch.cat([one, h], dim=1) for h in (audio_h, video_h, text_h))
    av = torch.bmm(z_a.unsqueeze(2), z_v.unsqueeze(1)).reshape(z_a.shape[0], -1, 1)  # (B, (h_a+1)(h_v+1), 1)
    return torch.bmm(av, z_t.unsqueeze(1)).reshape(z_a.shape[0], -1)


def build_model(cfg, dims: Mapping[str, int], seq_lens: Mapping[str, int], bert_config=None) -> TFN:
    """A TFN for data of these widths; TFN reads any stored lengths (it averages audio and vision)."""
    return TFN(cfg, dims)


def param_groups(model: nn.Module, cfg) -> list[dict]:
    """MMSA's one Adam group: every parameter but output_range and output_shift (``parameters()[2:]``).
    (train.accumulation is 1: the family's config check refuses anything else.)"""
    return [{"params": [p for n, p in model.named_parameters() if n not in ("output_range", "output_shift")
                        and p.requires_grad]}]


# model.* size -> (key, axis) of the weight that fixes it; P x (h_a+1)(h_v+1)(o+1) is checked on loading
_SIZES = {
    "model.text_hidden": ("text_subnet.linear_1.weight", 1),
    "model.audio_hidden": ("audio_subnet.linear_1.weight", 0),
    "model.video_hidden": ("video_subnet.linear_1.weight", 0),
    "model.text_out": ("text_subnet.linear_1.weight", 0),
    "model.post_fusion_dim": ("post_fusion_layer_1.weight", 0),
}


_sizes = sizes_reader(_SIZES, SUBNET_WIDTHS)


def convert_official(state, corpus: str, pretrained=None, source: str = "state_dict", dims=None, seq_lens=None):
    """MMSA's TFN state_dict (``Model.*``, the big post_fusion_layer_1.weight included) -> a TFN.
    (MMSA saves that weight like every other; the parity fixture stores it apart, README 1.1.)"""
    return convert_mmsa(state, corpus, "tfn", "TFN", build_model, _sizes, source, dims, seq_lens)


FAMILY = ModelFamily(build=build_model, loss_terms=l1_loss_terms, prediction=lambda out: out["M"].reshape(-1),
                     summary=parameter_summary, convert_official=convert_official, param_groups=param_groups)
