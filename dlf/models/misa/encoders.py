"""MISA's two sequence encoders, under MMSA's module and parameter names.

- :func:`utterance`: the audio / vision path, two packed bidirectional LSTMs with a LayerNorm between,
  whose final states are the utterance vector.
- :class:`FusionEncoder`: torch's ``nn.TransformerEncoder`` of one ``TransformerEncoderLayer(d_model,
  nhead)`` as MMSA builds it (post-LN, ReLU, feed-forward 2048, dropout 0.1), over the six codes; the
  same parameter names (``layers.0.self_attn.in_proj_weight``, ``linear1``, ``norm1`` ...), batch-first,
  with every dropout drawn per micro-batch (``dlf.models._kernels``): the trainer may compute the two
  micro-batches of MISA's accumulation window concurrently.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from dlf.models._kernels import dropout
from dlf.models.layers import MultiheadAttention

__all__ = ["utterance", "FusionEncoder"]


def utterance(x: torch.Tensor, lengths: torch.Tensor, rnn1: nn.LSTM, norm: nn.LayerNorm, rnn2: nn.LSTM) -> torch.Tensor:
    """x (B, T, d), lengths (B,) int64 on the CPU -> (B, 4d) = [h1_fwd, h2_fwd, h1_bwd, h2_bwd].

    Each sample is read for its first ``lengths`` frames only (packed); the second LSTM reads the
    LayerNorm of the first one's outputs over the same frames. MMSA's order of the final states:
    cat((h1, h2), dim=2) is (2 directions, B, 2d), its batch-major flattening gives the order above.
    """
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out1, (h1, _) = rnn1(packed)  # h1 (2, B, d): the final state of each direction
    padded, _ = pad_packed_sequence(out1, batch_first=True)  # (B, max(lengths), 2d)
    _, (h2, _) = rnn2(pack_padded_sequence(norm(padded), lengths, batch_first=True, enforce_sorted=False))
    return torch.cat([h1, h2], dim=2).permute(1, 0, 2).reshape(x.shape[0], -1)


class EncoderLayer(nn.Module):
    """Post-LN transformer layer: x = norm1(x + drop(attn(x))); x = norm2(x + drop(linear2(drop(relu(linear1(x))))))."""

    def __init__(self, d: int, n_heads: int, ff: int, p: float):
        super().__init__()
        self.self_attn = MultiheadAttention(d, n_heads, p)  # attention-weight dropout p, as torch's
        self.reset_parameters()
        self.linear1 = nn.Linear(d, ff)
        self.linear2 = nn.Linear(ff, d)
        self.norm1 = nn.LayerNorm(d)
        self.norm2 = nn.LayerNorm(d)
        self.p = p

    def reset_parameters(self) -> None:
        """torch's MultiheadAttention keeps nn.Linear's own init for out_proj (Xavier for in_proj), zero biases."""
        self.self_attn.out_proj.reset_parameters()
        nn.init.zeros_(self.self_attn.out_proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, S, d) -> (B, S, d); no mask (every code sees every other)."""
        attn = self.self_attn
        q, k, v = attn.project(x, 0, 3).chunk(3, dim=-1)
        x = self.norm1(x + dropout(attn.attend(q, k, v, None), self.p, self.training))
        h = self.linear2(dropout(F.relu(self.linear1(x)), self.p, self.training))
        return self.norm2(x + dropout(h, self.p, self.training))


class FusionEncoder(nn.Module):
    """``nn.TransformerEncoder(layer, num_layers=1)`` without a final norm, as MMSA builds it."""

    def __init__(self, d: int, n_heads: int, ff: int, p: float):
        super().__init__()
        self.layers = nn.ModuleList([EncoderLayer(d, n_heads, ff, p)])  # MMSA's name: layers.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, S, d) -> (B, S, d)."""
        return self.layers[0](x)
