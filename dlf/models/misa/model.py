"""MISA (Hazarika et al. 2020) as MMSA 2.2.1 builds it, module for module.

B batch, T_l text steps (50), T_a / T_v stored audio / vision steps, W the text width (BERT's, 768),
d_a / d_v the audio / vision widths, H = hidden_size (128).

1. Text: BERT (fine-tuned) over ``text_bert`` (B, 3, T_l) -> last hidden state (B, T_l, W) [features
   mode: the stored ``text`` array]; its mean over the attention mask is the utterance (B, W), and the
   mask's sum is the text token count L_t.
2. Vision / audio: two bidirectional LSTMs (d -> d, then 2d -> d) over the first L_t frames (the quirk:
   the TEXT length packs them), LayerNorm(2d) between; utterance [h1_f, h2_f, h1_b, h2_b] (B, 4d).
3. project_m = LayerNorm(ReLU(Linear(. -> H))): utt_m_orig (B, H).
4. utt_private_m = sigmoid(private_m(orig)), one per modality; utt_shared_m = sigmoid(shared(orig)),
   ONE layer for all three.
5. utt_m = private + shared; utt_m_recon = recon_m(utt_m).
6. shared_or_private_*: sp_discriminator on each private code and on the mean of the shared ones
   (B, 4); read by no loss.
7. Fusion: [p_t, p_v, p_a, s_t, s_v, s_a] as six tokens through a 1-layer transformer encoder, flattened
   (B, 6H); fusion_layer_1 (-> 3H), dropout, ReLU, fusion_layer_3 (-> 1) = M (B, 1).

The outputs are M and every tensor MMSA keeps as a module attribute for its losses (utt_t_orig, ...).
Names are MMSA's (the ``Model.`` prefix stripped) except BERT: MMSA's ``bertmodel.model`` is
``text_encoder.bert`` here, like every BERT of this toolkit, so checkpoints carry its config and the
trainer sees a fine-tuned BERT (whose own dropout draws from torch's global generator: one lane).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from dlf.errors import DLFError
from dlf.models._kernels import dropout
from dlf.models.text import FineTunedBert, check_token_ids
from dlf.models.misa.encoders import FusionEncoder, utterance

__all__ = ["MISA", "build_model", "parameter_summary", "OUTPUTS"]

# MMSA's attribute names of the tensors its trainer reads, in the order MISA computes them
OUTPUTS = tuple(f"utt_{m}_orig" for m in "tva") + tuple(f"utt_private_{m}" for m in "tva") + tuple(
    f"utt_shared_{m}" for m in "tva") + tuple(f"utt_{m}" for m in "tva") + tuple(f"utt_{m}_recon" for m in "tva") + (
    "shared_or_private_p_t", "shared_or_private_p_v", "shared_or_private_p_a", "shared_or_private_s")


def _named(*layers: tuple[str, nn.Module]) -> nn.Sequential:
    """An nn.Sequential whose children carry MMSA's add_module names (the state_dict keys)."""
    return nn.Sequential(OrderedDict(layers))


class FusionHead(nn.Module):
    """fusion_layer_3(relu(drop(fusion_layer_1(h)))): (B, 6H) -> (B, 1) (MMSA's ``fusion`` Sequential)."""

    def __init__(self, hidden: int, p: float):
        super().__init__()
        self.fusion_layer_1 = nn.Linear(6 * hidden, 3 * hidden)
        self.fusion_layer_3 = nn.Linear(3 * hidden, 1)
        self.p = p

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.fusion_layer_3(F.relu(dropout(self.fusion_layer_1(h), self.p, self.training)))


class MISA(nn.Module):
    family = "misa"

    def __init__(self, cfg, dims: Mapping[str, int], seq_lens: Mapping[str, int], bert_config: Mapping | None = None):
        super().__init__()
        m, H = cfg.model, cfg.model.hidden_size
        d_a, d_v = int(dims["a"]), int(dims["v"])
        self.text_encoder = FineTunedBert(m.pretrained, bert_config) if m.text_encoder == "bert" else None
        width = self.text_encoder.width if self.text_encoder is not None else int(dims["l"])
        if self.text_encoder is not None:
            _check_positions(self.text_encoder, int(seq_lens["l"]), m.pretrained)
        self.av_length_from_text = m.av_length_from_text
        self.vrnn1 = nn.LSTM(d_v, d_v, bidirectional=True)
        self.vrnn2 = nn.LSTM(2 * d_v, d_v, bidirectional=True)
        self.arnn1 = nn.LSTM(d_a, d_a, bidirectional=True)
        self.arnn2 = nn.LSTM(2 * d_a, d_a, bidirectional=True)
        for t, n_in in (("t", width), ("v", 4 * d_v), ("a", 4 * d_a)):
            setattr(self, f"project_{t}", _named((f"project_{t}", nn.Linear(n_in, H)), (f"project_{t}_activation", nn.ReLU()),
                                                 (f"project_{t}_layer_norm", nn.LayerNorm(H))))
        for t, k in (("t", 1), ("v", 1), ("a", 3)):  # MMSA numbers the audio layer 3
            setattr(self, f"private_{t}", _named((f"private_{t}_{k}", nn.Linear(H, H)), (f"private_{t}_activation_{k}", nn.Sigmoid())))
        self.shared = _named(("shared_1", nn.Linear(H, H)), ("shared_activation_1", nn.Sigmoid()))
        for t in "tva":
            setattr(self, f"recon_{t}", _named((f"recon_{t}_1", nn.Linear(H, H))))
        self.sp_discriminator = _named(("sp_discriminator_layer_1", nn.Linear(H, 4))) if m.unused_modules else None
        self.fusion = FusionHead(H, m.dropout)
        self.tlayer_norm = nn.LayerNorm(2 * width) if m.unused_modules else None  # built, never called (MMSA)
        self.vlayer_norm = nn.LayerNorm(2 * d_v)
        self.alayer_norm = nn.LayerNorm(2 * d_a)
        self.transformer_encoder = FusionEncoder(H, m.fusion_heads, m.fusion_ff, m.fusion_dropout)

    def forward(self, text: torch.Tensor, audio: torch.Tensor, vision: torch.Tensor, with_losses: bool = True,
                text_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """text: ``text_bert`` (B, 3, T_l) [features: ``text`` (B, T_l, W)], audio (B, T_a, d_a), vision
        (B, T_v, d_v) -> M (B, 1) and MMSA's loss-side tensors (all cheap: ``with_losses`` changes nothing).
        ``text_mask`` (B, T_l), features mode only: the text tokens, instead of the rows of ``text`` that
        are not all zero (the trainer passes none)."""
        utt_text, text_len = self.text_utterance(text, text_mask)  # (B, W), (B,)
        out: dict[str, torch.Tensor] = {}
        utt = {"t": utt_text,
               "v": utterance(vision, self.lengths(vision, text_len), self.vrnn1, self.vlayer_norm, self.vrnn2),
               "a": utterance(audio, self.lengths(audio, text_len), self.arnn1, self.alayer_norm, self.arnn2)}
        for t in "tva":
            orig = out[f"utt_{t}_orig"] = getattr(self, f"project_{t}")(utt[t])  # (B, H)
            out[f"utt_private_{t}"] = getattr(self, f"private_{t}")(orig)
            out[f"utt_shared_{t}"] = self.shared(orig)
        for t in "tva":
            both = out[f"utt_{t}"] = out[f"utt_private_{t}"] + out[f"utt_shared_{t}"]
            out[f"utt_{t}_recon"] = getattr(self, f"recon_{t}")(both)
        if self.sp_discriminator is not None:
            for t in "tva":
                out[f"shared_or_private_p_{t}"] = self.sp_discriminator(out[f"utt_private_{t}"])
            mean_shared = (out["utt_shared_t"] + out["utt_shared_v"] + out["utt_shared_a"]) / 3.0
            out["shared_or_private_s"] = self.sp_discriminator(mean_shared)
        codes = [out[f"utt_private_{t}"] for t in "tva"] + [out[f"utt_shared_{t}"] for t in "tva"]
        h = self.transformer_encoder(torch.stack(codes, dim=1))  # (B, 6, H)
        return {"M": self.fusion(h.reshape(h.shape[0], -1)), **out}  # M (B, 1)

    def text_utterance(self, text: torch.Tensor, text_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(the masked mean of the text's hidden states (B, W), the token count L_t (B,))."""
        if self.text_encoder is not None:
            ids, mask, types = text[:, 0].long(), text[:, 1].float(), text[:, 2].long()  # (B, T_l) each
            check_token_ids(ids, self.text_encoder.bert.config.vocab_size)
            hidden = self.text_encoder.bert(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        else:
            hidden = text  # (B, T_l, W)
            mask = (text_mask if text_mask is not None else text.ne(0).any(dim=-1)).to(text.dtype)
        count = mask.sum(dim=1, keepdim=True)  # (B, 1)
        # an empty text (no token at all) gives 0, not MMSA's 0 / 0
        return (hidden * mask.unsqueeze(2)).sum(dim=1) / count.clamp(min=1), count.reshape(-1)

    def lengths(self, x: torch.Tensor, text_len: torch.Tensor) -> torch.Tensor:
        """Frames the LSTMs read per sample, (B,) int64 on the CPU (packing wants them there): the text
        token count (MMSA), or the stream's own length up to its last frame that is not all zeros; at
        least 1 and at most the stored T (where MMSA's packing would fail)."""
        if self.av_length_from_text:
            n = text_len.long()
        else:
            steps = torch.arange(1, x.shape[1] + 1, device=x.device)
            n = (x.ne(0).any(dim=-1) * steps).amax(dim=1)
        return n.clamp(1, x.shape[1]).cpu()


def _check_positions(encoder: FineTunedBert, steps: int, pretrained: str) -> None:
    limit = int(encoder.bert.config.max_position_embeddings)
    if steps > limit:
        raise DLFError(f"the text has {steps} token steps, but BERT {pretrained!r} has {limit} positions; "
                       f"use a dataset with shorter text")


def build_model(cfg, dims: Mapping[str, int], seq_lens: Mapping[str, int], bert_config: Mapping | None = None) -> MISA:
    """A MISA for data of these widths; in the bert mode BERT comes from model.pretrained, or is built
    from ``bert_config`` (a checkpoint's, whose weights are loaded next)."""
    return MISA(cfg, dims, seq_lens, bert_config)


def parameter_summary(model: MISA) -> dict:
    """{"total" (what MMSA's count_parameters logs), "text_encoder" (BERT, pooler included; 0 in the
    features mode), "components": every other top-level module (MMSA's params_per_module)}."""
    def count(module: nn.Module | None) -> int:
        return sum(p.numel() for p in module.parameters()) if module is not None else 0

    components = {name: count(child) for name, child in model.named_children() if name != "text_encoder"}
    return {"total": count(model), "text_encoder": count(model.text_encoder), "components": components}
