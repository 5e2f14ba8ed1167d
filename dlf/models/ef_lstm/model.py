"""EF_LSTM, the early-fusion LSTM baseline, as MMSA 2.2.1 builds it, module for module.

B batch, T time steps (50, the aligned file), D = d_l + d_a + d_v (793 MOSI, 877 MOSEI), H hidden.

1. Inputs: the aligned text, audio and vision as stored, padding steps included (no lengths are used).
2. Early fusion: x = concat(text, audio, vision) along the features, (B, T, D).
3. BatchNorm1d(T): the T time steps are the channels (MMSA's quirk, ``norm_time_steps_as_channels``),
   each normalised over the batch and the D features in training; running statistics in eval.
4. LSTM(D -> H, num_layers, dropout between layers) over all T steps; h_n of the last layer (B, H).
5. Head: dropout, Linear(H, H), ReLU, dropout, Linear(H, 1) = M (B, 1).

Names are MMSA's (the ``Model.`` prefix stripped), so an MMSA checkpoint loads as it is. Dropout on
h_n and in the head goes through ``dlf.models._kernels.dropout`` (per-micro-batch masks); the LSTM's
inter-layer dropout is torch's own (``nn.LSTM(dropout=...)``, the global generator), which is
deterministic because BatchNorm keeps training to one micro-batch at a time.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from dlf.errors import DLFError
from dlf.models._kernels import dropout
from dlf.models.mmsa_common import convert_mmsa, l1_loss_terms, parameter_summary, shape
from dlf.models.registry import ModelFamily

__all__ = ["EF_LSTM", "build_model", "param_groups", "convert_official", "FAMILY"]

_NAMES = {"l": "text", "a": "audio", "v": "vision"}


class EF_LSTM(nn.Module):
    family = "ef_lstm"

    def __init__(self, cfg: Any, dims: Mapping[str, int], seq_lens: Mapping[str, int]):
        super().__init__()
        m = cfg.model
        self.mods, self.p = tuple(m.modalities), m.dropout
        self.over_time = m.norm_time_steps_as_channels
        in_size = sum(int(dims[x]) for x in self.mods)
        steps = aligned_length(seq_lens, self.mods)
        self.norm = nn.BatchNorm1d(steps if self.over_time else in_size)
        # torch warns about inter-layer dropout on a single layer; it never acts there, so pass 0
        self.lstm = nn.LSTM(in_size, m.hidden_dim, num_layers=m.num_layers, batch_first=True,
                            dropout=m.dropout if m.num_layers > 1 else 0.0)
        self.linear = nn.Linear(m.hidden_dim, m.hidden_dim)
        self.out = nn.Linear(m.hidden_dim, 1)

    def forward(self, text, audio, vision, with_losses: bool = True) -> dict[str, torch.Tensor]:
        streams = {"l": text, "a": audio, "v": vision}
        x = torch.cat([streams[m] for m in self.mods], dim=-1)  # (B, T, D)
        # (B, T, D) is BatchNorm1d's (N, C, L): channels are the time steps; else normalise features
        x = self.norm(x) if self.over_time else self.norm(x.transpose(1, 2)).transpose(1, 2)
        _, (h_n, _) = self.lstm(x)  # h_n (num_layers, B, H)
        h = dropout(h_n[-1], self.p, self.training)  # (B, H), the last layer's state after step T
        h = dropout(F.relu(self.linear(h)), self.p, self.training)
        return {"M": self.out(h)}  # (B, 1)


def aligned_length(seq_lens: Mapping[str, int], mods: tuple[str, ...]) -> int:
    """The common length of the fused streams; EF_LSTM concatenates them step by step, so the streams
    must be aligned (MMSA reads aligned_50.pkl for it)."""
    lens = {m: int(seq_lens[m]) for m in mods}
    if len(set(lens.values())) != 1:
        have = ", ".join(f"{_NAMES[m]} {n}" for m, n in lens.items())
        raise DLFError(f"ef_lstm concatenates its streams time step by time step, so it needs aligned data, "
                       f"but the dataset's streams have {have} steps; use the aligned file "
                       f"(aligned_50.pkl, data.aligned=true) or a pickle whose streams have equal lengths")
    return next(iter(lens.values()))


def build_model(cfg: Any, dims: Mapping[str, int], seq_lens: Mapping[str, int], bert_config=None) -> EF_LSTM:
    """An EF_LSTM for data of these widths and (equal) stored lengths."""
    return EF_LSTM(cfg, dims, seq_lens)


def param_groups(model: nn.Module, cfg: Any) -> list[dict]:
    """MMSA's one Adam group: every parameter at train.lr, with train.weight_decay. (train.accumulation
    is 1: the family's config check refuses anything else.)"""
    return [{"params": [p for p in model.parameters() if p.requires_grad]}]


def _sizes(state, cfg, dims, seq_lens, source):
    """(model.* overrides, widths, lengths) from MMSA EF_LSTM weights: H and the layer count from the
    LSTM, T from BatchNorm1d(T). The weights fix only the fused width, so the dataset's split of it is
    checked against them."""
    data_steps = aligned_length(seq_lens, ("l", "a", "v"))  # an unaligned file is refused first
    hh, ih, norm = (shape(state, k) for k in ("lstm.weight_hh_l0", "lstm.weight_ih_l0", "norm.weight"))
    overrides: dict[str, Any] = {}
    if hh is not None:
        overrides["model.hidden_dim"] = hh[1]
        overrides["model.num_layers"] = sum(1 for k in state if k.startswith("lstm.weight_ih_l"))
    if ih is not None and ih[1] != sum(dims.values()):
        have = " + ".join(f"{_NAMES[m]} {dims[m]}" for m in ("l", "a", "v"))
        raise DLFError(f"{source}: the weights take fused inputs of width {ih[1]}, but the dataset gives "
                       f"{have} = {sum(dims.values())}; use the dataset the checkpoint was trained on")
    steps = norm[0] if norm is not None else data_steps  # the caller compares it with the dataset's
    return overrides, dict(dims), {m: steps for m in ("l", "a", "v")}


def convert_official(state, corpus: str, pretrained=None, source: str = "state_dict", dims=None, seq_lens=None):
    """MMSA's EF_LSTM state_dict (``Model.norm/lstm/linear/out``) -> an EF_LSTM (eval mode)."""
    return convert_mmsa(state, corpus, "ef_lstm", "EF_LSTM", build_model, _sizes, source, dims, seq_lens)


FAMILY = ModelFamily(build=build_model, loss_terms=l1_loss_terms, prediction=lambda out: out["M"].reshape(-1),
                     summary=parameter_summary, convert_official=convert_official, param_groups=param_groups)
