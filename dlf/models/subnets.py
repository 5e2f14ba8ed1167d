"""The pre-fusion sub-networks MMSA's LF_DNN, TFN and LMF share (MMSA 2.2.1, module and parameter
names as MMSA's, so a checkpoint maps by its ``Model.`` prefix alone). Their audio and vision inputs
are MMSA's time means (``dlf.models.mmsa_common.time_mean``).

- ``AudioVisualSubNet`` (MMSA ``SubNet`` / ``AuViSubNet``): BatchNorm1d(d), Drop(p), then three
  Linear + ReLU layers: (B, d) -> (B, h).
- ``TextSubNet``: a 1-layer LSTM over every stored step (padding included, no packing), its last
  hidden state h_n, then Linear(h, out) with no activation: (B, T, 768) -> (B, out).

Dropout goes through ``dlf.models._kernels.dropout`` (each micro-batch draws its masks from its own
generator), so a run's numbers do not depend on how the trainer schedules micro-batches.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dlf.models._kernels import dropout

__all__ = ["AudioVisualSubNet", "TextSubNet", "SUBNET_WIDTHS"]

# modality -> (state_dict key, axis) of the weight whose shape is that modality's input width, in a
# model holding the subnets as MMSA names them (audio_subnet, video_subnet, text_subnet)
SUBNET_WIDTHS = {"l": ("text_subnet.rnn.weight_ih_l0", 1), "a": ("audio_subnet.linear_1.weight", 1),
                 "v": ("video_subnet.linear_1.weight", 1)}


class AudioVisualSubNet(nn.Module):
    """BatchNorm1d(d) -> Drop(p) -> [Linear -> ReLU] x 3: one modality's time-mean (B, d) -> (B, h)."""

    def __init__(self, in_size: int, hidden_size: int, p: float):
        super().__init__()
        self.p = p
        self.norm = nn.BatchNorm1d(in_size)  # batch statistics in training, running ones in eval
        self.linear_1 = nn.Linear(in_size, hidden_size)
        self.linear_2 = nn.Linear(hidden_size, hidden_size)
        self.linear_3 = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = dropout(self.norm(x), self.p, self.training)  # (B, d)
        x = F.relu(self.linear_1(x))
        x = F.relu(self.linear_2(x))
        return F.relu(self.linear_3(x))  # (B, h)


class TextSubNet(nn.Module):
    """LSTM(d -> h, 1 layer, batch-first) over all T steps -> h_n -> Drop(p) -> Linear(h, out).

    MMSA builds the dropout with p forced to 0 (its LSTM has one layer), so callers pass ``p=0`` to
    reproduce it; a non-zero p applies dropout to h_n, where MMSA's dead dropout sits.
    """

    def __init__(self, in_size: int, hidden_size: int, out_size: int, p: float = 0.0):
        super().__init__()
        self.p = p
        self.rnn = nn.LSTM(in_size, hidden_size, num_layers=1, batch_first=True)
        self.linear_1 = nn.Linear(hidden_size, out_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (h_n, _) = self.rnn(x)  # h_n (1, B, h): the state after the last stored step, padding included
        h = dropout(h_n[0], self.p, self.training)  # (B, h)
        return self.linear_1(h)  # (B, out)
