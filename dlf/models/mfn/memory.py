"""What MFN and Graph-MFN share (MMSA 2.2.1), written once: AMIO's avg-pool alignment of the inputs, the
three LSTMCells stepped together and the multi-view gated memory with its output head. (The time mean,
the L1 loss, the parameter summary and the MMSA import are every MMSA family's: ``mmsa_common``.)

Both models keep MMSA's flat module names (``lstm_l``, ``att2_fc1``, ``gamma1_fc2``, ``out_fc1`` ...)
so that an MMSA state_dict maps onto them by stripping ``Model.``: they subclass :class:`MemoryFusion`,
which registers those modules on the model itself.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dlf.models._kernels import dropout

__all__ = ["MemoryFusion", "avg_pool_align"]


def avg_pool_align(x: torch.Tensor, length: int) -> torch.Tensor:
    """(B, T, d) -> (B, length, d): MMSA's AMIO "avg_pool" alignment of a stream to the text length.

    As MMSA's code does it: the stream is padded with copies of its last frame up to a multiple of
    ``length``, viewed as (B, T' / length, length, d) and averaged over the first of those axes. So
    output step j averages frames j, j + length, j + 2 length ... (strided, not consecutive frames); a
    length-1 stream is repeated. A stream already of ``length`` steps is returned as is.
    """
    b, t, d = x.shape
    if t == length:
        return x
    pool = -(-t // length)  # ceil
    pad = x[:, -1:, :].expand(b, pool * length - t, d)
    return torch.cat([x, pad], dim=1).view(b, pool, length, d).mean(dim=1)


class MemoryFusion(nn.Module):
    """The parts of MFN and Graph-MFN that are the same: three LSTMCells (text, audio, vision) from zero
    state, a memory of ``mem_size`` updated at every step from a fused vector, and the output head on the
    last hidden states and the memory. A subclass registers its fusion between :meth:`_cells` and
    :meth:`_gates` (MMSA's module order) and steps the recurrence in its forward."""

    def _cells(self, m, dims) -> None:
        self.hidden = (m.text_hidden, m.audio_hidden, m.video_hidden)
        self.mem_size = m.mem_size
        self.lstm_l = nn.LSTMCell(int(dims["l"]), m.text_hidden)
        self.lstm_a = nn.LSTMCell(int(dims["a"]), m.audio_hidden)
        self.lstm_v = nn.LSTMCell(int(dims["v"]), m.video_hidden)

    def _gates(self, m, fused: int) -> None:
        """``fused``: the width of the vector the memory reads each step (MFN: the attended cells,
        Graph-MFN: the DFG's tau)."""
        self.att2_fc1 = nn.Linear(fused, m.att2_hidden)  # c_hat, the proposed memory
        self.att2_fc2 = nn.Linear(m.att2_hidden, m.mem_size)
        self.gamma1_fc1 = nn.Linear(fused + m.mem_size, m.gamma1_hidden)  # retain gate
        self.gamma1_fc2 = nn.Linear(m.gamma1_hidden, m.mem_size)
        self.gamma2_fc1 = nn.Linear(fused + m.mem_size, m.gamma2_hidden)  # update gate
        self.gamma2_fc2 = nn.Linear(m.gamma2_hidden, m.mem_size)
        self.out_fc1 = nn.Linear(sum(self.hidden) + m.mem_size, m.out_hidden)
        self.out_fc2 = nn.Linear(m.out_hidden, 1)
        self.p = {name: getattr(m, f"{name}_dropout") for name in ("att2", "gamma1", "gamma2", "out")}

    def zero_state(self, x: torch.Tensor):
        """(states, mem): per stream (h, c) of zeros, and the zero memory, for x's batch, device and dtype."""
        b = x.shape[0]
        states = [(x.new_zeros(b, h), x.new_zeros(b, h)) for h in self.hidden]
        return states, x.new_zeros(b, self.mem_size)

    def step_cells(self, xs: tuple[torch.Tensor, ...], states: list) -> list:
        """One step of the three LSTMCells: inputs (B, d_m) -> new [(h, c)] per stream (l, a, v)."""
        return [cell(x, state) for cell, x, state in zip((self.lstm_l, self.lstm_a, self.lstm_v), xs, states)]

    def _mlp(self, fc1: nn.Linear, fc2: nn.Linear, x: torch.Tensor, p: float) -> torch.Tensor:
        return fc2(dropout(F.relu(fc1(x)), p, self.training))

    def update_memory(self, fused: torch.Tensor, mem: torch.Tensor) -> torch.Tensor:
        """mem <- gamma1 * mem + gamma2 * c_hat, with c_hat = tanh(att2(fused)) and both gates
        sigmoid(gamma(fused ++ mem))."""
        c_hat = torch.tanh(self._mlp(self.att2_fc1, self.att2_fc2, fused, self.p["att2"]))  # (B, mem)
        both = torch.cat([fused, mem], dim=1)  # (B, fused + mem)
        gamma1 = torch.sigmoid(self._mlp(self.gamma1_fc1, self.gamma1_fc2, both, self.p["gamma1"]))
        gamma2 = torch.sigmoid(self._mlp(self.gamma2_fc1, self.gamma2_fc2, both, self.p["gamma2"]))
        return gamma1 * mem + gamma2 * c_hat

    def head(self, states: list, mem: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(L, M): L = the last h_l, h_a, h_v and the memory (B, sum h + mem); M = out(L) (B, 1)."""
        last = torch.cat([h for h, _ in states] + [mem], dim=1)
        return last, self._mlp(self.out_fc1, self.out_fc2, last, self.p["out"])
