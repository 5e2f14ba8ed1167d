"""LMF, Low-rank Multimodal Fusion (Liu et al. 2018) as MMSA 2.2.1 builds it, module for module.

B batch; h_t, h_a, h_v the subnet widths, o = h_t // 2 (MMSA hard-codes it), r the rank.

1. Inputs (MMSA need_normalized): audio and vision become their mean over every stored step, zero
   padding included (B, d_a), (B, d_v); text stays (B, 50, 768).
2. Subnets (shared with TFN and LF_DNN): Feature_a (B, h_a), Feature_v (B, h_v), Feature_t (B, o).
3. Low-rank fusion: z_m = [1, m_h]; f_m = z_m @ W_m with W_m (r, h_m+1, 1), i.e. r projections per
   modality; zy = f_a * f_v * f_t: the rank-r factorisation of TFN's tensor product, never built.
   Feature_f = zy as (B, r).
4. Output: M = zy @ fusion_weights^T + fusion_bias (B, 1), no activation. MMSA builds a post-fusion
   dropout and never applies it; it is not built here.

Names are MMSA's (the ``Model.`` prefix stripped), so the MMSA checkpoint loads as it is.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from dlf.models.mmsa_common import convert_mmsa, l1_loss_terms, parameter_summary, sizes_reader, time_mean
from dlf.models.registry import ModelFamily
from dlf.models.subnets import SUBNET_WIDTHS, AudioVisualSubNet, TextSubNet

__all__ = ["LMF", "build_model", "param_groups", "convert_official", "FAMILY"]

FACTORS = ("audio_factor", "video_factor", "text_factor")
FUSION = ("fusion_weights", "fusion_bias")


class LMF(nn.Module):
    family = "lmf"

    def __init__(self, cfg, dims: Mapping[str, int]):
        super().__init__()
        m = cfg.model
        self.over_padding = m.time_mean_over_padding
        text_out = m.text_hidden // 2
        self.audio_subnet = AudioVisualSubNet(dims["a"], m.audio_hidden, m.audio_dropout)
        self.video_subnet = AudioVisualSubNet(dims["v"], m.video_hidden, m.video_dropout)
        self.text_subnet = TextSubNet(dims["l"], m.text_hidden, text_out,
                                      m.text_dropout if m.text_dropout_applied else 0.0)
        # Own parameters come first in parameters(), in this order, as in MMSA (its optimizer slices them)
        self.audio_factor = nn.Parameter(torch.empty(m.rank, m.audio_hidden + 1, 1))
        self.video_factor = nn.Parameter(torch.empty(m.rank, m.video_hidden + 1, 1))
        self.text_factor = nn.Parameter(torch.empty(m.rank, text_out + 1, 1))
        self.fusion_weights = nn.Parameter(torch.empty(1, m.rank))
        self.fusion_bias = nn.Parameter(torch.zeros(1, 1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """MMSA's init of LMF's own parameters (the subnets keep theirs): Xavier-normal factors, zero bias."""
        for name in FACTORS + ("fusion_weights",):
            nn.init.xavier_normal_(getattr(self, name))
        nn.init.zeros_(self.fusion_bias)

    def forward(self, text, audio, vision, with_losses: bool = True) -> dict[str, torch.Tensor]:
        audio_h = self.audio_subnet(time_mean(audio, self.over_padding))  # (B, h_a)
        video_h = self.video_subnet(time_mean(vision, self.over_padding))  # (B, h_v)
        text_h = self.text_subnet(text)  # (B, o)
        one = audio_h.new_ones(audio_h.shape[0], 1)
        f_a = torch.cat([one, audio_h], dim=1) @ self.audio_factor  # (r, B, 1): r projections of [1, a]
        f_v = torch.cat([one, video_h], dim=1) @ self.video_factor  # (r, B, 1)
        f_t = torch.cat([one, text_h], dim=1) @ self.text_factor  # (r, B, 1)
        zy = (f_a * f_v * f_t).squeeze(-1).t()  # (B, r)
        out = zy @ self.fusion_weights.t() + self.fusion_bias  # (B, 1)
        return {"Feature_t": text_h, "Feature_a": audio_h, "Feature_v": video_h, "Feature_f": zy, "M": out}


def build_model(cfg, dims: Mapping[str, int], seq_lens: Mapping[str, int], bert_config=None) -> LMF:
    """An LMF for data of these widths; LMF reads any stored lengths (it averages audio and vision)."""
    return LMF(cfg, dims)


def param_groups(model: nn.Module, cfg) -> list[dict]:
    """MMSA's two Adam groups, both with train.weight_decay: the subnets at train.lr (``parameters()[5:]``)
    and the three factors at model.factor_lr (``parameters()[:3]``). fusion_weights and fusion_bias are in
    neither unless model.train_fusion_weights (then they join the subnets' group).
    The train.lr group comes first only so that the trainer's logged lr is train.lr; Adam is per group.
    (train.accumulation is 1: the family's config check refuses anything else.)"""
    skip = set(FACTORS) | (set() if cfg.model.train_fusion_weights else set(FUSION))
    rest = [p for n, p in model.named_parameters() if n not in skip and p.requires_grad]
    return [{"params": rest}, {"params": [getattr(model, n) for n in FACTORS], "lr": cfg.model.factor_lr}]


# model.* size -> (key, axis) of the weight that fixes it; the text output width (text_hidden // 2 in
# MMSA) is checked when the weights are loaded
_SIZES = {
    "model.text_hidden": ("text_subnet.rnn.weight_hh_l0", 1),
    "model.audio_hidden": ("audio_subnet.linear_1.weight", 0),
    "model.video_hidden": ("video_subnet.linear_1.weight", 0),
    "model.rank": ("audio_factor", 0),
}


_sizes = sizes_reader(_SIZES, SUBNET_WIDTHS)


def convert_official(state, corpus: str, pretrained=None, source: str = "state_dict", dims=None, seq_lens=None):
    """MMSA's LMF state_dict (``Model.*``) -> an LMF."""
    return convert_mmsa(state, corpus, "lmf", "LMF", build_model, _sizes, source, dims, seq_lens)


FAMILY = ModelFamily(build=build_model, loss_terms=l1_loss_terms, prediction=lambda out: out["M"].reshape(-1),
                     summary=parameter_summary, convert_official=convert_official, param_groups=param_groups)
