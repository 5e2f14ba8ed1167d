"""The DMD model as the authors' code builds it (mdswyz/DMD ``dmd.py`` and its two GD units), module for module.

B batch, d = d_model (50 MOSI, 30 MOSEI), T'_m = T_m - k_m + 1 after the input Conv1d. Internally
batch-first (B, T', d); the outputs keep the official names and, but for s_m / c_m, the official layouts.

1. Extract: text encoder (the stored 768-d ``text`` features, or BERT fine-tuned over ``text_bert``),
   text dropout; per modality Conv1d (no bias, no padding) -> origin_m.
2. Decouple: one 1x1 Conv1d (no bias) per modality -> s_m (exclusive), ONE shared 1x1 Conv1d -> c_m
   (common); margin features c_m_sim = align_c_m(c_m flattened channel-major); recon_m = decoder_m([s_m;
   c_m]); s_m_r = the same exclusive encoder on recon_m. [DLF's decoders and triplet projections]
3. Homogeneous heads on c_m flattened time-major: repr_m_homo = ReLU(proj1(h)), logits_m_homo =
   out(proj2(dropout(repr)) + h). Dead projections proj_s_m = proj_cosine_m(s_m flattened).
4. Shared branch: a self-attention stack per modality on c_m, last step, [l, v, a] -> c_fusion; shared
   residual head -> logits_c. [DLF's shared branch and head, depth n_levels]
5. Heterogeneous branch: MulT cross-modal attention on s_m (every modality a query over the other two,
   concatenated, a 2d-wide memory stack, last step) -> last_h_m; residual heads -> repr_m_hetero,
   logits_m_hetero. [DLF's CrossModalAttention]
6. Fuse: [sigmoid(weight_m(last_h_m)) for l, v, a; sigmoid(weight_c(c_fusion))] (9d) -> final residual
   head -> output_logit.
7. Graph distillation (with the loss-side outputs): gd_homo on (logits_m_homo, repr_m_homo), gd_hetero on
   (logits_m_hetero, repr_m_hetero) -> edge weights (B, 6) and edge logits (B, 6).
"""
from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from dlf.errors import DLFError
from dlf.models._kernels import dropout, temporal_conv
from dlf.models.dlf.blocks import CrossModalAttention, ResidualHead, key_dropout, make_encoder
from dlf.models.dmd.units import GraphDistillation
from dlf.models.text import FineTunedBert, check_token_ids

__all__ = ["DMD", "HomoHead", "build_model", "parameter_summary", "ORDER"]

ORDER = ("l", "v", "a")  # the official order of every concatenation and of the GD units' stacking
_NAMES = {"l": "text", "a": "audio", "v": "vision"}


class HomoHead(nn.Module):
    """A homogeneous ("low") head: repr = ReLU(proj1(h)), logit = out(proj2(dropout(repr)) + h);
    h = c_m flattened time-major (B, d T'). proj1 goes down to d, proj2 back up to d T'."""

    def __init__(self, flat: int, d: int, p: float):
        super().__init__()
        self.proj1, self.proj2, self.out = nn.Linear(flat, d), nn.Linear(d, flat), nn.Linear(flat, 1)
        self.p = p

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, d T') -> (repr (B, d), logit (B, 1)); the official ReLU is in place, so repr is post-ReLU."""
        rep = F.relu(self.proj1(h))
        return rep, self.out(self.proj2(dropout(rep, self.p, self.training)) + h)


def _conv1x1(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """A kernel-1 Conv1d (no bias) on batch-first (B, T, C_in): a Linear over the channels."""
    return F.linear(x, conv.weight[:, :, 0])


class DMD(nn.Module):
    """DMD for data of widths ``dims`` and stored lengths ``seq_lens`` (modality -> int)."""

    family = "dmd"

    def __init__(self, cfg, dims: Mapping[str, int], seq_lens: Mapping[str, int], bert_config: Mapping | None = None):
        super().__init__()
        m = self.cfg = cfg.model
        d, mods = m.d_model, ORDER
        self.text_encoder = FineTunedBert(m.pretrained, bert_config) if m.text_encoder == "bert" else None
        widths = {k: int(dims[k]) for k in mods}
        if self.text_encoder is not None:
            widths["l"] = self.text_encoder.width
        kernels = {"l": m.conv_kernel_l, "a": m.conv_kernel_a, "v": m.conv_kernel_v}
        self.in_dims, self.seq_lens = widths, {k: int(seq_lens[k]) for k in mods}
        self.out_lens = {k: self.seq_lens[k] - kernels[k] + 1 for k in mods}
        if min(self.out_lens.values()) < 1:
            raise DLFError(f"model.conv_kernel_* ({kernels}) longer than a sequence ({self.seq_lens}); lower them")
        flat = {k: d * self.out_lens[k] for k in mods}
        self.input_proj = nn.ModuleDict({k: nn.Conv1d(widths[k], d, kernels[k], bias=False) for k in mods})
        self.specific_encoders = nn.ModuleDict({k: nn.Conv1d(d, d, 1, bias=False) for k in mods})
        self.shared_encoder = nn.Conv1d(d, d, 1, bias=False)
        self.decoders = nn.ModuleDict({k: nn.Conv1d(2 * d, d, 1, bias=False) for k in mods})
        self.triplet_proj = nn.ModuleDict({k: nn.Linear(flat[k], d) for k in mods})  # official align_c_*
        self.proj_cosine = nn.ModuleDict({k: nn.Linear(flat[k], d) for k in mods}) if m.dead_projections else None
        self.homo_heads = nn.ModuleDict({k: HomoHead(flat[k], d, m.output_dropout) for k in mods})
        self.shared_branch = nn.ModuleDict({k: make_encoder(m, m.n_levels, key_dropout(m, k)) for k in mods})
        self.shared_head = ResidualHead(3 * d, m.output_dropout)
        self.crossmodal = CrossModalAttention(m, ("l", "a", "v"))  # keys l_a, l_v, a_l, a_v, v_l, v_a
        w = self.crossmodal.widths  # 2d each
        self.hetero_heads = nn.ModuleDict({k: ResidualHead(w[k], m.output_dropout) for k in mods})
        self.fusion = nn.ModuleDict({**{k: nn.Linear(w[k], w[k]) for k in mods}, "c": nn.Linear(3 * d, 3 * d)})
        self.final_head = ResidualHead(sum(w.values()) + 3 * d, m.output_dropout)
        self.gd_homo = GraphDistillation(d, m.gd_homo_size, m.gd_temperature)
        self.gd_hetero = GraphDistillation(w["l"], m.gd_hetero_size, m.gd_temperature)

    def forward(self, text: torch.Tensor, audio: torch.Tensor, vision: torch.Tensor, *,
                with_losses: bool = True) -> dict[str, torch.Tensor]:
        """-> the official outputs by name; ``with_losses=False`` computes what ``output_logit`` needs."""
        x = self.extract({"l": text, "a": audio, "v": vision})  # m -> (B, T'_m, d)
        s = {k: _conv1x1(self.specific_encoders[k], x[k]) for k in ORDER}
        c = {k: _conv1x1(self.shared_encoder, x[k]) for k in ORDER}
        c_fusion = torch.cat([self.shared_branch[k](c[k], last_only=True)[:, -1] for k in ORDER], dim=-1)  # (B, 3d)
        last_h = self.crossmodal(s)  # m -> (B, 2d)
        z = torch.cat([torch.sigmoid(self.fusion[k](last_h[k])) for k in ORDER]
                      + [torch.sigmoid(self.fusion["c"](c_fusion))], dim=-1)  # (B, 9d)
        out = {"output_logit": self.final_head.out(self.final_head(z)),  # (B, 1)
               "fused": z, "c_fusion": c_fusion, **{f"last_h_{k}": last_h[k] for k in ORDER}}
        if with_losses:
            out.update(self._loss_side(x, s, c, c_fusion, last_h))
        return out

    def extract(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """modality -> raw input -> origin (B, T'_m, d)."""
        out = {}
        for k in ORDER:
            x = inputs[k]
            if k == "l":
                if self.text_encoder is not None:
                    x = self._bert(x)
                x = dropout(x, self.cfg.text_dropout, self.training)
            self._check(k, x)
            out[k] = temporal_conv(x, self.input_proj[k].weight)
        return out

    def _bert(self, tokens: torch.Tensor) -> torch.Tensor:
        """``text_bert`` (B, 3, T): rows input_ids, attention_mask, token_type_ids -> last hidden state."""
        if tokens.dim() != 3 or tokens.shape[1] != 3:
            raise DLFError(f"text input has shape {tuple(tokens.shape)}; the bert text mode reads text_bert (batch, 3, "
                           f"{self.seq_lens['l']})")
        ids, mask, types = tokens[:, 0].long(), tokens[:, 1].float(), tokens[:, 2].long()
        check_token_ids(ids, self.text_encoder.bert.config.vocab_size)
        return self.text_encoder.bert(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state

    def _loss_side(self, x, s, c, c_fusion, last_h) -> dict[str, torch.Tensor]:
        """Every other official output, and the GD units' edges."""
        out: dict[str, torch.Tensor] = {}
        b = c_fusion.shape[0]
        for k in ORDER:
            rep, logit = self.homo_heads[k](c[k].reshape(b, -1))  # time-major flattening
            out[f"logits_{k}_homo"], out[f"repr_{k}_homo"] = logit, rep
        for k in ORDER:
            recon = _conv1x1(self.decoders[k], torch.cat([s[k], c[k]], dim=-1))
            out[f"origin_{k}"] = x[k].transpose(1, 2)  # (B, d, T'), official layout
            out[f"s_{k}"], out[f"c_{k}"] = s[k], c[k]  # (B, T', d); official (T', B, d)
            if self.proj_cosine is not None:
                out[f"proj_s_{k}"] = self.proj_cosine[k](s[k].reshape(b, -1))
            out[f"s_{k}_r"] = _conv1x1(self.specific_encoders[k], recon).transpose(1, 2)  # (B, d, T')
            out[f"recon_{k}"] = recon.transpose(1, 2)
            out[f"c_{k}_sim"] = self.triplet_proj[k](c[k].transpose(1, 2).reshape(b, -1))  # channel-major
        for k in ORDER:
            rep = self.hetero_heads[k](last_h[k])
            out[f"logits_{k}_hetero"], out[f"repr_{k}_hetero"] = self.hetero_heads[k].out(rep), rep
        out["logits_c"] = self.shared_head.out(self.shared_head(c_fusion))
        for kind, unit in (("homo", self.gd_homo), ("hetero", self.gd_hetero)):
            logits = torch.stack([out[f"logits_{k}_{kind}"] for k in ORDER])  # (3, B, 1)
            reprs = torch.stack([out[f"repr_{k}_{kind}"] for k in ORDER])
            out[f"edges_{kind}"], out[f"edge_logits_{kind}"] = unit(logits, reprs)  # (B, 6) each
        return out

    def _check(self, k: str, x: torch.Tensor) -> None:
        if x.dim() != 3 or x.shape[1] != self.seq_lens[k] or x.shape[2] != self.in_dims[k]:
            raise DLFError(f"{_NAMES[k]} input has shape {tuple(x.shape)}; this model expects (batch, "
                           f"{self.seq_lens[k]}, {self.in_dims[k]}): use the dataset the model was built for")


def build_model(cfg, dims: Mapping[str, int], seq_lens: Mapping[str, int], bert_config: Mapping | None = None) -> DMD:
    """A DMD (with its two GD units) for data of these widths; in the bert mode BERT comes from
    model.pretrained, or is built from ``bert_config`` (a checkpoint's, whose weights are loaded next)."""
    return DMD(cfg, dims, seq_lens, bert_config)


def parameter_summary(model: DMD) -> dict:
    """{"total" (every registered parameter: model, dead projections and both GD units), "text_encoder"
    (BERT with its pooler; 0 in the features mode), "components": every other top-level module}."""
    def count(module: nn.Module | None) -> int:
        return sum(p.numel() for p in module.parameters()) if module is not None else 0

    components = {name: count(child) for name, child in model.named_children() if name != "text_encoder"}
    return {"total": count(model), "text_encoder": count(model.text_encoder), "components": components}
