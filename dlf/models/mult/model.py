"""MulT as MMSA 2.2.1 runs it (``MULT``, Tsai et al. 2019), module for module.

Shapes are batch-first: B batch, T_m stored length (unaligned MOSI: 50 / 375 / 500), T'_m = T_m - k_m + 1
after the input Conv1d, d = d_model.

1. Project: text dropout; per-modality Conv1d (no bias, no padding) to d channels -> X_m (B, T'_m, d).
2. Crossmodal: for each target m and each other modality o, an encoder whose query stream is X_m and
   whose keys/values are X_o (``trans_{m}_with_{o}``, n_levels layers) -> (B, T'_m, d); no positions.
3. Memory: the two streams of m concatenated (B, T'_m, 2d) through a self-attention encoder
   (``trans_{m}_mem``, max(n_levels, mem_levels) layers); its last step (a padding position for short
   samples, as in MMSA) is Feature_t / Feature_a / Feature_v (B, 2d).
4. Head: Feature_f = [Feature_t; Feature_a; Feature_v] (B, 6d); M = out_layer(proj2(drop(relu(proj1(f)))) + f).

Every encoder is the shared :class:`dlf.models.layers.TransformerEncoder` (fairseq/MulT layout and
parameter names), so MMSA's state_dict loads as is, less its ``Model.`` prefix and ``version`` buffers.
Dropout draws from the calling thread's generator (``dlf.models._kernels.dropout``): the trainer computes
the 8 micro-batches of an accumulation window concurrently.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from dlf.errors import DLFError
from dlf.models._kernels import dropout, temporal_conv
from dlf.models.layers import TransformerEncoder
from dlf.models.mult.config import MODALITIES, ModelConfig

__all__ = ["MULT", "build_model", "loss_terms", "parameter_summary"]

_NAMES = {"l": "text", "a": "audio", "v": "vision"}
_FEATURES = {"l": "Feature_t", "a": "Feature_a", "v": "Feature_v"}


class MULT(nn.Module):
    """MulT over text, audio and vision; ``dims``/``seq_lens``: modality -> input width / stored length."""

    family = "mult"

    def __init__(self, cfg: ModelConfig, dims: Mapping[str, int], seq_lens: Mapping[str, int]):
        super().__init__()
        self.cfg, d = cfg, cfg.d_model
        self.in_dims = {m: int(dims[m]) for m in MODALITIES}
        kernels = {"l": cfg.conv_kernel_l, "a": cfg.conv_kernel_a, "v": cfg.conv_kernel_v}
        # MulT quirk: an input already d wide skips its Conv1d (whose weights are still built)
        self.skip_conv = {m: cfg.skip_equal_width_conv and self.in_dims[m] == d for m in MODALITIES}
        for m in MODALITIES:
            out_len = int(seq_lens[m]) - (0 if self.skip_conv[m] else kernels[m] - 1)
            if out_len < 1:
                raise DLFError(f"model.conv_kernel_{m}={kernels[m]} is longer than the {_NAMES[m]} sequence "
                               f"({seq_lens[m]} steps); lower model.conv_kernel_{m}")
        self.proj_l, self.proj_a, self.proj_v = (nn.Conv1d(self.in_dims[m], d, kernels[m], bias=False) for m in MODALITIES)
        keys = {"l": cfg.attn_dropout, "a": cfg.attn_dropout_a, "v": cfg.attn_dropout_v}  # by the keys' modality
        for m in MODALITIES:
            for o in MODALITIES:
                if o != m:
                    setattr(self, f"trans_{m}_with_{o}", self._encoder(d, cfg.n_levels, keys[o]))
        for m in MODALITIES:
            setattr(self, f"trans_{m}_mem", self._encoder(2 * d, max(cfg.n_levels, cfg.mem_levels), cfg.attn_dropout))
        self.proj1 = nn.Linear(6 * d, 6 * d)
        self.proj2 = nn.Linear(6 * d, 6 * d)
        self.out_layer = nn.Linear(6 * d, 1)

    def _encoder(self, width: int, layers: int, attn_dropout: float) -> TransformerEncoder:
        c = self.cfg
        return TransformerEncoder(width, c.n_heads, layers, attn_dropout, c.relu_dropout, c.res_dropout,
                                  c.embed_dropout, c.attn_mask, positions=c.positions)

    def forward(self, text: torch.Tensor, audio: torch.Tensor, vision: torch.Tensor,
                with_losses: bool = True) -> dict[str, torch.Tensor]:
        """text (B, T_l, D_l), audio (B, T_a, D_a), vision (B, T_v, D_v) -> MMSA's outputs (every one is cheap,
        so ``with_losses`` changes nothing)."""
        x = self.project({"l": text, "a": audio, "v": vision})  # m -> (B, T'_m, d)
        feats = {}
        for m in MODALITIES:
            others = [o for o in MODALITIES if o != m]  # MMSA's order: l<-(a, v), a<-(l, v), v<-(l, a)
            h = torch.cat([getattr(self, f"trans_{m}_with_{o}")(x[m], x[o]) for o in others], dim=-1)  # (B, T'_m, 2d)
            feats[_FEATURES[m]] = getattr(self, f"trans_{m}_mem")(h, last_only=True)[:, -1]  # (B, 2d)
        fused = torch.cat([feats[_FEATURES[m]] for m in MODALITIES], dim=-1)  # Feature_f (B, 6d)
        head = self.proj2(dropout(F.relu(self.proj1(fused)), self.cfg.output_dropout, self.training)) + fused
        return {**feats, "Feature_f": fused, "M": self.out_layer(head)}  # M (B, 1)

    def project(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """modality -> raw input (B, T_m, D_m) -> X_m (B, T'_m, d): text dropout, then the Conv1d."""
        out = {}
        for m in MODALITIES:
            x = inputs[m]
            if x.dim() != 3 or x.shape[2] != self.in_dims[m]:
                raise DLFError(f"{_NAMES[m]} input has shape {tuple(x.shape)}; this model expects (batch, time, "
                               f"{self.in_dims[m]}): use the dataset the model was built for")
            if m == "l":
                x = dropout(x, self.cfg.text_dropout, self.training)
            conv = getattr(self, f"proj_{m}")
            out[m] = x if self.skip_conv[m] else temporal_conv(x, conv.weight)  # the Conv1d, batch-first
        return out


def build_model(cfg: Any, dims: Mapping[str, int], seq_lens: Mapping[str, int], bert_config: Mapping | None = None) -> MULT:
    """The MulT of a run config (feature text only: ``bert_config`` is not used)."""
    return MULT(cfg.model, dims, seq_lens)


def loss_terms(out: Mapping[str, torch.Tensor], labels: torch.Tensor, cfg: Any) -> dict[str, torch.Tensor]:
    """MMSA's criterion: L1 between M and the label, the batch mean."""
    l1 = F.l1_loss(out["M"].reshape(-1), labels.reshape(-1).to(out["M"].dtype))
    return {"total": cfg.loss.task * l1, "task_l1": l1}


def parameter_summary(model: MULT) -> dict:
    """{"total", "text_encoder": 0, "components": {top-level module: N}} (registered parameters)."""
    def count(module: nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    return {"total": count(model), "text_encoder": 0,
            "components": {name: count(child) for name, child in model.named_children()}}
