"""Random BERTs saved like pretrained folders, for the tests of the BERT text modes (no hub here)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch


def save_bert(path: Path, width: int, vocab: int = 512, positions: int = 64) -> Path:
    """A random 2-layer BERT of ``width`` (4 heads, feed-forward 2 x width), seeded, saved with
    ``save_pretrained`` so that the real ``from_pretrained(path)`` loads it."""
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(vocab_size=vocab, hidden_size=width, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=2 * width, max_position_embeddings=positions)
    torch.manual_seed(0)
    transformers.BertModel(cfg).save_pretrained(path)
    return path
