"""MFN, the Memory Fusion Network (Zadeh et al., AAAI 2018), as MMSA 2.2.1 builds it.

Pipeline (../shared/reference/baselines/README.md, section 4 "MFN"):
  audio, vision -> their time mean over the padded axis (MMSA need_normalized), fed at every text step
  for t in the 50 text steps:
    three LSTMCells step (text, audio, vision) from zero state
    c* = [previous cells ; new cells]                                  (B, 2 sum h)
    attended = softmax(att1(c*)) * c*                                  (delta-memory attention)
    mem <- gamma1 * mem + gamma2 * tanh(att2(attended))                (multi-view gated memory)
  L = [h_l ; h_a ; h_v ; mem],  M = out(L)

Module names are MMSA's, so its state_dict loads after stripping ``Model.``.
"""
from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from dlf.models._kernels import dropout
from dlf.models.mfn.memory import MemoryFusion, avg_pool_align
from dlf.models.mmsa_common import time_mean

__all__ = ["MFN", "build_model"]


class MFN(MemoryFusion):
    family = "mfn"

    def __init__(self, cfg, dims: Mapping[str, int], seq_lens: Mapping[str, int], bert_config=None):
        super().__init__()
        m = cfg.model
        self.av_time_mean, self.over_padding = m.av_time_mean, m.time_mean_over_padding
        self._cells(m, dims)
        cells = 2 * sum(self.hidden)  # the cells of two steps (MMSA windowsize 2)
        self.att1_fc1 = nn.Linear(cells, m.att1_hidden)
        self.att1_fc2 = nn.Linear(m.att1_hidden, cells)
        self.p_att1 = m.att1_dropout
        self._gates(m, cells)

    def _inputs(self, text, audio, vision) -> list:
        """Per text step, the (B, d) input of each stream: the audio / vision time means (the same at every
        step, as MMSA's repeat of a length-1 stream gives) or the streams aligned to the text length."""
        steps = text.shape[1]
        if self.av_time_mean:
            a, v = time_mean(audio, self.over_padding), time_mean(vision, self.over_padding)  # (B, d_a), (B, d_v)
            return [(text[:, t], a, v) for t in range(steps)]
        audio, vision = avg_pool_align(audio, steps), avg_pool_align(vision, steps)
        return [(text[:, t], audio[:, t], vision[:, t]) for t in range(steps)]

    def forward(self, text, audio, vision, with_losses: bool = True) -> dict:
        states, mem = self.zero_state(text)  # [(h, c)] for l, a, v; mem (B, mem)
        for xs in self._inputs(text, audio, vision):  # every text step, padding included (no lengths)
            new = self.step_cells(xs, states)
            c_star = torch.cat([c for _, c in states] + [c for _, c in new], dim=1)  # (B, 2 sum h)
            scores = self.att1_fc2(dropout(F.relu(self.att1_fc1(c_star)), self.p_att1, self.training))
            attended = F.softmax(scores, dim=1) * c_star  # (B, 2 sum h)
            mem = self.update_memory(attended, mem)
            states = new
        last, out = self.head(states, mem)
        return {"M": out, "L": last}  # (B, 1), (B, sum h + mem)


def build_model(cfg, dims: Mapping[str, int], seq_lens: Mapping[str, int], bert_config=None) -> MFN:
    return MFN(cfg, dims, seq_lens)
