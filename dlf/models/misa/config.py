"""MISA's config sections (MMSA 2.2.1 ``misa``, Hazarika et al. 2020, Modality-Invariant and -Specific
representations): what ``model.*`` and ``loss.*`` mean for the ``misa`` family, and its presets per
corpus (MMSA's ``config_regression.json`` and its trainer's recipe, ../shared/reference/baselines/README.md
sections 4 and 5). Torch-free: planning a study reads these.

Defaults are MMSA's MOSI values; ``PRESETS['mosei']`` holds the MOSEI differences.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from dlf.domains import count, non_negative
from dlf.domains import dropout as probability  # the model section has a field named dropout
from dlf.errors import DLFError
from dlf.models.mmsa_config import mmsa_recipe


@dataclass(frozen=True)
class ModelConfig:
    family: str = "misa"
    modalities: tuple[str, ...] = ("l", "a", "v")  # private and shared codes of all three; no subsets
    # "bert" (MMSA): BERT, fine-tuned inside the model, reads ``text_bert``; the utterance vector is the
    # mean of its last hidden state over the attention mask. "features": the stored 768-d ``text`` array
    # stands in for that hidden state (no BERT; its masked mean over the text length, where the mask is
    # the rows of ``text`` that are not all zero: the trainer gives the model no ``text_bert`` here).
    text_encoder: Literal["bert", "features"] = "bert"
    pretrained: str = "bert-base-uncased"  # BERT of the bert mode: a hub name or a save_pretrained folder
    hidden_size: int = count(128)  # width of the projections, the private/shared codes and the fusion
    dropout: float = probability(0.2)  # in the head, after fusion_layer_1 (MMSA dropout)
    fusion_heads: int = count(2)  # heads of the 1-layer transformer over the six codes (MMSA: nhead=2)
    fusion_ff: int = count(2048)  # its feed-forward width (torch's TransformerEncoderLayer default)
    fusion_dropout: float = probability(0.1)  # its attention/residual/feed-forward dropout (torch's default)
    cmd_moments: int = count(5)  # central moments the CMD similarity matches (MMSA: 5)
    # Quirks of the reference, kept by default:
    av_length_from_text: bool = True  # the audio and vision LSTMs are packed with the TEXT token count, so
    #   they read only the first L_t frames (zeros past a shorter stream's end); False = each stream's own
    #   length (up to its last frame that is not all zeros: the model is given no lengths)
    unused_modules: bool = True  # MMSA builds sp_discriminator (Linear(hidden, 4), its outputs read by no
    #   loss) and tlayer_norm (LayerNorm(2 x text width), never called): 3,588 parameters at MOSI sizes,
    #   counted and optimised (they get no gradient); False leaves both out


@dataclass(frozen=True)
class LossConfig:
    # MMSA: MSE(M, y) + diff_weight * diff + sim_weight * CMD + recon_weight * recon; a zero weight leaves
    # its term out (not computed, not logged).
    task: float = non_negative(1.0)  # the MSE of M against the label (task_mse)
    diff: float = non_negative(0.1)  # soft orthogonality of private vs shared and across privates (diff)
    sim: float = non_negative(0.3)  # CMD between the shared codes of each modality pair (similarity_cmd)
    recon: float = non_negative(1.0)  # reconstruction of each projected vector from private + shared (recon)


# MMSA's recipe (README section 5): Adam on every parameter, BERT included, at 1e-4 without weight decay
# (MOSEI's config has 5e-5, which MISA's trainer never passes to Adam); 2 micro-batches summed per step,
# clip_grad_value 0.8 after every backward; selection and early stop on the valid MSE; the unaligned file.
_RECIPE: dict[str, Any] = {"train.accumulation": 2, "train.clip_value": 0.8, "train.val_loss": "mse"}

PRESETS: dict[str, dict[str, Any]] = {
    "mosi": {**mmsa_recipe(batch_size=16, lr=1e-4, weight_decay=0.0, aligned=False), **_RECIPE},
    "mosei": {**mmsa_recipe(batch_size=64, lr=1e-4, weight_decay=0.0, aligned=False), **_RECIPE,
              "model.dropout": 0.5, "loss.diff": 0.3, "loss.sim": 0.8},
}


def check(cfg: Any, source: str) -> None:
    """Cross-field checks of a MISA run config (each field's range is its domain)."""
    m, loss = cfg.model, cfg.loss
    if tuple(m.modalities) != ("l", "a", "v"):
        raise DLFError(f"{source}: model.modalities={list(m.modalities)}: MISA encodes and fuses all three "
                       f"modalities; set model.modalities=[l,a,v]")
    if m.hidden_size % m.fusion_heads:
        raise DLFError(f"{source}: model.hidden_size ({m.hidden_size}) must be divisible by model.fusion_heads "
                       f"({m.fusion_heads})")
    if m.text_encoder == "bert" and not str(m.pretrained).strip():
        raise DLFError(f"{source}: model.pretrained is empty; give a BERT hub name or a local folder")
    if loss.task == loss.diff == loss.sim == loss.recon == 0:
        raise DLFError(f"{source}: loss.task, loss.diff, loss.sim and loss.recon are all 0: nothing to train on; "
                       f"give at least one a positive weight")
