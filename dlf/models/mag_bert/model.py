"""MAG-BERT, BERT with a Multimodal Adaptation Gate (Rahman et al. 2020), as MMSA 2.2.1 builds it.

B batch, T token steps (50), H the BERT width (768), d_a / d_v the audio / vision widths.

1. Inputs: ``text_bert`` (B, 3, T) rows input_ids, attention_mask, token_type_ids; audio (B, T, d_a) and
   vision (B, T, d_v) at word level (a stream of another length is avg-pooled to T as MMSA's AMIO does).
2. e = BERT embeddings (word + position + type, LayerNorm, dropout)                          (B, T, H)
3. MAG at every position, padding included:
     g_v = relu(W_hv [v; e]),  g_a = relu(W_ha [a; e])                                        (B, T, H)
     h = g_v * W_v v + g_a * W_a a
     alpha = min(|e| / (|h| + 1e-6) * beta, 1) per token (a zero |h| counts as 1)
     x = dropout(LayerNorm(alpha h + e))
4. BERT encoder on x with the additive extended attention mask; pooler tanh(Linear(h_[CLS])).  (B, H)
5. dropout (BERT's hidden_dropout_prob), classifier Linear(H, 1) = M                             (B, 1)

BERT is transformers' own BertModel (embeddings, encoder, pooler) loaded with from_pretrained and called
part by part with the gate in between. It sits under ``text_encoder.bert`` (MMSA: ``model.bert``) like
DLF's BERT, so checkpoints carry its config and the trainer sees a fine-tuned BERT (its dropout draws
from torch's global generator: one lane); the gate is ``MAG`` and the head ``classifier`` as in MMSA.
"""
from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from dlf.errors import DLFError
from dlf.models._kernels import dropout
from dlf.models.mfn.memory import avg_pool_align
from dlf.models.text import FineTunedBert

__all__ = ["MAG", "MAG_BERT", "build_model", "parameter_summary"]


class MAG(nn.Module):
    """The Multimodal Adaptation Gate: shifts each token embedding by a gated audio-visual vector."""

    def __init__(self, width: int, d_a: int, d_v: int, beta_shift: float, p: float, eps: float):
        super().__init__()
        self.W_hv = nn.Linear(d_v + width, width)  # vision gate, on [v; e] (MMSA's order)
        self.W_ha = nn.Linear(d_a + width, width)  # audio gate, on [a; e]
        self.W_v = nn.Linear(d_v, width)
        self.W_a = nn.Linear(d_a, width)
        self.LayerNorm = nn.LayerNorm(width, eps=eps)
        self.beta_shift, self.p = beta_shift, p

    def forward(self, e: torch.Tensor, vision: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        g_v = F.relu(self.W_hv(torch.cat([vision, e], dim=-1)))  # (B, T, H)
        g_a = F.relu(self.W_ha(torch.cat([audio, e], dim=-1)))
        h = g_v * self.W_v(vision) + g_a * self.W_a(audio)  # (B, T, H)
        e_norm, h_norm = e.norm(2, dim=-1), h.norm(2, dim=-1)  # (B, T)
        h_norm = torch.where(h_norm == 0, torch.ones_like(h_norm), h_norm)
        threshold = e_norm / (h_norm + 1e-6) * self.beta_shift
        alpha = torch.minimum(threshold, torch.ones_like(threshold)).unsqueeze(-1)  # (B, T, 1)
        return dropout(self.LayerNorm(alpha * h + e), self.p, self.training)


class MAG_BERT(nn.Module):
    family = "mag_bert"

    def __init__(self, cfg, dims: Mapping[str, int], seq_lens: Mapping[str, int], bert_config: Mapping | None = None):
        super().__init__()
        m = cfg.model
        self.text_encoder = FineTunedBert(m.pretrained, bert_config)
        config = self.text_encoder.bert.config
        if int(seq_lens["l"]) > config.max_position_embeddings:
            raise DLFError(f"the text has {seq_lens['l']} token steps, but BERT {m.pretrained!r} has "
                           f"{config.max_position_embeddings} positions; use a dataset with shorter text")
        width = self.text_encoder.width
        self.MAG = MAG(width, int(dims["a"]), int(dims["v"]), m.beta_shift, m.dropout_prob, m.mag_layer_norm_eps)
        self.classifier = nn.Linear(width, 1)
        self.p_pooled = float(config.hidden_dropout_prob)
        self.init_std = float(config.initializer_range)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """BERT's init for the modules MMSA adds to it (BERT itself keeps its pretrained weights)."""
        _bert_init([self.MAG, self.classifier], self.init_std)

    def forward(self, text, audio, vision, with_losses: bool = True) -> dict[str, torch.Tensor]:
        ids, mask, types = text[:, 0].long(), text[:, 1].float(), text[:, 2].long()  # (B, T) each
        self._check_vocabulary(ids)
        steps = ids.shape[1]
        audio, vision = avg_pool_align(audio, steps), avg_pool_align(vision, steps)  # MMSA AMIO: no-op if aligned
        bert = self.text_encoder.bert
        e = bert.embeddings(input_ids=ids, token_type_ids=types)  # (B, T, H)
        x = self.MAG(e, vision, audio)  # (B, T, H)
        # BERT's additive extended mask, as MMSA builds it: 0 for tokens, the dtype's minimum for padding
        additive = (1.0 - mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min  # (B, 1, 1, T)
        hidden = bert.encoder(x, attention_mask=additive).last_hidden_state  # (B, T, H)
        pooled = bert.pooler(hidden)  # tanh(Linear(h_[CLS])), (B, H)
        return {"M": self.classifier(dropout(pooled, self.p_pooled, self.training))}  # (B, 1)

    def _check_vocabulary(self, ids: torch.Tensor) -> None:
        """Token ids past BERT's vocabulary would fail deep inside the embedding (a device assert on
        CUDA): refused here in one line. The data's ids must come from model.pretrained's tokenizer."""
        vocab = self.text_encoder.bert.config.vocab_size
        top = int(ids.max()) if ids.numel() else 0
        if top >= vocab:
            raise DLFError(f"text_bert holds token id {top}, but the BERT of model.pretrained has a vocabulary of "
                           f"{vocab}; tokenize the text with that BERT's tokenizer or load the BERT the ids are for")


def _bert_init(modules: list[nn.Module], std: float) -> None:
    """transformers' BERT initialisation, which MMSA's from_pretrained gives the new modules: weights
    normal(0, initializer_range), zero biases, LayerNorm 1 and 0."""
    for module in modules:
        for sub in module.modules():
            if isinstance(sub, nn.Linear):
                nn.init.normal_(sub.weight, mean=0.0, std=std)
                nn.init.zeros_(sub.bias)
            elif isinstance(sub, nn.LayerNorm):
                nn.init.ones_(sub.weight)
                nn.init.zeros_(sub.bias)


def build_model(cfg, dims: Mapping[str, int], seq_lens: Mapping[str, int], bert_config: Mapping | None = None) -> MAG_BERT:
    """A MAG-BERT for data of these audio / vision widths; BERT from model.pretrained, or built from
    ``bert_config`` (a checkpoint's, whose weights are loaded next)."""
    return MAG_BERT(cfg, dims, seq_lens, bert_config)


def parameter_summary(model: MAG_BERT) -> dict:
    """{"total", "text_encoder" (BERT, pooler included), "components": MAG and classifier}: total is
    what MMSA's count_parameters logs, total - text_encoder the part outside BERT."""
    def count(module: nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    components = {name: count(child) for name, child in model.named_children() if name != "text_encoder"}
    return {"total": count(model), "text_encoder": count(model.text_encoder), "components": components}
