"""A model family from outside the package, registered through ``$DLF_FAMILIES`` (the seam's test).

A linear model over each modality's time-mean: the smallest thing that trains, so the tests can show
that a family added in one module runs through every CLI command DLF runs through.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from dlf.models.registry import FamilySpec, ModelFamily, register


@dataclass(frozen=True)
class TinyModel:
    family: str = "tiny"
    modalities: tuple[str, ...] = ("l", "a", "v")
    text_encoder: Literal["features"] = "features"
    hidden: int = 4


@dataclass(frozen=True)
class TinyLoss:
    l1_weight: float = 1.0
    mse_weight: float = 0.0  # a second term, computed only when switched on


class Tiny(nn.Module):
    family = "tiny"

    def __init__(self, cfg, dims, seq_lens, bert_config=None):
        super().__init__()
        self.mods = cfg.model.modalities
        self.hidden = nn.Linear(sum(int(dims[m]) for m in self.mods), cfg.model.hidden)
        self.out = nn.Linear(cfg.model.hidden, 1)

    def forward(self, text, audio, vision, with_losses=True):
        x = {"l": text, "a": audio, "v": vision}
        pooled = torch.cat([x[m].mean(dim=1) for m in self.mods], dim=-1)  # (B, sum D_m)
        return {"pred": self.out(torch.tanh(self.hidden(pooled))).squeeze(-1)}  # (B,)


def loss_terms(out, labels, cfg):
    terms = {"l1": (out["pred"] - labels).abs().mean()}
    total = cfg.loss.l1_weight * terms["l1"]
    if cfg.loss.mse_weight > 0:
        terms["mse"] = (out["pred"] - labels).pow(2).mean()
        total = total + cfg.loss.mse_weight * terms["mse"]
    return {"total": total, **terms}


def summary(model):
    total = sum(p.numel() for p in model.parameters())
    return {"total": total, "text_encoder": 0,
            "components": {n: sum(p.numel() for p in c.parameters()) for n, c in model.named_children()}}


FAMILY = ModelFamily(build=Tiny, loss_terms=loss_terms, prediction=lambda out: out["pred"], summary=summary)
register(FamilySpec(name="tiny", model=TinyModel, loss=TinyLoss, implementation=f"{__name__}:FAMILY",
                    presets={"mosi": {"train.lr": 0.01}}, label="Tiny"))
