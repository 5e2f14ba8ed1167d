"""The DMD parity fixture (``<repo>/../shared/reference/dmd-parity``, made by running the authors' code
mdswyz/DMD on the official parity pickle with BERT replaced by identity; see its README), and small DMD
models for the dmd family's tests (tests/test_dmd*.py). Tests skip cleanly without the fixture."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from dlf.config import apply_overrides, preset
from dlf.models.registry import build_model

ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "reference"
DMD = ROOT / "dmd-parity"
DATA = ROOT / "official-parity" / "data.pkl"
TINY_BERT = ROOT / "baselines" / "tiny-bert"  # a random 2-layer BERT: width 768, vocabulary 512
needs_fixture = pytest.mark.skipif(not (DMD / "state_dict.pt").is_file() or not DATA.is_file(),
                                   reason=f"DMD parity fixture not found at {DMD}")
needs_tiny_bert = pytest.mark.skipif(not (TINY_BERT / "model.safetensors").is_file(),
                                     reason=f"tiny BERT not found at {TINY_BERT}")
UNITS = ("gd_homo", "gd_hetero")
MOSI, LENS = {"l": 768, "a": 5, "v": 20}, {"l": 50, "a": 50, "v": 50}
# small sizes for behaviour tests: width 10 (2 heads), 2 layers, short sequences
SMALL = {"model.d_model": 10, "model.n_heads": 2, "model.n_levels": 2, "model.mem_levels": 2,
         "model.gd_homo_size": 8, "model.gd_hetero_size": 4}
SMALL_DIMS, SMALL_LENS = {"l": 12, "a": 5, "v": 7}, {"l": 9, "a": 9, "v": 9}


def state(name: str = "state_dict") -> dict[str, torch.Tensor]:
    """``state_dict``, ``gd_homo_state_dict`` or ``gd_hetero_state_dict`` of the fixture."""
    return torch.load(DMD / f"{name}.pt", map_location="cpu", weights_only=True)


def unit_states() -> dict[str, dict[str, torch.Tensor]]:
    return {u: state(f"{u}_state_dict") for u in UNITS}


def outputs() -> dict:
    return torch.load(DMD / "outputs.pt", map_location="cpu", weights_only=True)


def loss_json() -> dict:
    return json.loads((DMD / "loss_terms.json").read_text())


def meta() -> dict:
    return json.loads((DMD / "meta.json").read_text())


def split_inputs(split: str, n: int | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
    """(text, audio, vision) features and regression labels of a split's first ``n`` samples."""
    with open(DATA, "rb") as fh:
        raw = pickle.load(fh)[split]
    x = [torch.as_tensor(np.asarray(raw[k][:n]), dtype=torch.float32) for k in ("text", "audio", "vision")]
    return x, torch.as_tensor(np.asarray(raw["regression_labels"][:n]), dtype=torch.float32).reshape(-1)


def ours(name: str, value: np.ndarray) -> np.ndarray:
    """An official output in our layout: s_m and c_m are (T', B, d) there, batch-first here."""
    return value.transpose(1, 0, 2) if name[:2] in ("s_", "c_") and name.count("_") == 1 else value


def small_model(seed: int = 0, **overrides):
    """A small features-mode DMD and its config, seeded."""
    cfg = apply_overrides(preset("mosi", "dmd"), {"model.text_encoder": "features", **SMALL, **overrides})
    torch.manual_seed(seed)
    return build_model(cfg, SMALL_DIMS, SMALL_LENS), cfg


def small_batch(n: int = 6, seed: int = 0):
    """(text, audio, vision, labels) for :func:`small_model`, zero padding after random lengths, labels
    on MOSI's 0.2 grid (some equal, so the margin loss has positives)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(4, 10, (n,), generator=g)
    keep = (torch.arange(9) < lengths[:, None]).float()[..., None]  # (n, 9, 1): zeros after each length
    x = [torch.randn(n, 9, SMALL_DIMS[m], generator=g) * keep for m in ("l", "a", "v")]
    return (*x, torch.tensor([0.4, -1.2, 0.4, 2.0, -1.2, 0.0][:n]))
