"""Small MISA models and batches for the misa family's tests (tests/test_misa*.py)."""
from __future__ import annotations

from pathlib import Path

import torch

from dlf.config import apply_overrides, preset
from dlf.models.registry import build_model

MOSI, LENS = {"l": 768, "a": 5, "v": 20}, {"l": 50, "a": 375, "v": 500}  # unaligned MOSI widths and lengths
SMALL = {"model.hidden_size": 16, "model.fusion_ff": 32}  # a quick MISA for behaviour tests


def features_model(**overrides):
    """A small MISA in the features mode (no BERT) and its config, seeded."""
    cfg = apply_overrides(preset("mosi", "misa"), {"model.text_encoder": "features", **SMALL, **overrides})
    torch.manual_seed(0)
    return build_model(cfg, MOSI, LENS), cfg


def bert_model(bert: Path, **overrides):
    """A small MISA around the BERT in folder ``bert`` (whose width, not dims' l, is the text width)."""
    cfg = apply_overrides(preset("mosi", "misa"), {"model.pretrained": str(bert), **SMALL, **overrides})
    torch.manual_seed(0)
    return build_model(cfg, MOSI, LENS), cfg


def batch(n=5, seed=0, bert=False):
    """(text, audio, vision, labels): unaligned-MOSI-shaped, text lengths 6..20, zeros past them."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(6, 21, (n,), generator=g)
    mask = (torch.arange(50) < lengths[:, None]).long()  # (B, 50)
    if bert:
        ids = torch.where(mask.bool(), torch.randint(103, 512, (n, 50), generator=g), 0)
        text = torch.stack([ids, mask, torch.zeros_like(ids)], dim=1)  # (B, 3, 50)
    else:
        text = torch.randn(n, 50, 768, generator=g) * mask[..., None]
    audio, vision = torch.randn(n, 375, 5, generator=g), torch.randn(n, 500, 20, generator=g)
    return text, audio, vision, torch.rand(n, generator=g) * 6 - 3
