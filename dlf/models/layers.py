"""The MulT / fairseq-style transformer encoder that every DLF stack is built from, written once.

Behaviour (official DLF = DMD = MulT code): the input is scaled by sqrt(d) and gets sinusoidal
positions (sin block then cos block; position t+1 where channel 0 of the *unscaled* input is
non-zero, the zero vector where it is exactly 0), then embedding dropout; ``n`` pre-LayerNorm layers
(LN -> multi-head attention with a fused 3d x d in-projection -> residual; LN -> Linear(d, 4d) ->
ReLU -> Linear(4d, d) -> residual); a final LayerNorm. With a ``source`` the layers cross-attend:
every layer reads the same embedded source (key and value get separate embedding-dropout masks, as
in the official code) through its own first LayerNorm, and only the query stream is updated.

The optional causal mask follows the MulT rule ``triu(-inf, 1 + |T_k - T_q|)``: query i may attend to
keys j <= i + |T_k - T_q|, which is a plain causal mask when the lengths are equal.

Layout is batch-first, (B, T, d); parameter names match the official state_dict
(``layers.N.self_attn.in_proj_weight``, ``layers.N.fc1``, ``layers.N.layer_norms.0``, ``layer_norm``).
The attention product and dropout are the two calls into ``dlf.models._kernels`` (``attention``,
``dropout``): fast CPU kernels and their randomness (a per-thread dropout generator), checked against
the literal formula there. Everything the model computes is written out here. One shortcut of ours:
``last_only`` computes the last layer for the final time step alone (its output is all that DLF's
last-step pooling reads), which is exact because the last query sees every key under the mask.
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from dlf.models._kernels import attention, dropout

__all__ = ["TransformerEncoder", "TransformerLayer", "MultiheadAttention", "sinusoidal_table", "mult_mask",
           "future_mask"]


@lru_cache(maxsize=64)
def sinusoidal_table(length: int, dim: int, device: str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Rows 1..length of the fairseq sinusoidal table (row 0, the padding row, is all zeros): (length, dim)."""
    with torch.inference_mode(False):  # cached: must stay usable by autograd even if first built in inference
        return _table(length, dim).to(device=device, dtype=dtype)


def _table(length: int, dim: int) -> torch.Tensor:
    half = dim // 2
    freq = torch.exp(torch.arange(half, dtype=torch.float) * -(math.log(10000) / (half - 1)))
    angles = torch.arange(1, length + 1, dtype=torch.float).unsqueeze(1) * freq.unsqueeze(0)  # (length, half)
    table = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    if dim % 2:
        table = torch.cat([table, torch.zeros(length, 1)], dim=1)
    return table


@lru_cache(maxsize=64)
def mult_mask(tq: int, tk: int, device: str = "cpu") -> torch.Tensor:
    """Boolean (tq, tk) attention mask, True = may attend: key j is visible to query i iff j <= i + |tk - tq|."""
    with torch.inference_mode(False):
        i = torch.arange(tq).unsqueeze(1)
        j = torch.arange(tk).unsqueeze(0)
        return (j <= i + abs(tk - tq)).to(device)


@lru_cache(maxsize=64)
def future_mask(tq: int, tk: int, device: str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """:func:`mult_mask` as the official ``buffered_future_mask`` has it: (tq, tk), 0 where visible, else -inf."""
    with torch.inference_mode(False):
        mask = torch.zeros(tq, tk).masked_fill(~mult_mask(tq, tk, "cpu"), float("-inf"))
        return mask.to(device=device, dtype=dtype)


class MultiheadAttention(nn.Module):
    """Multi-head attention with the fused in-projection of the official code (Xavier init, zero biases)."""

    def __init__(self, d: int, n_heads: int, dropout: float = 0.0):
        super().__init__()
        if d % n_heads:
            raise ValueError(f"embedding width {d} is not divisible by {n_heads} heads")
        self.d, self.n_heads, self.dropout = d, n_heads, dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * d, d))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * d))
        self.out_proj = nn.Linear(d, d)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The official init (also what paired initialisation re-draws, dlf.models.paired_init)."""
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.xavier_uniform_(self.out_proj.weight)
        nn.init.zeros_(self.in_proj_bias)
        nn.init.zeros_(self.out_proj.bias)

    def project(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """x @ W[start*d:stop*d].T + b: rows 0 = query, 1 = key, 2 = value of the fused projection."""
        d = self.d
        return F.linear(x, self.in_proj_weight[start * d:stop * d], self.in_proj_bias[start * d:stop * d])

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Projected q (B, Tq, d), k, v (B, Tk, d), a :func:`future_mask` or None -> after out_proj, (B, Tq, d)."""
        p = self.dropout if self.training else 0.0
        return self.out_proj(attention(q, k, v, self.n_heads, p, mask))


class TransformerLayer(nn.Module):
    """One pre-LayerNorm encoder layer; cross-attention when key/value sources are given."""

    def __init__(self, d: int, n_heads: int, attn_dropout: float, relu_dropout: float, res_dropout: float,
                 causal: bool):
        super().__init__()
        self.self_attn = MultiheadAttention(d, n_heads, attn_dropout)
        self.fc1 = nn.Linear(d, 4 * d)
        self.fc2 = nn.Linear(4 * d, d)
        self.reset_parameters()
        self.layer_norms = nn.ModuleList([nn.LayerNorm(d), nn.LayerNorm(d)])
        self.relu_dropout, self.res_dropout, self.causal = relu_dropout, res_dropout, causal

    def reset_parameters(self) -> None:
        """fairseq's Linear init for the feed-forward layers (Xavier, zero bias); the rest keep their own."""
        for fc in (self.fc1, self.fc2):
            nn.init.xavier_uniform_(fc.weight)
            nn.init.zeros_(fc.bias)

    def forward(self, x: torch.Tensor, key: torch.Tensor | None = None, value: torch.Tensor | None = None,
                last_only: bool = False) -> torch.Tensor:
        """x (B, T, d); key/value (B, S, d) embedded sources or None. ``last_only``: return (B, 1, d) for step T-1."""
        attn, ln0 = self.self_attn, self.layer_norms[0]
        h = ln0(x)
        if key is None:
            if last_only:
                k, v = attn.project(h, 1, 3).chunk(2, dim=-1)
                q = attn.project(h[:, -1:], 0, 1)
            else:
                q, k, v = attn.project(h, 0, 3).chunk(3, dim=-1)
        else:
            q = attn.project(h[:, -1:] if last_only else h, 0, 1)
            if value is key:  # no separate dropout masks: one LayerNorm and one fused k/v projection
                k, v = attn.project(ln0(key), 1, 3).chunk(2, dim=-1)
            else:
                k, v = attn.project(ln0(key), 1, 2), attn.project(ln0(value), 2, 3)
        # The last query may attend to every key under the MulT rule, so last_only needs no mask.
        mask = future_mask(q.shape[1], k.shape[1], str(q.device), q.dtype) if self.causal and not last_only else None
        residual = x[:, -1:] if last_only else x
        x = residual + dropout(attn.attend(q, k, v, mask), self.res_dropout, self.training)
        h = F.relu(self.fc1(self.layer_norms[1](x)))
        h = self.fc2(dropout(h, self.relu_dropout, self.training))
        return x + dropout(h, self.res_dropout, self.training)


class TransformerEncoder(nn.Module):
    """Embedding (sqrt(d) scale + sinusoidal positions + dropout), ``n_layers`` layers, final LayerNorm.

    ``positions=False`` leaves the positions out (the embedding is the sqrt(d) scale alone), as MMSA's
    MULT does."""

    def __init__(self, d: int, n_heads: int, n_layers: int, attn_dropout: float = 0.0, relu_dropout: float = 0.0,
                 res_dropout: float = 0.0, embed_dropout: float = 0.0, causal: bool = True, positions: bool = True):
        super().__init__()
        self.d, self.embed_scale, self.embed_dropout = d, math.sqrt(d), embed_dropout
        self.positions = positions
        self.layers = nn.ModuleList(
            [TransformerLayer(d, n_heads, attn_dropout, relu_dropout, res_dropout, causal) for _ in range(n_layers)])
        self.layer_norm = nn.LayerNorm(d)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """sqrt(d) * x + position embedding, zero where channel 0 of x is exactly 0 (fairseq padding rule)."""
        if not self.positions:
            return x * self.embed_scale
        table = sinusoidal_table(x.shape[1], self.d, str(x.device), x.dtype)  # (T, d)
        keep = (x[..., :1] != 0).to(x.dtype)  # (B, T, 1)
        return torch.addcmul(x * self.embed_scale, keep, table)

    def forward(self, x: torch.Tensor, source: torch.Tensor | None = None, last_only: bool = False) -> torch.Tensor:
        """x (B, T, d), optional source (B, S, d) -> (B, T, d), or (B, 1, d) for the last step with ``last_only``."""
        p, training = self.embed_dropout, self.training
        x = dropout(self.embed(x), p, training)
        key = value = None
        if source is not None:
            src = self.embed(source)
            key = dropout(src, p, training)
            value = dropout(src, p, training) if training and p > 0 else key
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x, key, value, last_only=last_only and i == last)
        return self.layer_norm(x)
