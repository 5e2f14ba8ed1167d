"""DLF building blocks above the transformer: prediction heads, the BERT text encoder, and the two
enhancement modules (the Language-Focused Attractor and its MulT-style replacement for ``w/o LFA``).

Every stack is a :class:`dlf.models.layers.TransformerEncoder`; its attention dropout follows the official
``get_network`` types, which reduce to one rule: the dropout of the modality that supplies the keys
(``attn_dropout`` for L, ``attn_dropout_a`` for A, ``attn_dropout_v`` for V), and ``attn_dropout`` for
the "memory" self-attention stacks. Enhancement outputs are pooled at the last time step, as in the
official code (only that step has seen the whole sequence under the causal mask).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dlf.models._kernels import dropout
from dlf.models.dlf.config import ModelConfig
from dlf.models.layers import TransformerEncoder

__all__ = ["ResidualHead", "LanguageFocusedAttractor", "CrossModalAttention", "make_encoder",
           "key_dropout"]


def key_dropout(cfg: ModelConfig, modality: str) -> float:
    """Attention dropout of a stack whose keys come from ``modality`` (official types l/al/vl, a/la/va, v/lv/av)."""
    return {"l": cfg.attn_dropout, "a": cfg.attn_dropout_a, "v": cfg.attn_dropout_v}[modality]


def make_encoder(cfg: ModelConfig, n_layers: int, attn_dropout: float, width: int | None = None,
                 heads: int | None = None) -> TransformerEncoder:
    return TransformerEncoder(width or cfg.d_model, heads or cfg.n_heads, n_layers, attn_dropout, cfg.relu_dropout,
                              cfg.res_dropout, cfg.embed_dropout, cfg.attn_mask)


class ResidualHead(nn.Module):
    """g = x + Linear(dropout(ReLU(Linear(x)))); optional prediction Linear(width, 1)(g)."""

    def __init__(self, width: int, dropout: float, predict: bool = True):
        super().__init__()
        self.proj1 = nn.Linear(width, width)
        self.proj2 = nn.Linear(width, width)
        self.out = nn.Linear(width, 1) if predict else None
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj2(dropout(F.relu(self.proj1(x)), self.dropout, self.training)) + x

    def predict(self, g: torch.Tensor) -> torch.Tensor:
        """(B, width) -> (B,)."""
        return self.out(g).squeeze(-1)


def _last(x: torch.Tensor) -> torch.Tensor:
    return x[:, -1]


class LanguageFocusedAttractor(nn.Module):
    """LFA: L->L self-attention, and A->L / V->L cross-attention with language as the query, each
    followed by a self-attention "memory" stack; pooled at the last step.

    Official depths: ``mem.l`` has ``n_levels`` layers, ``cross.l_a``/``cross.l_v`` ``n_levels`` and
    ``mem.a``/``mem.v`` ``max(n_levels, mem_levels)``. Without language there is no query to focus
    on: each present modality then runs its memory stack on its own features (reference section 6).
    """

    def __init__(self, cfg: ModelConfig, modalities: Sequence[str]):
        super().__init__()
        self.language = "l" in modalities
        deep = max(cfg.n_levels, cfg.mem_levels)
        self.cross = nn.ModuleDict({f"l_{m}": make_encoder(cfg, cfg.n_levels, key_dropout(cfg, m))
                                    for m in modalities if m != "l" and self.language})
        self.mem = nn.ModuleDict({m: make_encoder(cfg, cfg.n_levels if m == "l" else deep, cfg.attn_dropout)
                                  for m in modalities})
        self.widths = {m: cfg.d_model for m in modalities}

    def forward(self, s: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """s: modality -> (B, T'_m, d) specific features -> modality -> (B, d)."""
        out = {}
        for m, mem in self.mem.items():
            if self.language and m != "l":
                x = self.cross[f"l_{m}"](s["l"], s[m])  # query L, key/value m: (B, T'_l, d)
            else:
                x = s[m]
            out[m] = _last(mem(x, last_only=True))
        return out


class CrossModalAttention(nn.Module):
    """``w/o LFA``: MulT/DMD-style enhancement in which EVERY modality is a query over the others.

    For target m: one cross-modal stack per other present modality o (query m, key/value o;
    ``cross.{m}_{o}``, ``n_levels`` layers), outputs concatenated on the feature axis (k * d wide),
    then a ``max(n_levels, mem_levels)``-layer self-attention memory stack of that width; last step.
    This is the pattern of DMD's ``dmd.py`` that DLF still instantiates but never calls. With a
    single modality the memory stack runs on its own features (width d).

    ``model.crossmodal_d`` = w != d narrows it as MulT does: S_m first goes through a bias-free
    ``proj.{m}`` Linear(d, w), every stack is w (cross) or k * w (memory) wide, with
    ``model.crossmodal_heads`` heads (``wo_lfa_matched``: the full model's parameter count).
    """

    def __init__(self, cfg: ModelConfig, modalities: Sequence[str]):
        super().__init__()
        deep = max(cfg.n_levels, cfg.mem_levels)
        # a family without the narrowing fields (DMD reuses this block) runs it at full width
        w = getattr(cfg, "crossmodal_d", 0) or cfg.d_model
        heads = getattr(cfg, "crossmodal_heads", 0) or cfg.n_heads
        self.proj = nn.ModuleDict({m: nn.Linear(cfg.d_model, w, bias=False) for m in modalities}) \
            if w != cfg.d_model else None
        self.others = {m: [o for o in modalities if o != m] for m in modalities}
        self.cross = nn.ModuleDict({f"{m}_{o}": make_encoder(cfg, cfg.n_levels, key_dropout(cfg, o), w, heads)
                                    for m in modalities for o in self.others[m]})
        self.widths = {m: w * max(1, len(self.others[m])) for m in modalities}
        self.mem = nn.ModuleDict({m: make_encoder(cfg, deep, cfg.attn_dropout, self.widths[m], heads)
                                  for m in modalities})

    def forward(self, s: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """s: modality -> (B, T'_m, d) -> modality -> (B, k_m * w)."""
        if self.proj is not None:
            s = {m: self.proj[m](x) for m, x in s.items()}
        out = {}
        for m, mem in self.mem.items():
            others = self.others[m]
            x = torch.cat([self.cross[f"{m}_{o}"](s[m], s[o]) for o in others], dim=-1) if others else s[m]
            out[m] = _last(mem(x, last_only=True))
        return out
