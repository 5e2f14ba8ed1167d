"""The DLF model: extract -> disentangle -> enhance -> fuse -> predict (official DLF, module for module).

Shapes are batch-first: B batch, T_m stored length, T'_m = T_m - k + 1 after the input Conv1d, d = 50.

1. Extract: text encoder (identity over precomputed features, or BERT), text dropout, per-modality
   Conv1d (no bias, no padding) to d channels -> X_m (B, T'_m, d).
2. Disentangle (FDM): specific encoders S_m = E_s^m(X_m); one shared encoder C_m = E_c(X_m);
   decoders X~_m = D_m([S_m; C_m]); re-encoding S'_m = E_s^m(X~_m); triplet features Linear(C_m
   flattened channel-major) -> (B, d). Without the FDM, X_m feeds both branches directly.
3. Shared branch: one self-attention stack per modality on C_m, last step, concatenated in the
   official order [l, v, a] -> c_fusion; shared head (residual MLP) -> y_sh.
4. Enhance: the LFA (or the MulT-style replacement) on S_m -> h_m; specific heads g_m = MLP(h_m) + h_m
   -> y_m.
5. Fuse and predict: [sigmoid(P_m g_m) for m in l, v, a; sigmoid(P_c c_fusion)] -> final residual
   MLP -> y.

Switches are read once here; a disabled part is not built. When a ``LossConfig`` is given, parts
that only feed a loss term whose weight is zero are not built either (every built parameter then
gets a gradient): the triplet projections (lambda_m), the re-encoding (lambda_s), the decoders
(lambda_r and lambda_s), the shared and specific prediction layers (beta_sh, beta_m, or ``hp``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from dlf.config import RunConfig
from dlf.errors import DLFError
from dlf.models._kernels import dropout, temporal_conv
from dlf.models.dlf.blocks import CrossModalAttention, LanguageFocusedAttractor, ResidualHead, key_dropout, make_encoder
from dlf.models.dlf.config import LossConfig, ModelConfig
from dlf.models.text import BertText

__all__ = ["DLF", "DLFOutput", "build_model", "parameter_summary", "FUSION_ORDER"]

FUSION_ORDER = ("l", "v", "a")  # the official order of the shared and fused concatenations
_NAMES = {"l": "text", "a": "audio", "v": "vision"}


@dataclass
class DLFOutput:
    pred: torch.Tensor  # (B,) final prediction
    pred_shared: torch.Tensor | None = None  # (B,) shared-head prediction (hp)
    pred_specific: dict[str, torch.Tensor] = field(default_factory=dict)  # m -> (B,) (hp)
    proj: dict[str, torch.Tensor] = field(default_factory=dict)  # X_m (B, T'_m, d)
    specific: dict[str, torch.Tensor] = field(default_factory=dict)  # S_m (B, T'_m, d); FDM only
    shared: dict[str, torch.Tensor] = field(default_factory=dict)  # C_m (B, T'_m, d); FDM only
    recon: dict[str, torch.Tensor] = field(default_factory=dict)  # X~_m (B, T'_m, d)
    specific_re: dict[str, torch.Tensor] = field(default_factory=dict)  # S'_m (B, T'_m, d)
    shared_sim: dict[str, torch.Tensor] = field(default_factory=dict)  # triplet features (B, d)
    # per-sample representations (B, width) for analyses (``features`` of the family seam): ``fused`` (what
    # the final head reads), ``shared`` (c_fusion, what the shared head reads), ``specific_<m>`` (S_m at
    # its last step: X_m w/o FDM), ``enhanced_<m>`` (g_m: the enhanced branch after its head, fused next)
    features: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class _Parts:
    """Which optional parts to build, from the switches and (when known) the loss weights."""

    decoders: bool
    reencode: bool
    triplet: bool
    shared_head: bool
    specific_out: frozenset

    @classmethod
    def of(cls, cfg: ModelConfig, loss: LossConfig | None) -> _Parts:
        def on(weight: str) -> bool:
            return loss is None or getattr(loss, weight) > 0

        fdm, hp = cfg.fdm, cfg.hp
        return cls(decoders=fdm and (on("lambda_r") or on("lambda_s")), reencode=fdm and on("lambda_s"),
                   triplet=fdm and on("lambda_m"), shared_head=hp and on("beta_sh"),
                   specific_out=frozenset(m for m in cfg.modalities if hp and on(f"beta_{m}")))


class DLF(nn.Module):
    """DLF for modalities ``cfg.modalities``; ``dims``/``seq_lens``: modality -> feature width / stored length."""

    family = "dlf"  # the registry reads predictions through the family's definition

    def __init__(self, cfg: ModelConfig, dims: Mapping[str, int], seq_lens: Mapping[str, int],
                 loss: LossConfig | None = None, bert_config: Mapping | None = None):
        super().__init__()
        self.cfg, self.parts = cfg, _Parts.of(cfg, loss)
        mods = self.modalities = tuple(cfg.modalities)
        self.order = tuple(m for m in FUSION_ORDER if m in mods)
        self.text_input = "text" if cfg.text_encoder == "features" else "text_bert"
        d, k = cfg.d_model, cfg.conv_kernel
        self.text_encoder = None
        if "l" in mods and cfg.text_encoder != "features":
            self.text_encoder = BertText(cfg.pretrained, cfg.text_encoder == "bert_frozen", bert_config)
        widths = {m: int(dims[m]) for m in mods}
        if self.text_encoder is not None:
            widths["l"] = self.text_encoder.width
        self.in_dims, self.seq_lens = widths, {m: int(seq_lens[m]) for m in mods}
        self.out_lens = {m: self.seq_lens[m] - k + 1 for m in mods}
        if min(self.out_lens.values()) < 1:
            raise DLFError(f"model.conv_kernel={k} is longer than a sequence ({self.seq_lens}); lower model.conv_kernel")
        self.input_proj = nn.ModuleDict({m: nn.Conv1d(widths[m], d, k, bias=False) for m in mods})
        if cfg.fdm:
            self._build_fdm(cfg)
        self.shared_branch = nn.ModuleDict({m: make_encoder(cfg, cfg.n_levels, key_dropout(cfg, m)) for m in mods})
        shared_width = d * len(mods)
        if self.parts.shared_head:
            self.shared_head = ResidualHead(shared_width, cfg.output_dropout)
        enhancer = LanguageFocusedAttractor(cfg, mods) if cfg.lfa else CrossModalAttention(cfg, mods)
        self._enhancer = "lfa" if cfg.lfa else "crossmodal"  # the component is named for what it is
        setattr(self, self._enhancer, enhancer)
        w = enhancer.widths
        self.specific_heads = nn.ModuleDict({m: ResidualHead(w[m], cfg.output_dropout, m in self.parts.specific_out)
                                             for m in mods})
        self.fusion = nn.ModuleDict({**{m: nn.Linear(w[m], w[m]) for m in self.order},
                                     "c": nn.Linear(shared_width, shared_width)})
        self.final_head = ResidualHead(sum(w.values()) + shared_width, cfg.output_dropout)

    def _build_fdm(self, cfg: ModelConfig) -> None:
        d, mods = cfg.d_model, self.modalities
        self.specific_encoders = nn.ModuleDict({m: make_encoder(cfg, cfg.n_levels, key_dropout(cfg, m)) for m in mods})
        self.shared_encoder = make_encoder(cfg, cfg.n_levels, cfg.attn_dropout)  # official type 'l'
        if self.parts.decoders:
            self.decoders = nn.ModuleDict({m: nn.Conv1d(2 * d, d, 1, bias=False) for m in mods})
        if self.parts.triplet:
            self.triplet_proj = nn.ModuleDict({m: nn.Linear(d * self.out_lens[m], d) for m in mods})

    # -- pipeline ------------------------------------------------------------------------------------
    def forward(self, text: torch.Tensor, audio: torch.Tensor, vision: torch.Tensor, *,
                with_losses: bool = True) -> DLFOutput:
        """``with_losses=False`` skips what only the geometric losses read (X~, S', triplet features): for inference."""
        x = self.extract({"l": text, "a": audio, "v": vision})
        fdm = self.disentangle(x, with_losses) if self.cfg.fdm else {}
        specific, shared = fdm.get("specific", x), fdm.get("shared", x)  # w/o FDM: X_m feeds both branches
        c_fusion = torch.cat([self.shared_branch[m](shared[m], last_only=True)[:, -1] for m in self.order], dim=-1)
        h = getattr(self, self._enhancer)(specific)  # m -> (B, width_m)
        g = {m: self.specific_heads[m](h[m]) for m in self.modalities}
        fused = torch.cat([torch.sigmoid(self.fusion[m](g[m])) for m in self.order]
                          + [torch.sigmoid(self.fusion["c"](c_fusion))], dim=-1)
        return DLFOutput(
            pred=self.final_head.predict(self.final_head(fused)),
            pred_shared=self.shared_head.predict(self.shared_head(c_fusion)) if self.parts.shared_head else None,
            pred_specific={m: self.specific_heads[m].predict(g[m]) for m in self.modalities
                           if m in self.parts.specific_out},
            proj=x, **fdm, features={"fused": fused, "shared": c_fusion,
                                     **{f"specific_{m}": specific[m][:, -1] for m in self.modalities},
                                     **{f"enhanced_{m}": g[m] for m in self.modalities}})

    def extract(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """modality -> raw input -> X_m (B, T'_m, d)."""
        out = {}
        for m in self.modalities:
            x = inputs[m]
            if m == "l":
                if self.text_encoder is not None:
                    x = self.text_encoder(x)
                x = dropout(x, self.cfg.text_dropout, self.training)
            self._check(m, x)
            out[m] = temporal_conv(x, self.input_proj[m].weight)  # the Conv1d, batch-first: (B, T', d)
        return out

    def disentangle(self, x: Mapping[str, torch.Tensor], with_losses: bool = True) -> dict[str, dict[str, torch.Tensor]]:
        """S_m, C_m and, where built, X~_m, S'_m and the triplet features (``DLFOutput`` field names)."""
        mods = self.modalities
        s = {m: self.specific_encoders[m](x[m]) for m in mods}
        c = self._shared(x)
        out = {"specific": s, "shared": c}
        if not with_losses:
            return out
        if self.parts.decoders:  # a kernel-1 Conv1d is a Linear on (B, T', 2d)
            out["recon"] = {m: F.linear(torch.cat([s[m], c[m]], dim=-1), self.decoders[m].weight[:, :, 0])
                            for m in mods}
        if self.parts.reencode:
            out["specific_re"] = {m: self.specific_encoders[m](out["recon"][m]) for m in mods}
        if self.parts.triplet:  # official: Linear over C_m viewed as (B, d, T') and flattened (channel-major)
            out["shared_sim"] = {m: self.triplet_proj[m](c[m].transpose(1, 2).reshape(c[m].shape[0], -1))
                                 for m in mods}
        return out

    def _shared(self, x: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The shared encoder on every modality; one batched call when the lengths agree (same weights)."""
        mods = self.modalities
        if len(mods) > 1 and len({x[m].shape[1] for m in mods}) == 1:
            b = x[mods[0]].shape[0]
            return dict(zip(mods, self.shared_encoder(torch.cat([x[m] for m in mods], dim=0)).split(b)))
        return {m: self.shared_encoder(x[m]) for m in mods}

    def _check(self, m: str, x: torch.Tensor) -> None:
        if x.dim() != 3 or x.shape[1] != self.seq_lens[m] or x.shape[2] != self.in_dims[m]:
            raise DLFError(f"{_NAMES[m]} input has shape {tuple(x.shape)}; this model expects (batch, "
                           f"{self.seq_lens[m]}, {self.in_dims[m]}): use the dataset the model was built for")


def build_model(cfg: RunConfig, dims: Mapping[str, int], seq_lens: Mapping[str, int],
                bert_config: Mapping | None = None) -> DLF:
    """The DLF of a run config; parts feeding only zero-weight loss terms are left out."""
    return DLF(cfg.model, dims, seq_lens, loss=cfg.loss, bert_config=bert_config)


def parameter_summary(model: DLF) -> dict:
    """{"total", "text_encoder", "components": {name: N}}, total = text_encoder + sum(components)."""
    def count(module: nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    components = {name: count(child) for name, child in model.named_children() if name != "text_encoder"}
    text = count(model.text_encoder) if model.text_encoder is not None else 0
    return {"total": count(model), "text_encoder": text, "components": components}
