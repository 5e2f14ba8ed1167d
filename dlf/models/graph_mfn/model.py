"""Graph-MFN: the Memory Fusion Network with a Dynamic Fusion Graph in place of its attention (Zadeh et
al., ACL 2018), as MMSA 2.2.1 builds it.

Pipeline (../shared/reference/baselines/README.md, section 4 "Graph_MFN"):
  audio, vision aligned to the text length by AMIO's avg-pool (a no-op on the aligned files)
  for t in the 50 text steps:
    three LSTMCells step (text, audio, vision) from zero state              (as in MFN)
    singletons s_m = ReLU(m_transform([previous h_m ; new h_m]))           (hidden states, not cells)
    tau, e = DFG(s_l, s_a, s_v)                                            (e: the 19 efficacies)
    mem <- gamma1 * mem + gamma2 * tanh(att2(tau))                         (gates read [tau ; mem])
  M = out([h_l ; h_a ; h_v ; mem]);  Efficacies = e at every step, (B, T, 19), detached as MMSA's list

Module names are MMSA's, so its state_dict loads after stripping ``Model.``.
"""
from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from dlf.models.graph_mfn.dfg import DynamicFusionGraph
from dlf.models.mfn.memory import MemoryFusion, avg_pool_align

__all__ = ["GraphMFN", "build_model"]


class GraphMFN(MemoryFusion):
    family = "graph_mfn"

    def __init__(self, cfg, dims: Mapping[str, int], seq_lens: Mapping[str, int], bert_config=None):
        super().__init__()
        m = cfg.model
        self._cells(m, dims)
        h_l, h_a, h_v = self.hidden
        self.l_transform = nn.Linear(2 * h_l, h_l)  # singleton vertices, as wide as their LSTMCell
        self.a_transform = nn.Linear(2 * h_a, h_a)
        self.v_transform = nn.Linear(2 * h_v, h_v)
        self.graph_mfn = DynamicFusionGraph(self.hidden, m.inner_node_dim, frozen_nodes=m.frozen_dfg_nodes,
                                            shared_pattern=m.shared_pattern_init)
        self._gates(m, m.inner_node_dim)

    def forward(self, text, audio, vision, with_losses: bool = True) -> dict:
        steps = text.shape[1]
        audio, vision = avg_pool_align(audio, steps), avg_pool_align(vision, steps)  # (B, T, d_m)
        transforms = (self.l_transform, self.a_transform, self.v_transform)
        states, mem = self.zero_state(text)  # [(h, c)] for l, a, v; mem (B, mem)
        efficacies = []
        for t in range(steps):  # every text step, padding included (no lengths)
            new = self.step_cells((text[:, t], audio[:, t], vision[:, t]), states)
            singletons = [F.relu(tr(torch.cat([h, h_new], dim=1))) for tr, (h, _), (h_new, _) in
                          zip(transforms, states, new)]  # (B, h_m) each
            tau, e = self.graph_mfn(*singletons)  # (B, k), (B, 19)
            efficacies.append(e.detach())
            mem = self.update_memory(tau, mem)
            states = new
        _, out = self.head(states, mem)
        return {"M": out, "Efficacies": torch.stack(efficacies, dim=1)}  # (B, 1), (B, T, 19)


def build_model(cfg, dims: Mapping[str, int], seq_lens: Mapping[str, int], bert_config=None) -> GraphMFN:
    return GraphMFN(cfg, dims, seq_lens)
